"""PG's initial keep probabilities (Wanda-sp scores shifted onto the budget) and the
final deterministic selections under the budget."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ...engine.layerwise import BlockRunner, LayerwiseEngine
from ...models.base import ModelAdapter
from ...solvers.budget import bisect_decreasing
from ..structured import WandaSP
from ..units import Floors, Unit, group_columns, half_channel
from .layout import Layout


def wanda_sp_scores(
    model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, device: str, progress: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Wanda-sp scores of every KV group and channel (one layer-wise pass, dense model)."""
    metric = WandaSP(0.0)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_block(i: int, block: nn.Module, runner: BlockRunner) -> None:
        att, mlp = adapter.attention(block), adapter.mlp(block)
        wanted = [
            g
            for g in adapter.linear_groups(block)
            if any(lin is mlp.down or (att is not None and lin is att.o) for lin in g.linears)
        ]
        named = runner.collect(wanted, hessian=False)
        by_id = {id(lin): named[name] for g in wanted for name, lin in zip(g.names, g.linears)}
        gs = torch.zeros(0)
        if att is not None:
            gs = group_columns(att, metric.column_scores(att.o, by_id[id(att.o)]), "sum").double().cpu()
        out.append((gs, metric.column_scores(mlp.down, by_id[id(mlp.down)]).double().cpu()))

    LayerwiseEngine(model, adapter, device=device, progress=progress).run(calib, on_block, desc="pg: wanda-sp init")
    if device != "cpu":
        model.to("cpu")
    return out


def zscore(x: torch.Tensor) -> torch.Tensor:
    if x.numel() < 2:
        return torch.zeros_like(x)
    sd = x.std(unbiased=False)
    return torch.zeros_like(x) if sd <= 0 else (x - x.mean()) / sd


def _mean_keep(zf: torch.Tensor) -> Callable[[float], float]:
    return lambda v: float(torch.sigmoid(zf - v).mean())


def shift_to_budget(
    z: torch.Tensor, layout: Layout, budget: str, keep: float, fixed: torch.Tensor | None = None
) -> torch.Tensor:
    """``s = sigmoid(z + t)`` with ``t`` per family (``"family"``: mean ``s`` = keep) or
    global (``"params"``: expected kept parameters = keep·P); entries where ``fixed`` is
    not NaN keep that value (the block probabilities)."""
    z = z.double()
    span = float(z.abs().max()) + 40.0 if z.numel() else 40.0
    free = torch.ones_like(z, dtype=torch.bool) if fixed is None else torch.isnan(fixed)

    def probs(t: float) -> torch.Tensor:
        s = torch.sigmoid(z + t)
        if fixed is not None:
            s = torch.where(free, s, fixed)
        return s

    s = probs(0.0)
    if budget == "family":
        for sl in layout.family_slice.values():
            zf = z[sl]
            t = -bisect_decreasing(_mean_keep(zf), keep, -span, span)
            s[sl] = torch.sigmoid(zf + t)
        return s
    target = keep * layout.total
    t = -bisect_decreasing(lambda v: layout.kept_fraction(probs(-v)) * layout.total, target, -span, span)
    return probs(t)


def select_family(layout: Layout, s: torch.Tensor, ratio: float, allow_empty: bool) -> list[Unit]:
    """The ``round(ratio·G)`` least probable KV groups, then the least probable channels
    until ``ratio`` of the block weights is removed (within half a channel), so the
    achieved ratio is exact up to one channel; floors as in :func:`select_params`."""
    units = layout.units(s)
    target = ratio * layout.total
    floors = Floors(layout.info, allow_empty)
    chosen: list[Unit] = []
    removed = 0.0
    for kind in ("group", "channel"):
        ks = sorted((u for u in units if u.kind == kind), key=lambda u: (u.score, u.block, u.index))
        k = round(ratio * len(ks)) if kind == "group" else len(ks)
        for u in ks:
            if k <= 0 or (kind == "channel" and removed + u.cost / 2 > target):
                break
            if not floors.allows(u):
                continue
            floors.take(u)
            chosen.append(u)
            removed += u.cost
            k -= 1
    return chosen


def select_params(layout: Layout, s: torch.Tensor, ratio: float, allow_empty: bool) -> list[Unit]:
    """Least probable units first (a block costs what is left of it) until ``ratio`` of
    the block weights is removed, within half an MLP channel; floors as in
    :func:`select_family`, and at least one block stays."""
    info = layout.info
    target = ratio * layout.total
    slack = half_channel(info)
    remaining = list(layout.block_costs)
    floors = Floors(info, allow_empty)
    dropped: set[int] = set()
    removed, chosen = 0.0, []
    order = {"block": 0, "group": 1, "channel": 2}
    for u in sorted(layout.units(s), key=lambda u: (u.score, order[u.kind], u.block, u.index)):
        if removed >= target - slack:
            break
        if u.block in dropped:
            continue
        if u.kind == "block":
            if len(dropped) == len(info) - 1:
                continue
            cost = remaining[u.block]
        else:
            if not floors.allows(u):
                continue
            cost = u.cost
        if removed + cost > target + slack:
            continue
        if u.kind == "block":
            dropped.add(u.block)
        else:
            floors.take(u)
        remaining[u.block] -= cost
        removed += cost
        chosen.append(u)
    return [u for u in chosen if u.kind == "block" or u.block not in dropped]
