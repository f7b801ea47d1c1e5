"""LLM-Pruner without recovery (Ma et al., NeurIPS 2023), on our units and surgery.

LLM-Pruner finds *coupled structures* by dependency tracing and scores each by a
first-order Taylor expansion of the LM loss (its Eq. 4/5). For decoder LLMs the coupled
groups are exactly our units:

- a **KV group**: the ``q`` rows of its query heads, the ``k``/``v`` rows of its KV head,
  and the ``o`` columns of its query heads (biases included);
- an **MLP channel**: the ``gate``/``up`` rows and the ``down`` column of one channel.

Importance (``taylor``):

- ``"param_first"`` (the paper's element-wise first order, its code's default for
  LLaMA): ``I_G = Σ_{w ∈ G} |w · ∂L/∂w|``;
- ``"vectorize"`` (its group-level first order): ``I_G = |Σ_{w ∈ G} w · ∂L/∂w|``;

with ``∂L/∂w`` the gradient of the LM loss summed over the calibration windows.
Group scores are summed over the coupled parameters (its ``group_reduction="sum"``).

Allocation follows its released LLaMA setting: the same ratio in every pruned block
(local pruning), with the first ``4/32`` and the last ``2/32`` of the depth left dense
(``block_{attention,mlp}_layer_start=4, end=30`` of 32 layers). The per-block ratio is
raised so that the requested fraction of *all* decoder-block linear weights is removed.
No LoRA recovery (the "w/o tune" rows of its tables).

Memory: this is the one structured method here that needs weight gradients; only the
decoder blocks' linear weights get ``requires_grad`` (one gradient buffer the size of
the block weights), the loss is back-propagated one calibration window at a time, and
``checkpointing`` adds activation checkpointing. ``llmprune.prune_streamed`` takes the same
gradients one block at a time (:mod:`llmprune.streamed_llm_pruner`: :func:`weight_gradients`
per block in a streamed backward pass, then :meth:`LLMPruner.choose`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import nn

from pydantic import Field

from ..engine.layerwise import peak_rss_mb
from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from .base import PruneContext, PruneResult
from .gradients import backward_windows
from .registry import register
from .units import (
    StructuredMethod,
    Unit,
    BlockInfo,
    UnitsConfig,
    apply_selection,
    block_infos,
    removed_counts,
    select_uniform,
)

TAYLOR = ("param_first", "vectorize")


class LLMPrunerConfig(UnitsConfig):
    taylor: Literal["param_first", "vectorize"] = Field(
        "param_first", description="element-wise (param_first) or group-level (vectorize) first-order importance"
    )
    layer_start: int | None = Field(None, description="first pruned block (default: 4/32 of the depth)")
    layer_end: int | None = Field(None, description="end of the pruned blocks, exclusive (default: depth - 2/32 of it)")
    checkpointing: bool = Field(False, description="activation checkpointing in the backward passes")


def _salience(lin: nn.Linear, taylor: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``w·∂L/∂w`` (element-wise; absolute for param_first) of a weight and its bias."""
    assert lin.weight.grad is not None
    w = lin.weight.detach().float() * lin.weight.grad.float()
    b = None
    if lin.bias is not None and lin.bias.grad is not None:
        b = lin.bias.detach().float() * lin.bias.grad.float()
    if taylor == "param_first":
        w, b = w.abs(), None if b is None else b.abs()
    return w, b


def _rows(lin: nn.Linear, taylor: str, width: int) -> torch.Tensor:
    """Salience of output rows summed in consecutive chunks of ``width`` rows."""
    w, b = _salience(lin, taylor)
    per_row = w.sum(1) + (b if b is not None else 0)
    return per_row.reshape(-1, width).sum(1)


def _cols(lin: nn.Linear, taylor: str, width: int) -> torch.Tensor:
    """Salience of input columns summed in consecutive chunks of ``width`` columns."""
    w, _ = _salience(lin, taylor)
    return w.sum(0).reshape(-1, width).sum(1)


def group_scores(adapter: ModelAdapter, block: nn.Module, taylor: str) -> tuple[list[float], list[float]]:
    """Taylor importance of every KV group and MLP channel of ``block`` (grads present)."""
    att, mlp = adapter.attention(block), adapter.mlp(block)
    groups: list[float] = []
    if att is not None:
        qw = att.group_size * att.head_dim
        s = _rows(att.q, taylor, qw) + _rows(att.k, taylor, att.head_dim) + _rows(att.v, taylor, att.head_dim)
        s = s + _cols(att.o, taylor, qw)
        groups = (s.abs() if taylor == "vectorize" else s).tolist()
    s = _rows(mlp.up, taylor, 1) + _cols(mlp.down, taylor, 1)
    if mlp.gate is not None:
        s = s + _rows(mlp.gate, taylor, 1)
    chans = (s.abs() if taylor == "vectorize" else s).tolist()
    return groups, chans


def linear_params(adapter: ModelAdapter, blocks: Sequence[nn.Module]) -> list[torch.Tensor]:
    """The weights and biases of the prunable linears of ``blocks`` (those LLM-Pruner's
    importance needs ``∂L/∂w`` of)."""
    params: list[torch.Tensor] = []
    for block in blocks:
        for lin in adapter.prunable_linears(block).values():
            params += [lin.weight] + ([lin.bias] if lin.bias is not None else [])
    return params


