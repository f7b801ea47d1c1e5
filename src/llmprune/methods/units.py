"""Structured units and their removal, shared by every structured method.

Unit families (the ``units`` option of the structured methods):

- ``groups``: whole KV groups of attention (a KV head with its query heads; one head
  when there is no GQA);
- ``attention``: a block's whole attention (never block 0's: :data:`FIRST_ATTENTION`);
- ``channels``: MLP intermediate channels;
- ``mlp``: a block's whole MLP;
- ``blocks``: whole decoder blocks.

``servable`` names the families whose removals keep the model in the per-layer format
vLLM serves (Nemotron-NAS ``block_configs``: per-block MLP width, attention or MLP
removed, block removed; the query-head count stays global), i.e. everything but
``groups``. ``ratio`` is the fraction of decoder-block linear weights removed; the chosen
units are removed physically (:mod:`llmprune.surgery`), so the model really gets smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import nn

from ..errors import LlmpruneError
from ..models.base import AttentionSpec, MLPSpec, ModelAdapter
from ..surgery import structural
from .base import Method, MethodConfig


#: unit families in a fixed order
FAMILIES = ("groups", "attention", "channels", "mlp", "blocks")
#: families whose removals vLLM's per-layer format expresses (see the module docstring)
SERVABLE = ("attention", "channels", "mlp", "blocks")
#: why block 0's whole attention is never a candidate of the ``attention`` family
FIRST_ATTENTION = (
    "vLLM's DeciLM code starts the residual stream in the first block with attention, so a block "
    "keeping its MLP needs an attention at or before it: block 0 keeps its attention"
)
#: the module a partial or whole unit removes from
_MODULE = {"group": "attention", "attention": "attention", "channel": "mlp", "mlp": "mlp"}


def split_units(value: Any) -> Any:
    """The ``units`` option as given (``"channels,attention"`` or a sequence) → a tuple;
    unknown family names are refused (a pydantic ``field_validator`` body)."""
    if isinstance(value, str):
        value = tuple(u.strip() for u in value.split(",") if u.strip())
    if value is None:
        return None
    value = tuple(value)
    bad = [u for u in value if u not in FAMILIES + ("servable",)]
    if bad or not value:
        raise ValueError(
            f"unknown unit family {bad[0] if bad else '(none)'!r}: use a comma list of "
            f"{', '.join(FAMILIES)}, or servable"
        )
    return value


def resolve_units(
    method: str, value: tuple[str, ...] | None, supported: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    """The unit families a method runs with: ``default`` when not given, ``servable`` =
    the servable families the method supports; families it does not support are a
    one-line error."""
    if value is None:
        return default
    if "servable" in value:
        value = tuple(f for f in supported if f in SERVABLE) + tuple(f for f in value if f != "servable")
    wrong = [f for f in value if f not in supported]
    if wrong:
        raise LlmpruneError(
            f"{method} cannot remove unit family {wrong[0]!r}: it supports units={','.join(supported)} "
            f"(servable: {','.join(f for f in supported if f in SERVABLE)})"
        )
    return tuple(f for f in FAMILIES if f in value)


@dataclass(slots=True)  # one per KV group and channel of every block: ~150 bytes each, not ~550
class Unit:
    block: int
    kind: str  # "group" | "attention" | "channel" | "mlp" | "block"
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

    @property
    def cost(self) -> int:
        """Weights of the block's units (all KV groups and channels)."""
        return self.groups * self.group_cost + self.channels * self.channel_cost


def unit_costs(att: AttentionSpec | None, mlp: MLPSpec) -> tuple[int, int, int, int]:
    """``(KV groups, channels, weights per group, weights per channel)`` of one block."""
    groups = att.num_kv_heads if att is not None else 0
    gcost = (
        sum(lin.weight.numel() for lin in (att.q, att.k, att.v, att.o)) // groups if att is not None and groups else 0
    )
    lins = ([mlp.gate] if mlp.gate is not None else []) + [mlp.up, mlp.down]
    ccost = sum(lin.weight.numel() for lin in lins) // mlp.channels if mlp.channels else 0
    return groups, mlp.channels, gcost, ccost


def module_units(
    b: int, families: tuple[str, ...], info: BlockInfo, attention_score: float, mlp_score: float
) -> list[Unit]:
    """Block ``b``'s whole-attention and whole-MLP candidates for the ``attention`` and
    ``mlp`` families asked (a module's cost: all its groups' or channels' weights). Block
    0's attention is never one (:data:`FIRST_ATTENTION`)."""
    out = []
    if "attention" in families and info.groups and b > 0:
        out.append(Unit(b, "attention", 0, info.groups * info.group_cost, attention_score))
    if "mlp" in families and info.channels:
        out.append(Unit(b, "mlp", 0, info.channels * info.channel_cost, mlp_score))
    return out


