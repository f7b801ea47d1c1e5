"""Score-then-select structured baselines on the layer-wise engine: Wanda-sp, FLAP and
ShortGPT.

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
code does), then the whole selection is applied. :meth:`ScoredMethod.score`,
:meth:`~ScoredMethod.influence` and :meth:`~ScoredMethod.choose` are that pass's per-block
step and the selection, shared with the two-pass streamed pipeline
(:mod:`llmprune.streamed_structured`), which removes the units block by block with
:func:`~llmprune.methods.units.apply_block`. Every block keeps at least one KV
group and one channel (``allow_empty`` lifts this).
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..engine.stats import InputStats
from ..errors import LlmpruneError
from ..models.base import AttentionSpec, MLPSpec, ModelAdapter
from .base import MethodConfig, PruneContext, PruneResult
from .registry import register
from .units import (
    BlockInfo,
    StructuredMethod,
    Unit,
    UnitsConfig,
    apply_selection,
    group_columns,
    module_units,
    removed_counts,
    select_global,
    select_uniform,
    unit_costs,
)


class ScoredConfig(UnitsConfig):
    pass


class FLAPConfig(ScoredConfig):
    bias_compensation: bool = Field(
        True, description="add removed columns' mean contribution to the output bias (FLAP); false for vLLM"
    )


class ScoredMethod(StructuredMethod):
    """Score units per block on the engine (dense model), select them, remove them."""

    Config: ClassVar[type[MethodConfig]] = ScoredConfig
    allocation: ClassVar[str] = "global"  # "uniform" | "global"
    compensate: ClassVar[bool] = False
    head_reduce: ClassVar[str] = "sum"
    #: scores whole blocks from their inputs and outputs (no unit statistics)
    scores_blocks: ClassVar[bool] = False

    def column_scores(self, lin: nn.Linear, stats: InputStats) -> torch.Tensor:
        raise NotImplementedError

    def score_block(self, i: int, att: AttentionSpec | None, mlp: MLPSpec, stats: dict[int, InputStats]) -> list[Unit]:
        info = BlockInfo(*unit_costs(att, mlp))
        families = self.units
        whole = torch.sum if self.head_reduce == "sum" else torch.mean  # a whole module's score
        units = []
        att_score = 0.0
        if att is not None:
            cols = self.column_scores(att.o, stats[id(att.o)])
            if "groups" in families:
                for g, s in enumerate(group_columns(att, cols, self.head_reduce).tolist()):
                    units.append(Unit(i, "group", g, info.group_cost, s))
            att_score = float(whole(cols))
        cols = self.column_scores(mlp.down, stats[id(mlp.down)])
        if "channels" in families:
            units += [Unit(i, "channel", c, info.channel_cost, s) for c, s in enumerate(cols.tolist())]
        return units + module_units(i, families, info, att_score, float(whole(cols)))

    def select(self, units: list[Unit], info: list[BlockInfo], target: float) -> list[Unit]:
        return (select_uniform if self.allocation == "uniform" else select_global)(
            units, info, self.ratio, target, self.allow_empty
        )

    @property
    def compensate_bias(self) -> bool:
        return self.compensate and bool(getattr(self.config, "bias_compensation", True))

    def options(self) -> dict:
        return {
            "allocation": self.allocation,
            "bias_compensation": self.compensate_bias,
            "allow_empty": self.allow_empty,
            "units": list(self.units),
        }

    def score(
        self, i: int, block: nn.Module, adapter: ModelAdapter, runner: BlockRunner
    ) -> tuple[list[Unit], BlockInfo, int]:
        """Block ``i``'s candidate units with their scores, its :class:`BlockInfo` (with the
        ``o_proj``/``down_proj`` input means FLAP's compensation uses) and its linear weights,
        from one pass of the calibration inputs through the *dense* block. Block-scoring
        methods (ShortGPT) return no units here: see :meth:`influence`."""
        att, mlp = adapter.attention(block), adapter.mlp(block)
        cost = sum(lin.weight.numel() for lin in adapter.prunable_linears(block).values())
        bi = BlockInfo(*unit_costs(att, mlp))
        units: list[Unit] = []
        if not self.scores_blocks:
            wanted = [
                g
                for g in adapter.linear_groups(block)
                if any(lin is mlp.down or (att is not None and lin is att.o) for lin in g.linears)
            ]
            named = runner.collect(wanted, hessian=False)
            by_id = {id(lin): named[name] for g in wanted for name, lin in zip(g.names, g.linears)}
            units = self.score_block(i, att, mlp, by_id)
            if att is not None:
                bi.o_mean = by_id[id(att.o)].mean.float()
            bi.down_mean = by_id[id(mlp.down)].mean.float()
        return units, bi, cost

    @staticmethod
    def influence(inputs: torch.Tensor, outputs: torch.Tensor) -> float:
        """ShortGPT's block influence ``BI = 1 − E_tokens cos(x_in, x_out)`` (Men et al. 2024, Eq. 1)."""
        cos = torch.nn.functional.cosine_similarity(inputs.float(), outputs.float(), dim=-1)
        return float(1 - cos.mean())

    def choose(
        self, units: list[Unit], info: list[BlockInfo], block_costs: list[int], influence: list[float]
    ) -> list[Unit]:
        """The units to remove, from every block's :meth:`score` (and :meth:`influence` for
        block-scoring methods): ``ratio`` of all block linear weights."""
        total = sum(block_costs)
        target = self.ratio * total
        if self.scores_blocks:
            units = [Unit(b, "block", b, block_costs[b], s) for b, s in enumerate(influence)]
            if target >= total:
                raise LlmpruneError(f"{self.name} cannot remove every block: use a smaller --ratio")
        return self.select(units, info, target)

    def run(self, ctx: PruneContext) -> PruneResult:
        adapter = ctx.adapter
        units: list[Unit] = []
        info: list[BlockInfo] = []
        influence: list[float] = []
        block_costs: list[int] = []

        def on_block(i: int, block: nn.Module, runner: BlockRunner) -> None:
            mine, bi, cost = self.score(i, block, adapter, runner)
            units.extend(mine)
            info.append(bi)
            block_costs.append(cost)

        def on_output(i: int, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
            if self.scores_blocks:
                influence.append(self.influence(inputs, outputs))

        t0 = time.perf_counter()
        engine = LayerwiseEngine(ctx.model, adapter, device=ctx.device, progress=ctx.progress)
        stats = engine.run(ctx.require_calib(self.name), on_block, desc=self.name, on_output=on_output)
        chosen = self.choose(units, info, block_costs, influence)
        apply_selection(adapter, chosen, info, self.compensate_bias)
        return PruneResult(
            seconds=time.perf_counter() - t0,
            peak_rss_mb=peak_rss_mb(),
            peak_device_mb=stats.peak_device_mb,
            removed=removed_counts(chosen),
            block_influence=influence or None,
        )


@register
class WandaSP(ScoredMethod):
    name = "wanda-sp"
    summary = "Wanda metric of heads/channels, same ratio per block (FLAP paper's baseline)"
    allocation = "uniform"  # the same fraction of every block: no whole-module units

    def column_scores(self, lin: nn.Linear, stats: InputStats) -> torch.Tensor:
        return (lin.weight.detach().float().abs() * stats.column_norms().to(lin.weight.device)).sum(0)


@register
class FLAP(ScoredMethod):
    name = "flap"
    summary = "fluctuation metric, global widths, bias compensation (An et al. 2024)"
    allocation = "global"
    Config = FLAPConfig
    compensate = True
    head_reduce = "mean"
    supported_units = ("groups", "attention", "channels", "mlp")

    def __init__(self, ratio: float, /, **options: object) -> None:
        super().__init__(ratio, **options)
        given = getattr(self.config, "units", None) or ()
        if "servable" in given and "channels" in self.units and self.compensate_bias:
            raise LlmpruneError(
                "flap units=servable: bias compensation of removed channels adds a down_proj bias that "
                "vLLM's per-layer format cannot hold; add bias_compensation=false"
            )

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


@register
class ShortGPT(ScoredMethod):
    name = "shortgpt"
    summary = "removes the blocks that change the residual stream least (Men et al. 2024)"
    scores_blocks = True
    supported_units = default_units = ("blocks",)
