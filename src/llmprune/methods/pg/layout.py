"""PG's flat layout of all units and the hooks that apply its masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ...engine.masks import MaskFn, MaskHooks
from ...models.base import ModelAdapter
from ...solvers.policy_gradient import expected_kept
from ..units import BlockInfo, Unit, unit_costs

FAMILIES = ("groups", "channels", "blocks")


@dataclass
class Layout:
    """Flat indexing of every unit: groups (block-major), then channels, then blocks.

    ``cost`` is each entry's parameters (a block entry: its weights that belong to no
    masked unit); ``owner`` the index of each unit's block entry (``-1`` for block
    entries; ``None`` without the blocks family); ``fixed`` the weights that are always
    kept (families not masked, blocks not masked)."""

    families: tuple[str, ...]
    groups: list[slice]
    channels: list[slice]
    blocks: list[int]
    widths: list[int]  # o_proj input columns per KV group, per block
    info: list[BlockInfo]
    cost: torch.Tensor
    owner: torch.Tensor | None
    fixed: float
    family_slice: dict[str, slice] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.cost.numel()

    @property
    def block_costs(self) -> list[int]:
        return [bi.groups * bi.group_cost + bi.channels * bi.channel_cost for bi in self.info]

    @property
    def total(self) -> int:
        return sum(self.block_costs)

    def kept_fraction(self, s: torch.Tensor) -> float:
        """Expected fraction of block linear weights kept."""
        return (float(expected_kept(s.double(), self.cost, self.owner)) + self.fixed) / self.total

    def units(self, s: torch.Tensor) -> list[Unit]:
        out: list[Unit] = []
        vals = s.tolist()
        for b, bi in enumerate(self.info):
            out += [
                Unit(b, "group", g, bi.group_cost, vals[self.groups[b].start + g])
                for g in range(self.groups[b].stop - self.groups[b].start)
            ]
            out += [
                Unit(b, "channel", c, bi.channel_cost, vals[self.channels[b].start + c])
                for c in range(self.channels[b].stop - self.channels[b].start)
            ]
        costs = self.block_costs
        out += [Unit(b, "block", b, costs[b], vals[p]) for b, p in enumerate(self.blocks)]
        return out

    def hard_mask(self, chosen: list[Unit]) -> torch.Tensor:
        """The 0/1 keep vector of a removal selection."""
        m = torch.ones(self.n, dtype=torch.float64)
        for u in chosen:
            if u.kind == "group":
                m[self.groups[u.block].start + u.index] = 0
            elif u.kind == "channel":
                m[self.channels[u.block].start + u.index] = 0
            else:
                m[self.blocks[u.block]] = 0
        return m


def build_layout(adapter: ModelAdapter, families: tuple[str, ...]) -> Layout:
    info, widths = [], []
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        info.append(BlockInfo(*unit_costs(att, mlp)))
        widths.append(att.group_size * att.head_dim if att is not None else 0)
    nb = len(info)
    n_groups = sum(bi.groups for bi in info) if "groups" in families else 0
    n_chans = sum(bi.channels for bi in info) if "channels" in families else 0
    block_start = n_groups + n_chans
    costs: list[float] = []
    owners: list[int] = []
    groups: list[slice] = []
    channels: list[slice] = []
    fam: dict[str, slice] = {}
    pos = 0
    for kind, slices in (("groups", groups), ("channels", channels)):
        start = pos
        for b, bi in enumerate(info):
            count = (bi.groups if kind == "groups" else bi.channels) if kind in families else 0
            slices.append(slice(pos, pos + count))
            costs += [float(bi.group_cost if kind == "groups" else bi.channel_cost)] * count
            owners += [block_start + b] * count
            pos += count
        if kind in families:
            fam[kind] = slice(start, pos)
    unmasked = [
        (bi.groups * bi.group_cost if "groups" not in families else 0)
        + (bi.channels * bi.channel_cost if "channels" not in families else 0)
        for bi in info
    ]
    blocks: list[int] = []
    fixed = float(sum(unmasked))
    if "blocks" in families:
        blocks = list(range(block_start, block_start + nb))
        costs += [float(u) for u in unmasked]
        owners += [-1] * nb
        fam["blocks"] = slice(block_start, block_start + nb)
        fixed = 0.0
    owner = torch.tensor(owners, dtype=torch.long) if "blocks" in families else None
    return Layout(
        families, groups, channels, blocks, widths, info, torch.tensor(costs, dtype=torch.float64), owner, fixed, fam
    )


class UnitMasks:
    """PG's masks on the unmodified model (:class:`~llmprune.engine.masks.MaskHooks`):
    KV-group outputs (``o_proj`` input) and MLP channels (``down_proj`` input) multiplied
    by the current mask, blocks whose mask is 0 skipped. ``set(None)`` turns masking off."""

    def __init__(self, adapter: ModelAdapter, layout: Layout, device: torch.device | str, dtype: torch.dtype) -> None:
        self.layout = layout
        self.device = torch.device(device)
        self.dtype = dtype
        self.current: torch.Tensor | None = None
        self.block_keep: list[bool] = [True] * len(layout.info)
        self.hooks = MaskHooks()
        for b, block in enumerate(adapter.blocks()):
            att, mlp = adapter.attention(block), adapter.mlp(block)
            if att is not None and layout.groups[b].stop > layout.groups[b].start:
                self.hooks.input_mask(att.o, self._part(layout.groups[b]), repeat=layout.widths[b])
            if layout.channels[b].stop > layout.channels[b].start:
                self.hooks.input_mask(mlp.down, self._part(layout.channels[b]))
            if layout.blocks:
                self.hooks.skip_block(block, self._skipped(b))

    def _skipped(self, b: int) -> Callable[[], bool]:
        return lambda: self.current is not None and not self.block_keep[b]

    def _part(self, sl: slice) -> MaskFn:
        return lambda: None if self.current is None else self.current[sl]

    def set(self, mask: torch.Tensor | None) -> None:
        if mask is None:
            self.current = None
            return
        self.current = mask.to(device=self.device, dtype=self.dtype)
        if self.layout.blocks:
            vals = mask.tolist()
            self.block_keep = [vals[p] > 0.5 for p in self.layout.blocks]

    def remove(self) -> None:
        self.hooks.remove()