def block_infos(adapter: ModelAdapter) -> list[BlockInfo]:
    return [BlockInfo(*unit_costs(adapter.attention(b), adapter.mlp(b))) for b in adapter.blocks()]


def group_columns(att: AttentionSpec, score_cols: torch.Tensor, reduce: str) -> torch.Tensor:
    """Per-KV-group sum (or mean) of per-column scores of ``o_proj``'s input."""
    per_group = score_cols.reshape(att.num_kv_heads, att.group_size * att.head_dim)
    return per_group.sum(1) if reduce == "sum" else per_group.mean(1)


class Floors:
    """KV groups and channels left per block during a greedy selection: every block keeps
    at least one of each unless ``allow_empty``."""

    def __init__(self, info: list[BlockInfo], allow_empty: bool) -> None:
        self.allow_empty = allow_empty
        self.left = {
            (b, k): (bi.groups if k == "group" else bi.channels)
            for b, bi in enumerate(info)
            for k in ("group", "channel")
        }

    def allows(self, u: Unit) -> bool:
        return self.allow_empty or self.left[(u.block, u.kind)] > 1

    def take(self, u: Unit) -> None:
        self.left[(u.block, u.kind)] -= 1


def half_channel(info: list[BlockInfo]) -> float:
    """The tolerance of a global selection: half the cheapest MLP channel."""
    return min((bi.channel_cost for bi in info if bi.channel_cost), default=0) / 2


def select_uniform(
    units: list[Unit], info: list[BlockInfo], ratio: float, target: float, allow_empty: bool
) -> list[Unit]:
    """Same fraction in every block: ``round(ratio·G)`` groups, then channels to reach
    ``ratio`` of the block's weights."""
    chosen: list[Unit] = []
    keep = 0 if allow_empty else 1
    for b, bi in enumerate(info):
        mine = [u for u in units if u.block == b]
        groups = sorted((u for u in mine if u.kind == "group"), key=lambda u: u.score)
        chans = sorted((u for u in mine if u.kind == "channel"), key=lambda u: u.score)
        k = min(round(ratio * bi.groups), bi.groups - keep) if groups else 0
        chosen += groups[:k]
        budget = ratio * bi.cost - k * bi.group_cost
        c = round(budget / bi.channel_cost) if bi.channel_cost else 0
        chosen += chans[: max(0, min(c, bi.channels - keep))]
    return chosen


def select_global(
    units: list[Unit], info: list[BlockInfo], ratio: float, target: float, allow_empty: bool
) -> list[Unit]:
    """Lowest scores first across all blocks until ``target`` weights are removed; a unit
    that would overshoot by more than half a channel is skipped; floors keep one group
    and one channel per block unless ``allow_empty``. A whole attention (MLP) is taken
    only while none of its block's groups (channels) is, and then none of them is."""
    floors = Floors(info, allow_empty)
    slack = half_channel(info)
    removed, chosen = 0, []
    whole: set[tuple[int, str]] = set()
    touched: set[tuple[int, str]] = set()
    for u in sorted(units, key=lambda u: (u.score, u.block, u.index)):
        if removed >= target - slack:
            break
        if removed + u.cost > target + slack:
            continue
        module = _MODULE.get(u.kind)
        if module is not None:
            key = (u.block, module)
            if key in whole:
                continue
            if u.kind in ("attention", "mlp"):
                if key in touched:
                    continue
                whole.add(key)
            else:
                if not floors.allows(u):
                    continue
                floors.take(u)
                touched.add(key)
        chosen.append(u)
        removed += u.cost
    return chosen


def compensate_bias(lin: nn.Linear, cols: list[int], mean: torch.Tensor) -> None:
    """Add the removed input columns' mean contribution to ``lin``'s bias (FLAP)."""
    if not cols:
        return
    idx = torch.as_tensor(cols, dtype=torch.long, device=lin.weight.device)
    delta = lin.weight.detach().float().index_select(1, idx) @ mean.to(lin.weight.device).float().index_select(0, idx)
    if lin.bias is None:
        lin.bias = nn.Parameter(
            torch.zeros(lin.out_features, dtype=lin.weight.dtype, device=lin.weight.device), requires_grad=False
        )
    with torch.no_grad():
        lin.bias.add_(delta.to(lin.bias.dtype))


