"""Structured baselines on the layer-wise engine: Wanda-sp, FLAP and ShortGPT
(LLM-Pruner and SoBP, which need gradients, live in their own modules).

Units: whole KV groups of attention (a KV head with its query heads; one head when
there is no GQA) and MLP intermediate channels; ShortGPT removes whole blocks. The
ratio is the fraction of decoder-block linear weights removed; the selected units are
removed physically (:mod:`llmprune.surgery`), so the model really gets smaller and is
exported with its per-block widths.

- **Wanda-sp** (the structured Wanda variant used as a baseline by An et al., FLAP,
  AAAI 2024): a unit's score is the Wanda metric ``Σ_i |W_ij|·‖X_j‖₂`` of the output
  projection columns it owns (``o_proj`` columns of its heads, the ``down_proj`` column of
  a channel). Uniform allocation: every block loses ``round(ratio · KV groups)`` groups
  (never all) and then as many channels as bring that block to ``ratio`` of its weights.
- **FLAP** (An et al., AAAI 2024, Eqs. 3-6): fluctuation ``Var_tokens(X_j)·‖W_:,j‖²`` of
  the same columns (head score = mean over its columns), standardised per unit kind
  across all blocks, then removed globally from the lowest until the parameter budget
  is met (adaptive per-layer widths); the removed columns' mean contribution
  ``W_:,J · E[X_J]`` is added to the output projection's bias (bias compensation; a
  bias is created where the family has none).
- **ShortGPT** (Men et al., 2024): block influence ``BI_i = 1 − E_tokens cos(x_in, x_out)``
  of each block on the calibration data; blocks with the lowest BI are removed until
  the budget is met.

Statistics are gathered in one layer-wise pass over the *dense* model (as FLAP's
code does), then the whole selection is applied. Every block keeps at least one KV
group and one channel (``--allow-empty`` lifts this for FLAP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..engine.stats import InputStats
from ..errors import LlmpruneError
from ..models.base import AttentionSpec, MLPSpec, ModelAdapter
from ..surgery import structural


@dataclass
class Unit:
    block: int
    kind: str  # "group" | "channel" | "block"
    index: int
    cost: int
    score: float


@dataclass
class BlockInfo:
    groups: int
    channels: int
    group_cost: int
    channel_cost: int
    o_mean: torch.Tensor | None = None
    down_mean: torch.Tensor | None = None


def _costs(att: AttentionSpec | None, mlp: MLPSpec) -> tuple[int, int, int, int]:
    groups = att.num_kv_heads if att is not None else 0
    gcost = sum(l.weight.numel() for l in (att.q, att.k, att.v, att.o)) // groups if groups else 0
    lins = ([mlp.gate] if mlp.gate is not None else []) + [mlp.up, mlp.down]
    ccost = sum(l.weight.numel() for l in lins) // mlp.channels if mlp.channels else 0
    return groups, mlp.channels, gcost, ccost


def _group_columns(att: AttentionSpec, score_cols: torch.Tensor, reduce: str) -> torch.Tensor:
    per_group = score_cols.reshape(att.num_kv_heads, att.group_size * att.head_dim)
    return per_group.sum(1) if reduce == "sum" else per_group.mean(1)


class StructuredMethod:
    """Score units per block on the engine, select them, remove them physically."""

    name: ClassVar[str]
    allocation: ClassVar[str] = "global"  # "uniform" | "global"
    compensate: ClassVar[bool] = False

    def __init__(self, ratio: float, allow_empty: bool = False) -> None:
        if not 0.0 <= ratio <= 0.9:
            raise LlmpruneError(f"structured ratio {ratio} outside [0, 0.9]: pass e.g. --ratio 0.2")
        self.ratio = ratio
        self.allow_empty = allow_empty

    # -- scoring -----------------------------------------------------------------
    def column_scores(self, lin: nn.Linear, stats: InputStats) -> torch.Tensor:
        raise NotImplementedError

    head_reduce: ClassVar[str] = "sum"

    def score_block(self, i: int, att: AttentionSpec | None, mlp: MLPSpec,
                    stats: dict[int, InputStats]) -> list[Unit]:
        groups, channels, gcost, ccost = _costs(att, mlp)
        units = []
        if att is not None:
            cols = self.column_scores(att.o, stats[id(att.o)])
            for g, s in enumerate(_group_columns(att, cols, self.head_reduce).tolist()):
                units.append(Unit(i, "group", g, gcost, s))
        cols = self.column_scores(mlp.down, stats[id(mlp.down)])
        units += [Unit(i, "channel", c, ccost, s) for c, s in enumerate(cols.tolist())]
        return units

    # -- selection -----------------------------------------------------------------
    def select(self, units: list[Unit], info: list[BlockInfo], target: float) -> list[Unit]:
        return (select_uniform if self.allocation == "uniform" else select_global)(
            units, info, self.ratio, target, self.allow_empty)

    def options(self) -> dict:
        return {"allocation": self.allocation, "bias_compensation": self.compensate,
                "allow_empty": self.allow_empty}


class WandaSP(StructuredMethod):
    name = "wanda-sp"
    allocation = "uniform"

    def column_scores(self, lin: nn.Linear, stats: InputStats) -> torch.Tensor:
        return (lin.weight.detach().float().abs() * stats.column_norms().to(lin.weight.device)).sum(0)


class FLAP(StructuredMethod):
    name = "flap"
    allocation = "global"
    compensate = True
    head_reduce = "mean"

    def column_scores(self, lin: nn.Linear, stats: InputStats) -> torch.Tensor:
        return stats.variance().to(lin.weight.device) * lin.weight.detach().float().pow(2).sum(0)

    def select(self, units: list[Unit], info: list[BlockInfo], target: float) -> list[Unit]:
        for kind in ("group", "channel"):  # standardise per unit kind across blocks (FLAP Eq. 5)
            ks = [u for u in units if u.kind == kind]
            if len(ks) > 1:
                vals = torch.tensor([u.score for u in ks], dtype=torch.float64)
                mu, sd = vals.mean(), vals.std().clamp_min(1e-12)
                for u, z in zip(ks, ((vals - mu) / sd).tolist()):
                    u.score = z
        return super().select(units, info, target)


class ShortGPT(StructuredMethod):
    name = "shortgpt"

    def score_block(self, i, att, mlp, stats) -> list[Unit]:  # scores come from block outputs
        return []


def select_uniform(units: list[Unit], info: list[BlockInfo], ratio: float, target: float,
                   allow_empty: bool) -> list[Unit]:
    """Same fraction in every block: ``round(ratio·G)`` groups, then channels to reach
    ``ratio`` of the block's weights."""
    chosen: list[Unit] = []
    for b, bi in enumerate(info):
        mine = [u for u in units if u.block == b]
        groups = sorted((u for u in mine if u.kind == "group"), key=lambda u: u.score)
        chans = sorted((u for u in mine if u.kind == "channel"), key=lambda u: u.score)
        k = min(round(ratio * bi.groups), bi.groups - (0 if allow_empty else 1))
        chosen += groups[:k]
        budget = ratio * (bi.groups * bi.group_cost + bi.channels * bi.channel_cost) - k * bi.group_cost
        c = round(budget / bi.channel_cost) if bi.channel_cost else 0
        chosen += chans[: max(0, min(c, bi.channels - (0 if allow_empty else 1)))]
    return chosen


