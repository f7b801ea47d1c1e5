"""DISP's selection vectors: their exact parameter count, the hooks that apply them,
the final budget match and the physical pruning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ...engine.masks import MaskFn, MaskHooks
from ...errors import LlmpruneError
from ...models.base import ModelAdapter, count_parameters
from ...solvers.budget import bisect
from ...surgery import structural
from .hypernet import deterministic_keep


KINDS = ("attn_in", "attn_out", "mlp_in", "mlp_int", "mlp_out")


@dataclass(frozen=True)
class VectorSpec:
    """One selection vector: block index, kind (one of :data:`KINDS`), length."""

    block: int
    kind: str
    size: int


@dataclass(frozen=True)
class Term:
    """``coef · Π_f |s_f|`` parameters; ``bias`` terms count in the total only."""

    coef: int
    factors: tuple[int, ...]
    bias: bool = False


class ParamCount:
    """Kept parameters as a function of the selection-vector sizes (exact, also for
    tensors: differentiable through the hard masks' straight-through gradient).

    ``total(sizes)`` = every model parameter of the pruned model (tied embeddings
    counted once); ``block(sizes)`` = decoder-block linear weights. Both equal a
    brute-force count of the exported model (tested).
    """

    def __init__(self, model: nn.Module, adapter: ModelAdapter) -> None:
        self.specs: list[VectorSpec] = []
        self.terms: list[Term] = []
        hidden = int(adapter.config.hidden_size)
        for b, block in enumerate(adapter.blocks()):
            att, mlp = adapter.attention(block), adapter.mlp(block)
            lins = (
                ([att.q, att.k, att.v, att.o] if att is not None else [])
                + ([mlp.gate] if mlp.gate is not None else [])
                + [mlp.up, mlp.down]
            )
            if any(
                getattr(lin, "in_index", None) is not None or getattr(lin, "out_index", None) is not None
                for lin in lins
            ):
                raise LlmpruneError(
                    f"layer {b}: residual dimensions were already selected; DISP needs an unpruned model"
                )
            if mlp.channels == 0 or mlp.up.in_features != hidden or mlp.down.out_features != hidden:
                raise LlmpruneError(f"layer {b}: the MLP is already pruned or removed; DISP needs an unpruned model")
            if att is not None:
                if att.q.in_features != hidden or att.o.out_features != hidden:
                    raise LlmpruneError(f"layer {b}: unexpected attention widths; DISP needs an unpruned model")
                a_in = self._add(b, "attn_in", hidden)
                a_out = self._add(b, "attn_out", hidden)
                for lin in (att.q, att.k, att.v):  # their biases do not depend on the masks
                    self.terms.append(Term(lin.out_features, (a_in,)))
                self.terms.append(Term(att.o.in_features, (a_out,)))
                if att.o.bias is not None:
                    self.terms.append(Term(1, (a_out,), bias=True))
            m_in = self._add(b, "mlp_in", hidden)
            m_int = self._add(b, "mlp_int", mlp.channels)
            m_out = self._add(b, "mlp_out", hidden)
            for lin in ([mlp.gate] if mlp.gate is not None else []) + [mlp.up]:
                self.terms.append(Term(1, (m_int, m_in)))
                if lin.bias is not None:
                    self.terms.append(Term(1, (m_int,), bias=True))
            self.terms.append(Term(1, (m_out, m_int)))
            if mlp.down.bias is not None:
                self.terms.append(Term(1, (m_out,), bias=True))
        full = [s.size for s in self.specs]
        self.full_total = count_parameters(model)
        self.full_block = adapter.block_linear_params()
        self.fixed_total = self.full_total - self._sum(full, bias=True)
        self.fixed_block = self.full_block - self._sum(full, bias=False)

    def _add(self, block: int, kind: str, size: int) -> int:
        self.specs.append(VectorSpec(block, kind, int(size)))
        return len(self.specs) - 1

    def _sum(self, sizes: Sequence, bias: bool):
        out = 0
        for t in self.terms:
            if t.bias and not bias:
                continue
            v = t.coef
            for f in t.factors:
                v = v * sizes[f]
            out = out + v
        return out

    def total(self, sizes: Sequence) -> "int | torch.Tensor":
        return self.fixed_total + self._sum(sizes, bias=True)

    def block(self, sizes: Sequence) -> "int | torch.Tensor":
        return self.fixed_block + self._sum(sizes, bias=False)

    def kept(self, sizes: Sequence, accounting: str) -> "int | torch.Tensor":
        return self.total(sizes) if accounting == "total" else self.block(sizes)

    def full(self, accounting: str) -> int:
        return self.full_total if accounting == "total" else self.full_block


class SelectionMasks:
    """Multiplies each selection vector into the model
    (:class:`~llmprune.engine.masks.MaskHooks`): q/k/v (gate/up, fc1) inputs by
    ``attn_in`` (``mlp_in``), the o_proj (down) output by ``attn_out`` (``mlp_out``), the
    down-projection input by ``mlp_int``. Set ``self.masks[i]`` (a tensor of length
    ``specs[i].size`` or None) before a forward. With {0, 1} masks the model computes
    exactly what the exported model does."""

    def __init__(self, adapter: ModelAdapter, specs: Sequence[VectorSpec]) -> None:
        self.masks: list[torch.Tensor | None] = [None] * len(specs)
        self.hooks = MaskHooks()
        by_block: dict[int, dict[str, int]] = {}
        for i, s in enumerate(specs):
            by_block.setdefault(s.block, {})[s.kind] = i
        for b, block in enumerate(adapter.blocks()):
            ids = by_block.get(b, {})
            att, mlp = adapter.attention(block), adapter.mlp(block)
            if att is not None and "attn_in" in ids:
                for lin in (att.q, att.k, att.v):
                    self.hooks.input_mask(lin, self._get(ids["attn_in"]))
                self.hooks.output_mask(att.o, self._get(ids["attn_out"]))
            for lin in ([mlp.gate] if mlp.gate is not None else []) + [mlp.up]:
                self.hooks.input_mask(lin, self._get(ids["mlp_in"]))
            self.hooks.input_mask(mlp.down, self._get(ids["mlp_int"]))
            self.hooks.output_mask(mlp.down, self._get(ids["mlp_out"]))

    def _get(self, i: int) -> MaskFn:
        return lambda: self.masks[i]

    def remove(self) -> None:
        self.hooks.remove()

    def __enter__(self) -> "SelectionMasks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def match_budget(
    logits: Sequence[torch.Tensor],
    count: ParamCount,
    accounting: str,
    target_kept: float,
    offset: float,
    match: bool = True,
) -> tuple[list[torch.Tensor], float]:
    """Noise-free hard masks; with ``match``, one global shift of all logits (bisection)
    chosen as the largest whose kept parameters do not exceed ``target_kept``."""

    def keeps(shift: float) -> list[torch.Tensor]:
        return [deterministic_keep(a, offset, shift) for a in logits]

    def kept(shift: float) -> int:
        return int(count.kept([int(k.sum()) for k in keeps(shift)], accounting))

    if not match:
        return keeps(0.0), 0.0
    lo = -max(float(a.max()) for a in logits) - offset - 1.0  # one dimension per vector
    hi = -min(float(a.min()) for a in logits) - offset + 1.0  # everything kept
    if kept(hi) <= target_kept:
        return keeps(hi), hi
    lo, _ = bisect(lambda shift: kept(shift) <= target_kept, lo, hi, iters=60)
    return keeps(lo), lo


def apply_disp_masks(adapter: ModelAdapter, specs: Sequence[VectorSpec], keeps: Sequence[torch.Tensor]) -> None:
    """Physically prune: MLP channels (:func:`structural.prune_channels`), then the
    residual index sets of every block (:func:`structural.slice_residual`). Vectors that
    keep everything are left alone (no index_select at inference)."""
    per_block: dict[int, dict[str, list[int] | None]] = {}
    for s, k in zip(specs, keeps):
        idx = torch.nonzero(k.detach().cpu(), as_tuple=False).flatten().tolist()
        if not idx:
            raise LlmpruneError(f"internal error: empty {s.kind} selection in layer {s.block}")
        per_block.setdefault(s.block, {})[s.kind] = None if len(idx) == s.size else idx
    for b, block in enumerate(adapter.blocks()):
        sel = per_block.get(b)
        if not sel:
            continue
        channels = sel.get("mlp_int")
        if channels is not None:
            structural.prune_channels(adapter, block, channels, layer=b)
        structural.slice_residual(
            adapter,
            block,
            attn_in=sel.get("attn_in"),
            attn_out=sel.get("attn_out"),
            mlp_in=sel.get("mlp_in"),
            mlp_out=sel.get("mlp_out"),
            layer=b,
        )
