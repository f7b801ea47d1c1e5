"""A structured pruning plan: what to remove in each decoder block.

The same plan drives physical surgery and its masked counterpart, and is what
``--method manual --spec FILE`` reads. YAML (or JSON) format, block indices in the
original numbering::

    layers:
      0: {remove_kv_heads: [2], remove_channels: [0, 5, 17]}
      1: {remove_heads: [1, 4, 7]}          # query heads inside groups (GQA stays valid)
      3: {remove_attention: true}
      4: {remove_mlp: true}
      5: {remove_block: true}
      6: {residual: {attn_in: [...], attn_out: [...], mlp_in: [...], mlp_out: [...]}}  # kept dims

``remove_channels`` may also be ``{count: N}``: remove the N channels with the smallest
down-projection column norms (a convenience for experiments, not a method).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from . import masking, structural

_KEYS = {
    "remove_kv_heads",
    "remove_heads",
    "remove_channels",
    "remove_attention",
    "remove_mlp",
    "remove_block",
    "residual",
}
_RESIDUAL_KEYS = ("attn_in", "attn_out", "mlp_in", "mlp_out")
_BOOL_KEYS = ("remove_attention", "remove_mlp", "remove_block")
_INDEX_KEYS = ("remove_kv_heads", "remove_heads", "remove_channels")


def _is_index_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


@dataclass
class LayerEdit:
    remove_kv_heads: list[int] = field(default_factory=list)
    remove_heads: list[int] = field(default_factory=list)
    remove_channels: list[int] | dict = field(default_factory=list)
    remove_attention: bool = False
    remove_mlp: bool = False
    remove_block: bool = False
    residual: dict[str, list[int]] | None = None


@dataclass
class StructuredPlan:
    layers: dict[int, LayerEdit] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> "StructuredPlan":
        if not isinstance(data, dict) or not isinstance(data.get("layers"), dict):
            raise LlmpruneError(f"{source}: expected a mapping with a 'layers:' mapping of block index -> edits")
        layers: dict[int, LayerEdit] = {}
        for key, edits in data["layers"].items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise LlmpruneError(f"{source}: layer key {key!r} is not an integer block index") from None
            if not isinstance(edits, dict):
                raise LlmpruneError(f"{source}: layer {idx}: expected a mapping of edits")
            unknown = set(edits) - _KEYS
            if unknown:
                raise LlmpruneError(f"{source}: layer {idx}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
            residual = edits.get("residual")
            if residual is not None and (not isinstance(residual, dict) or set(residual) - set(_RESIDUAL_KEYS)):
                raise LlmpruneError(f"{source}: layer {idx}: residual takes kept index lists {list(_RESIDUAL_KEYS)}")
            for flag in _BOOL_KEYS:
                if flag in edits and not isinstance(edits[flag], bool):
                    raise LlmpruneError(
                        f"{source}: layer {idx}: {flag} is {edits[flag]!r}, not a boolean: "
                        f"write {flag}: true or {flag}: false (unquoted)"
                    )
            for key in _INDEX_KEYS:
                value = edits.get(key)
                if key == "remove_channels" and isinstance(value, dict):
                    continue
                if value is not None and not _is_index_list(value):
                    raise LlmpruneError(f"{source}: layer {idx}: {key} must be a list of integer indices")
            if residual is not None and not all(v is None or _is_index_list(v) for v in residual.values()):
                raise LlmpruneError(f"{source}: layer {idx}: residual lists must hold integer indices")
            layers[idx] = LayerEdit(**edits)
        return cls(layers)

    def to_dict(self) -> dict:
        out: dict = {}
        for i, e in sorted(self.layers.items()):
            d = {k: v for k, v in e.__dict__.items() if v not in ([], False, None, {})}
            out[i] = d
        return {"layers": out}


def load_plan(path: str | Path) -> StructuredPlan:
    """Read a plan file (YAML or JSON); one-line errors for missing/malformed files."""
    p = Path(path)
    if not p.is_file():
        raise LlmpruneError(f"spec file {p} not found: pass --spec pointing at a YAML plan")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml/json errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LlmpruneError(f"spec file {p} is not valid YAML/JSON: {first}") from None
    return StructuredPlan.from_dict(data, source=str(p))


def _smallest_channels(adapter: ModelAdapter, block: nn.Module, count: int, layer: int) -> list[int]:
    mlp = adapter.mlp(block)
    if not 0 <= count <= mlp.channels:
        raise LlmpruneError(f"layer {layer}: cannot remove {count} of {mlp.channels} MLP channels")
    norms = mlp.down.weight.detach().float().norm(dim=0)
    return torch.argsort(norms, stable=True)[:count].tolist()


def apply_plan(adapter: ModelAdapter, plan: StructuredPlan, masked: bool = False) -> None:
    """Apply ``plan`` to ``adapter.model`` physically (default) or as zero masks."""
    blocks = list(adapter.blocks())
    n = len(blocks)
    bad = [i for i in plan.layers if not 0 <= i < n]
    if bad:
        raise LlmpruneError(f"plan names block(s) {bad} but the model has {n} blocks (0..{n - 1})")
    for i, edit in sorted(plan.layers.items()):
        block = blocks[i]
        if edit.remove_block:
            if masked:
                masking.mask_block(adapter, block)
            continue
        att = adapter.attention(block)
        if edit.residual:
            r = {k: edit.residual.get(k) for k in _RESIDUAL_KEYS}
            if masked:
                masking.mask_residual(adapter, block, **r)
            else:
                structural.slice_residual(adapter, block, layer=i, **r)
        if edit.remove_attention:
            if masked:
                masking.mask_attention(adapter, block)
            else:
                structural.remove_attention(adapter, block, layer=i)
        elif edit.remove_kv_heads or edit.remove_heads:
            if att is None:
                raise LlmpruneError(f"layer {i}: its attention was already removed")
            drop_kv = set(structural._check_indices(edit.remove_kv_heads, att.num_kv_heads, "KV head", i))
            drop_q = set(structural._check_indices(edit.remove_heads, att.num_heads, "query head", i))
            keep_kv = [kv for kv in range(att.num_kv_heads) if kv not in drop_kv]
            g = att.group_size
            keep_q = [q for q in range(att.num_heads) if q // g in keep_kv and q not in drop_q]
            if masked:
                masking.mask_heads(adapter, block, keep_kv, keep_q)
            else:
                structural.prune_heads(adapter, block, keep_kv, keep_q, layer=i)
        if edit.remove_mlp:
            (masking.mask_mlp(adapter, block) if masked else structural.remove_mlp(adapter, block, layer=i))
        elif edit.remove_channels:
            mlp = adapter.mlp(block)
            rc = edit.remove_channels
            if isinstance(rc, dict):
                if set(rc) != {"count"}:
                    raise LlmpruneError(f"layer {i}: remove_channels takes a list of indices or {{count: N}}")
                rc = _smallest_channels(adapter, block, int(rc["count"]), i)
            drop = set(structural._check_indices(rc, mlp.channels, "MLP channel", i))
            keep = [c for c in range(mlp.channels) if c not in drop]
            if masked:
                masking.mask_channels(adapter, block, keep)
            else:
                structural.prune_channels(adapter, block, keep, layer=i)
    dropped = [i for i, e in plan.layers.items() if e.remove_block]
    if dropped and not masked:
        structural.drop_blocks(adapter, dropped)


def block_widths(adapter: ModelAdapter) -> list[dict]:
    """Per-block kept widths (the ``layers_structured`` report schema)."""
    out = []
    hidden = adapter.config.hidden_size
    for i, block in enumerate(adapter.blocks()):
        att, mlp = adapter.attention(block), adapter.mlp(block)

        def width_in(lin: nn.Linear | None) -> int | None:
            if lin is None:
                return None
            idx = getattr(lin, "in_index", None)
            return hidden if idx is None else int(idx.numel())

        def width_out(lin: nn.Linear | None) -> int | None:
            if lin is None:
                return None
            idx = getattr(lin, "out_index", None)
            return hidden if idx is None else int(idx.numel())

        out.append(
            {
                "block": i,
                "heads": 0 if att is None else att.num_heads,
                "kv_heads": 0 if att is None else att.num_kv_heads,
                "intermediate": mlp.up.out_features,
                "hidden_in": width_in(att.q if att is not None else None),
                "attn_out": width_out(att.o if att is not None else None),
                "mlp_in": width_in(mlp.up),
                "mlp_out": width_out(mlp.down),
            }
        )
    return out
