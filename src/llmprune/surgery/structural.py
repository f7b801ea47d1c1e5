"""Physically removing heads, channels, attention modules, blocks and residual
dimensions from a live model, through the family adapter.

Every operation builds smaller ``nn.Linear`` modules holding the kept rows/columns
(biases included), swaps them into the block and updates the attention module's head
counts, so the unmodified transformers forward runs on the smaller shapes. The masked
counterparts in :mod:`llmprune.surgery.masking` zero the same structures in place; the
two give the same logits (tested for every family).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LlmpruneError
from ..modeling.modeling_llmprune import IndexedLinear, NoAttention, set_submodule
from ..models.base import ModelAdapter

#: Attention attributes that hold head counts in the families we support.
HEAD_ATTRS = ("num_heads", "num_attention_heads")
KV_ATTRS = ("num_key_value_heads", "num_kv_heads")
GROUP_ATTRS = ("num_key_value_groups",)


def _index(idx: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(list(idx) if not isinstance(idx, torch.Tensor) else idx, dtype=torch.long, device=device)


def slice_linear(
    lin: nn.Linear,
    out_idx: Sequence[int] | torch.Tensor | None = None,
    in_idx: Sequence[int] | torch.Tensor | None = None,
    drop_bias: bool = False,
) -> nn.Linear:
    """A new linear keeping rows ``out_idx`` and columns ``in_idx`` of ``lin``.

    Residual index buffers of an :class:`IndexedLinear` follow the kept rows/columns.
    """
    W = lin.weight.data
    dev = W.device
    rows = _index(out_idx, dev) if out_idx is not None else None
    cols = _index(in_idx, dev) if in_idx is not None else None
    if rows is not None:
        W = W.index_select(0, rows)
    if cols is not None:
        W = W.index_select(1, cols)
    bias = None if (lin.bias is None or drop_bias) else lin.bias.data
    if bias is not None and rows is not None:
        bias = bias.index_select(0, rows)
    in_index = getattr(lin, "in_index", None)
    out_index = getattr(lin, "out_index", None)
    if in_index is not None and cols is not None:
        in_index = in_index.index_select(0, cols)
    if out_index is not None and rows is not None:
        out_index = out_index.index_select(0, rows)
    with warnings.catch_warnings():  # zero-width linears (all channels removed) are intended
        warnings.simplefilter("ignore", UserWarning)
        new = nn.Linear(W.shape[1], W.shape[0], bias=bias is not None, device=dev, dtype=W.dtype)
    with torch.no_grad():
        new.weight.copy_(W)
        if bias is not None:
            new.bias.copy_(bias)
    if in_index is not None or out_index is not None:
        new = _indexed(new, in_index, out_index, getattr(lin, "full_out", None))
    new.requires_grad_(lin.weight.requires_grad)
    return new


def _indexed(
    lin: nn.Linear, in_index: torch.Tensor | None, out_index: torch.Tensor | None, full_out: int | None
) -> IndexedLinear:
    """``lin``'s weights in an :class:`IndexedLinear` reading ``in_index`` and/or
    writing ``out_index`` of a ``full_out``-wide residual."""
    new = IndexedLinear(
        lin.in_features,
        lin.out_features,
        bias=lin.bias is not None,
        in_index=None if in_index is None else in_index.numel(),
        out_index=None if out_index is None else out_index.numel(),
        full_out=full_out,
        device=lin.weight.device,
        dtype=lin.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(lin.weight)
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
        if in_index is not None:
            assert new.in_index is not None
            new.in_index.copy_(in_index)
        if out_index is not None:
            assert new.out_index is not None
            new.out_index.copy_(out_index)
    return new


def _replace(block: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for name, module in block.named_modules():
        if module is old:
            set_submodule(block, name, new)
            return
    raise LlmpruneError("internal error: module to replace is not inside the block")


def _set_head_attrs(att: nn.Module, heads: int, kv: int) -> None:
    for name in HEAD_ATTRS:
        if hasattr(att, name):
            setattr(att, name, heads)
    for name in KV_ATTRS:
        if hasattr(att, name):
            setattr(att, name, kv)
    for name in GROUP_ATTRS:
        if hasattr(att, name):
            setattr(att, name, heads // kv if kv else 0)


def _check_indices(idx: Sequence[int], size: int, what: str, layer: int) -> list[int]:
    out = sorted(int(i) for i in idx)
    if len(set(out)) != len(out):
        raise LlmpruneError(f"layer {layer}: duplicate {what} indices")
    if out and (out[0] < 0 or out[-1] >= size):
        raise LlmpruneError(
            f"layer {layer}: {what} index out of range [0, {size}): {out[0] if out[0] < 0 else out[-1]}"
        )
    return out


def prune_heads(
    adapter: ModelAdapter,
    block: nn.Module,
    keep_kv: Sequence[int],
    keep_q: Sequence[int] | None = None,
    layer: int = -1,
) -> None:
    """Keep the KV heads ``keep_kv`` (whole GQA groups) and, optionally, only the query
    heads ``keep_q`` (global query-head indices) inside them.

    The grouping must stay valid: every kept KV group keeps the same number of query
    heads. With no KV head left the attention is replaced by :class:`NoAttention`
    (the output projection's bias survives).
    """
    att = adapter.attention(block)
    if att is None:
        raise LlmpruneError(f"layer {layer}: its attention was already removed")
    g, hd = att.group_size, att.head_dim
    keep_kv = _check_indices(keep_kv, att.num_kv_heads, "KV head", layer)
    if keep_q is None:
        keep_q = [kv * g + j for kv in keep_kv for j in range(g)]
    keep_q = _check_indices(keep_q, att.num_heads, "query head", layer)
    per_group = {kv: [q for q in keep_q if q // g == kv] for kv in keep_kv}
    stray = [q for q in keep_q if q // g not in per_group]
    if stray:
        raise LlmpruneError(f"layer {layer}: query heads {stray} belong to removed KV groups")
    sizes = {len(v) for v in per_group.values()}
    if len(sizes) > 1 or 0 in sizes:
        raise LlmpruneError(
            f"layer {layer}: every kept KV group must keep the same (non-zero) number of query heads, got "
            f"{ {kv: len(v) for kv, v in per_group.items()} }"
        )
    if not keep_kv:
        remove_attention(adapter, block, keep_bias=True, layer=layer)
        return
    q_rows = [q * hd + d for q in keep_q for d in range(hd)]
    kv_rows = [kv * hd + d for kv in keep_kv for d in range(hd)]
    _replace(block, att.q, slice_linear(att.q, out_idx=q_rows))
    _replace(block, att.k, slice_linear(att.k, out_idx=kv_rows))
    _replace(block, att.v, slice_linear(att.v, out_idx=kv_rows))
    _replace(block, att.o, slice_linear(att.o, in_idx=q_rows))
    _set_head_attrs(att.module, len(keep_q), len(keep_kv))


def remove_attention(adapter: ModelAdapter, block: nn.Module, keep_bias: bool = False, layer: int = -1) -> None:
    """Replace the block's attention by :class:`NoAttention` (optionally keeping the
    output projection's bias, which is what a zero-head attention still adds)."""
    att = adapter.attention(block)
    if att is None:
        return
    o: Any = att.o  # an nn.Linear or an IndexedLinear
    noop = NoAttention(
        o.out_features if getattr(o, "out_index", None) is None else o.full_out,
        att.head_dim,
        getattr(att.module, "layer_idx", max(layer, 0)),
        bias=keep_bias and o.bias is not None,
        device=o.weight.device,
        dtype=o.weight.dtype,
    )
    if noop.bias is not None:
        with torch.no_grad():
            full = torch.zeros_like(noop.bias)
            if getattr(o, "out_index", None) is not None:
                full.index_copy_(0, o.out_index, o.bias.data)
            else:
                full.copy_(o.bias.data)
            noop.bias.copy_(full)
    _replace(block, att.module, noop)


def prune_channels(adapter: ModelAdapter, block: nn.Module, keep: Sequence[int], layer: int = -1) -> None:
    """Keep the MLP intermediate channels ``keep`` (rows of gate/up, columns of down).
    Keeping none leaves zero-width linears: the block adds only the down bias."""
    mlp = adapter.mlp(block)
    keep = _check_indices(keep, mlp.channels, "MLP channel", layer)
    if mlp.gate is not None:
        _replace(block, mlp.gate, slice_linear(mlp.gate, out_idx=keep))
    _replace(block, mlp.up, slice_linear(mlp.up, out_idx=keep))
    _replace(block, mlp.down, slice_linear(mlp.down, in_idx=keep))


def remove_mlp(adapter: ModelAdapter, block: nn.Module, layer: int = -1) -> None:
    """Remove the block's MLP entirely (no channels, no bias): the block skips it."""
    mlp = adapter.mlp(block)
    if mlp.gate is not None:
        _replace(block, mlp.gate, slice_linear(mlp.gate, out_idx=[]))
    _replace(block, mlp.up, slice_linear(mlp.up, out_idx=[]))
    _replace(block, mlp.down, slice_linear(mlp.down, in_idx=[], drop_bias=True))


def _renumber(block: nn.Module, new_idx: int) -> None:
    for module in block.modules():
        m: Any = module
        if hasattr(m, "layer_idx") and isinstance(m.layer_idx, int):
            m.layer_idx = new_idx


def drop_blocks(adapter: ModelAdapter, indices: Sequence[int]) -> None:
    """Remove whole decoder blocks; renumber the rest (KV cache slots) and update the
    config's ``num_hidden_layers`` and ``layer_types``."""
    blocks = adapter.blocks()
    drop = set(_check_indices(indices, len(blocks), "block", -1))
    if len(drop) == len(blocks):
        raise LlmpruneError("cannot remove every block: keep at least one")
    kept = [i for i in range(len(blocks)) if i not in drop]
    new_blocks = [blocks[i] for i in kept]
    for j, block in enumerate(new_blocks):
        _renumber(block, j)
    blocks_parent = adapter.decoder()
    for name, module in blocks_parent.named_children():
        if module is blocks:
            setattr(blocks_parent, name, nn.ModuleList(new_blocks))
            break
    config = adapter.config
    config.num_hidden_layers = len(kept)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(blocks):
        config.layer_types = [layer_types[i] for i in kept]


def slice_residual(
    adapter: ModelAdapter,
    block: nn.Module,
    attn_in: Sequence[int] | None = None,
    attn_out: Sequence[int] | None = None,
    mlp_in: Sequence[int] | None = None,
    mlp_out: Sequence[int] | None = None,
    layer: int = -1,
) -> None:
    """DISP-style residual selection: the attention (MLP) reads only the residual
    dimensions ``*_in`` of its normed input and writes only ``*_out``.

    Implemented on the input linears (``IndexedLinear.in_index``) and the output
    projection (``out_index`` scattered back to full width before the residual add),
    so the stock block forward is unchanged.
    """
    hidden = adapter.config.hidden_size
    att = adapter.attention(block)
    mlp = adapter.mlp(block)

    def reader(lin: nn.Linear, keep: Sequence[int], what: str) -> nn.Linear:
        keep = _check_indices(keep, hidden, what, layer)
        if getattr(lin, "in_index", None) is not None:
            raise LlmpruneError(f"layer {layer}: {what} dimensions were already selected")
        new = slice_linear(lin, in_idx=keep)
        return _indexed(
            new,
            in_index=torch.as_tensor(keep, dtype=torch.long),
            out_index=getattr(new, "out_index", None),
            full_out=getattr(new, "full_out", None),
        )

    def writer(lin: nn.Linear, keep: Sequence[int], what: str) -> nn.Linear:
        keep = _check_indices(keep, hidden, what, layer)
        if getattr(lin, "out_index", None) is not None:
            raise LlmpruneError(f"layer {layer}: {what} dimensions were already selected")
        new = slice_linear(lin, out_idx=keep)
        return _indexed(
            new,
            in_index=getattr(new, "in_index", None),
            out_index=torch.as_tensor(keep, dtype=torch.long),
            full_out=hidden,
        )

    if att is not None and attn_in is not None:
        for lin in (att.q, att.k, att.v):
            _replace(block, lin, reader(lin, attn_in, "attention input"))
    if att is not None and attn_out is not None:
        _replace(block, att.o, writer(att.o, attn_out, "attention output"))
    if mlp_in is not None:
        for lin in ([mlp.gate] if mlp.gate is not None else []) + [mlp.up]:
            _replace(block, lin, reader(lin, mlp_in, "MLP input"))
    if mlp_out is not None:
        _replace(block, mlp.down, writer(mlp.down, mlp_out, "MLP output"))