@contextmanager
def weight_gradients(
    adapter: ModelAdapter, block: nn.Module, taylor: str
) -> Iterator[Callable[[], tuple[list[float], list[float]]]]:
    """Give ``block``'s linear weights (and biases) ``requires_grad`` while the context is
    open; yield a function returning :func:`group_scores` of the gradients accumulated
    meanwhile. The gradients and the flags are reset on exit (the streamed run's pass 1)."""
    params = linear_params(adapter, [block])
    flags = [p.requires_grad for p in params]
    for p in params:
        p.grad = None
        p.requires_grad_(True)
    try:
        yield lambda: group_scores(adapter, block, taylor)
    finally:
        for p, flag in zip(params, flags):
            p.grad = None
            p.requires_grad_(flag)


def _layer_range(n: int, start: int | None, end: int | None) -> tuple[int, int]:
    lo = round(n * 4 / 32) if start is None else start
    hi = n - round(n * 2 / 32) if end is None else end
    if not 0 <= lo < hi <= n:
        raise LlmpruneError(
            f"llm-pruner layer range [{lo}, {hi}) is empty or outside the model's {n} blocks: "
            "pass layer_start < layer_end within the model"
        )
    return lo, hi


@register
class LLMPruner(StructuredMethod):
    name = "llm-pruner"
    summary = "first-order Taylor importance of coupled structures, no recovery (Ma et al. 2023)"
    Config = LLMPrunerConfig
    config: LLMPrunerConfig

    def __init__(self, ratio: float, /, **options: object) -> None:
        super().__init__(ratio, **options)
        self.layers: tuple[int, int] | None = None

    def options(self) -> dict:
        c = self.config
        return {
            "taylor": c.taylor,
            "layers": self.layers,
            "allocation": "uniform over the pruned layers",
            "checkpointing": c.checkpointing,
            "allow_empty": c.allow_empty,
            "units": list(self.units),
            "recovery": None,
        }

    def allocation(self, info: list[BlockInfo]) -> float:
        """Set the pruned blocks ``self.layers = (lo, hi)`` and return the ratio each of them
        loses so that ``ratio`` of *all* decoder-block linear weights goes (the released
        LLaMA setting: uniform over the pruned blocks, the first and last ones dense); an
        unreachable ratio is a one-line error. Shared by :meth:`run` and the streamed run."""
        c = self.config
        lo, hi = _layer_range(len(info), c.layer_start, c.layer_end)
        self.layers = (lo, hi)
        cost = [bi.cost for bi in info]
        total, in_range = sum(cost), sum(cost[lo:hi])
        local = self.ratio * total / in_range if in_range else 1.0
        if local > 0.95:
            raise LlmpruneError(
                f"llm-pruner would need to remove {local:.0%} of each of blocks {lo}..{hi - 1} to "
                f"reach {self.ratio:.0%} overall: use a smaller --ratio or widen the layer range"
            )
        return local

    def choose(self, info: list[BlockInfo], scores: Mapping[int, tuple[list[float], list[float]]]) -> list[Unit]:
        """The units to remove: in every pruned block the same fraction (:meth:`allocation`)
        of its lowest-importance KV groups and MLP channels (Eq. 4/5 scores of
        :func:`group_scores`, ``scores[b]`` for ``b`` in ``self.layers``). Shared by
        :meth:`run` and the streamed run (:mod:`llmprune.streamed_llm_pruner`)."""
        local = self.allocation(info)
        assert self.layers is not None
        units: list[Unit] = []
        for b in range(*self.layers):
            bi = info[b]
            gs, cs = scores[b]
            if "groups" in self.units:
                units += [Unit(b, "group", g, bi.group_cost, s) for g, s in enumerate(gs)]
            if "channels" in self.units:
                units += [Unit(b, "channel", ch, bi.channel_cost, s) for ch, s in enumerate(cs)]
        total = sum(bi.cost for bi in info)
        return select_uniform(units, info, local, self.ratio * total, self.allow_empty)

    def run(self, ctx: PruneContext) -> PruneResult:
        model, adapter, device, c = ctx.model, ctx.adapter, ctx.device, self.config
        t0 = time.perf_counter()
        blocks = list(adapter.blocks())
        info = block_infos(adapter)
        self.allocation(info)  # an unreachable ratio is refused before the gradients
        assert self.layers is not None
        params = linear_params(adapter, blocks)
        backward_windows(
            model,
            ctx.require_calib(self.name),
            device,
            params,
            c.checkpointing,
            ctx.progress,
            desc="llm-pruner: gradients",
        )
        grad_rss = peak_rss_mb()
        try:
            scores = {b: group_scores(adapter, blocks[b], c.taylor) for b in range(*self.layers)}
        finally:
            for p in params:
                p.grad = None
        if device != "cpu":
            model.to("cpu")
        chosen = self.choose(info, scores)
        apply_selection(adapter, chosen, info, compensate=False)
        return PruneResult(
            seconds=time.perf_counter() - t0,
            peak_rss_mb=peak_rss_mb(),
            removed=removed_counts(chosen),
            stages={"stage1_peak_rss_mb": grad_rss},
        )