def select_global(units: list[Unit], info: list[BlockInfo], ratio: float, target: float,
                  allow_empty: bool) -> list[Unit]:
    """Lowest scores first across all blocks until ``target`` weights are removed; a unit
    that would overshoot by more than half a channel is skipped; floors keep one group
    and one channel per block unless ``allow_empty``."""
    left = {(b, k): (bi.groups if k == "group" else bi.channels) for b, bi in enumerate(info) for k in ("group", "channel")}
    slack = min((bi.channel_cost for bi in info if bi.channel_cost), default=0) / 2
    removed, chosen = 0, []
    for u in sorted(units, key=lambda u: (u.score, u.block, u.index)):
        if removed >= target - slack:
            break
        if removed + u.cost > target + slack:
            continue
        if u.kind in ("group", "channel"):
            if not allow_empty and left[(u.block, u.kind)] <= 1:
                continue
            left[(u.block, u.kind)] -= 1
        chosen.append(u)
        removed += u.cost
    return chosen


def _compensate(lin: nn.Linear, cols: list[int], mean: torch.Tensor) -> None:
    """Add the removed input columns' mean contribution to ``lin``'s bias (FLAP)."""
    if not cols:
        return
    idx = torch.as_tensor(cols, dtype=torch.long, device=lin.weight.device)
    delta = lin.weight.detach().float().index_select(1, idx) @ mean.to(lin.weight.device).float().index_select(0, idx)
    if lin.bias is None:
        lin.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype, device=lin.weight.device),
                                requires_grad=False)
    with torch.no_grad():
        lin.bias.add_(delta.to(lin.bias.dtype))