def apply_block(
    adapter: ModelAdapter, block: nn.Module, b: int, chosen: list[Unit], info: BlockInfo, compensate: bool
) -> None:
    """Remove block ``b``'s ``chosen`` units (other blocks' units and whole-block units are
    ignored) from ``block`` physically, with FLAP's bias compensation of removed groups and
    channels if asked (``info`` holds the block's input means); a whole attention or MLP
    leaves nothing behind. The streamed pipeline calls it one block at a time."""
    if any(u.block == b and u.kind == "attention" for u in chosen):
        structural.remove_attention(adapter, block, keep_bias=False, layer=b)
    if any(u.block == b and u.kind == "mlp" for u in chosen):
        structural.remove_mlp(adapter, block, layer=b)
    groups = {u.index for u in chosen if u.block == b and u.kind == "group"}
    chans = {u.index for u in chosen if u.block == b and u.kind == "channel"}
    att, mlp = adapter.attention(block), adapter.mlp(block)
    if compensate:
        if att is not None and groups:
            o_mean = info.o_mean
            assert o_mean is not None
            cols = [
                q * att.head_dim + d
                for g in sorted(groups)
                for q in range(g * att.group_size, (g + 1) * att.group_size)
                for d in range(att.head_dim)
            ]
            compensate_bias(att.o, cols, o_mean)
        if chans:
            down_mean = info.down_mean
            assert down_mean is not None
            compensate_bias(mlp.down, sorted(chans), down_mean)
    if att is not None and groups:
        keep = [g for g in range(att.num_kv_heads) if g not in groups]
        structural.prune_heads(adapter, block, keep, layer=b)
    if chans:
        structural.prune_channels(adapter, block, [c for c in range(mlp.channels) if c not in chans], layer=b)


def dropped_blocks(chosen: list[Unit]) -> list[int]:
    """The whole blocks among ``chosen``, in order."""
    return sorted({u.block for u in chosen if u.kind == "block"})


def apply_selection(adapter: ModelAdapter, chosen: list[Unit], info: list[BlockInfo], compensate: bool) -> None:
    """Remove the ``chosen`` units physically: :func:`apply_block` for every block, then
    the whole blocks (renumbering the rest)."""
    for b, block in enumerate(list(adapter.blocks())):
        apply_block(adapter, block, b, [u for u in chosen if u.block == b], info[b], compensate)
    drop = dropped_blocks(chosen)
    if drop:
        structural.drop_blocks(adapter, drop)


def removed_counts(chosen: list[Unit]) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "groups": sum(u.kind == "group" for u in chosen),
        "channels": sum(u.kind == "channel" for u in chosen),
        "blocks": sorted(u.block for u in chosen if u.kind == "block"),
    }
    for kind in ("attention", "mlp"):  # only when that family was searched and used
        if any(u.kind == kind for u in chosen):
            counts[kind] = sorted(u.block for u in chosen if u.kind == kind)
    return counts


class UnitsConfig(MethodConfig):
    """Options shared by the structured methods that search a choice of unit families."""

    units: tuple[str, ...] | None = Field(
        None, description="unit families searched: groups, attention, channels, mlp, blocks, or servable"
    )
    allow_empty: bool = Field(False, description="a layer may lose all its KV groups or channels")

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: Any) -> Any:
        return split_units(value)


class StructuredMethod(Method):
    """Base of the structured methods: ``Method(ratio, **options)``, ratio in [0, 0.9]."""

    kind = "structured"
    max_ratio: float = 0.9
    #: unit families the method can search, and those it searches by default
    supported_units: ClassVar[tuple[str, ...]] = ("groups", "channels")
    default_units: ClassVar[tuple[str, ...]] = ("groups", "channels")

    def __init__(self, ratio: float, /, **options: object) -> None:
        if not 0.0 <= ratio <= self.max_ratio:
            raise LlmpruneError(f"structured ratio {ratio} outside [0, {self.max_ratio}]: pass e.g. --ratio 0.2")
        self.ratio = ratio
        super().__init__(ratio, **options)
        _ = self.units  # refuse unsupported families before any work

    @property
    def units(self) -> tuple[str, ...]:
        """The unit families this run searches (:func:`resolve_units`)."""
        return resolve_units(self.name, getattr(self.config, "units", None), self.supported_units, self.default_units)

    @property
    def allow_empty(self) -> bool:
        return bool(getattr(self.config, "allow_empty", False))