def apply_selection(adapter: ModelAdapter, chosen: list[Unit], info: list[BlockInfo], compensate: bool) -> None:
    blocks = list(adapter.blocks())
    drop_blocks = sorted({u.block for u in chosen if u.kind == "block"})
    for b, block in enumerate(blocks):
        groups = {u.index for u in chosen if u.block == b and u.kind == "group"}
        chans = {u.index for u in chosen if u.block == b and u.kind == "channel"}
        att, mlp = adapter.attention(block), adapter.mlp(block)
        if compensate:
            if att is not None and groups:
                cols = [q * att.head_dim + d for g in sorted(groups) for q in range(g * att.group_size, (g + 1) * att.group_size)
                        for d in range(att.head_dim)]
                _compensate(att.o, cols, info[b].o_mean)
            if chans:
                _compensate(mlp.down, sorted(chans), info[b].down_mean)
        if att is not None and groups:
            keep = [g for g in range(att.num_kv_heads) if g not in groups]
            structural.prune_heads(adapter, block, keep, layer=b)
        if chans:
            structural.prune_channels(adapter, block, [c for c in range(mlp.channels) if c not in chans], layer=b)
    if drop_blocks:
        structural.drop_blocks(adapter, drop_blocks)


def prune_structured(model: nn.Module, adapter: ModelAdapter, method: StructuredMethod,
                     calib_ids: torch.Tensor, device: str = "cpu", progress: bool = True) -> dict:
    """Score on the layer-wise engine (dense model), select, remove; return a summary.
    Methods with their own pipeline (SoBP) provide ``run``."""
    if hasattr(method, "run"):
        return method.run(model, adapter, calib_ids, device=device, progress=progress)
    units: list[Unit] = []
    info: list[BlockInfo] = []
    influence: list[float] = []
    block_costs: list[int] = []

    def on_block(i: int, block: nn.Module, runner: BlockRunner) -> None:
        att, mlp = adapter.attention(block), adapter.mlp(block)
        groups, channels, gcost, ccost = _costs(att, mlp)
        block_costs.append(sum(l.weight.numel() for l in adapter.prunable_linears(block).values()))
        bi = BlockInfo(groups, channels, gcost, ccost)
        if not isinstance(method, ShortGPT):
            wanted = [g for g in adapter.linear_groups(block)
                      if any(l is mlp.down or (att is not None and l is att.o) for l in g.linears)]
            named = runner.collect(wanted, hessian=False)
            by_id = {}
            for g in wanted:
                for name, lin in zip(g.names, g.linears):
                    by_id[id(lin)] = named[name]
            units.extend(method.score_block(i, att, mlp, by_id))
            if att is not None:
                bi.o_mean = by_id[id(att.o)].mean.float()
            bi.down_mean = by_id[id(mlp.down)].mean.float()
        info.append(bi)

    def on_output(i: int, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        if isinstance(method, ShortGPT):
            cos = torch.nn.functional.cosine_similarity(inputs.float(), outputs.float(), dim=-1)
            influence.append(float(1 - cos.mean()))

    t0 = time.perf_counter()
    engine = LayerwiseEngine(model, adapter, device=device, progress=progress)
    stats = engine.run(calib_ids, on_block, desc=method.name, on_output=on_output)
    total = sum(block_costs)
    target = method.ratio * total
    if isinstance(method, ShortGPT):
        units = [Unit(b, "block", b, block_costs[b], s) for b, s in enumerate(influence)]
        if target >= total:
            raise LlmpruneError("shortgpt cannot remove every block: use a smaller --ratio")
    chosen = method.select(units, info, target)
    apply_selection(adapter, chosen, info, method.compensate)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": stats.peak_device_mb,
        "achieved_ratio": sum(u.cost for u in chosen) / total if total else 0.0,
        "removed": {"groups": sum(u.kind == "group" for u in chosen),
                    "channels": sum(u.kind == "channel" for u in chosen),
                    "blocks": sorted(u.block for u in chosen if u.kind == "block")},
        "block_influence": influence or None,
    }


def structured_methods() -> dict[str, type[StructuredMethod]]:
    """Structured methods by name (SoBP lives in its own module)."""
    from .llm_pruner import LLMPruner
    from .disp import DISP
    from .pg import PG
    from .sobp import SoBP

    return {cls.name: cls for cls in (WandaSP, FLAP, ShortGPT, LLMPruner, SoBP, DISP, PG)}
