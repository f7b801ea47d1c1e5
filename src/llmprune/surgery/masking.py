"""Masked (zeroed, same-shape) counterparts of every structural operation.

A structure is masked by zeroing what it writes: the output-projection columns of a
head, the down-projection columns of a channel, the output projection (weight and
bias) of a removed module, the input columns / output rows of unselected residual
dimensions. Masked and physically pruned models compute the same function; the
surgery tests compare their logits.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.base import ModelAdapter


def _zero_cols(lin: nn.Linear, cols: Sequence[int]) -> None:
    if len(cols):
        with torch.no_grad():
            lin.weight[:, torch.as_tensor(list(cols), dtype=torch.long)] = 0


def mask_heads(
    adapter: ModelAdapter, block: nn.Module, keep_kv: Sequence[int], keep_q: Sequence[int] | None = None
) -> None:
    """Zero the output-projection columns of every query head not kept."""
    att = adapter.attention(block)
    assert att is not None, "the block has no attention to mask"
    g, hd = att.group_size, att.head_dim
    if keep_q is None:
        keep_q = [kv * g + j for kv in keep_kv for j in range(g)]
    keep = set(int(q) for q in keep_q)
    cols = [q * hd + d for q in range(att.num_heads) if q not in keep for d in range(hd)]
    _zero_cols(att.o, cols)


def _zero_linear(lin: nn.Linear) -> None:
    with torch.no_grad():
        lin.weight.zero_()
        if lin.bias is not None:
            lin.bias.zero_()


def mask_attention(adapter: ModelAdapter, block: nn.Module) -> None:
    """Zero the whole attention output (weight and bias)."""
    att = adapter.attention(block)
    assert att is not None, "the block has no attention to mask"
    _zero_linear(att.o)


def mask_channels(adapter: ModelAdapter, block: nn.Module, keep: Sequence[int]) -> None:
    """Zero the down-projection columns of every MLP channel not kept."""
    mlp = adapter.mlp(block)
    kept = set(int(c) for c in keep)
    _zero_cols(mlp.down, [c for c in range(mlp.channels) if c not in kept])


def mask_mlp(adapter: ModelAdapter, block: nn.Module) -> None:
    """Zero the whole MLP output (weight and bias)."""
    _zero_linear(adapter.mlp(block).down)


def mask_block(adapter: ModelAdapter, block: nn.Module) -> None:
    """Make a block the identity on the residual stream."""
    if adapter.attention(block) is not None:
        mask_attention(adapter, block)
    mask_mlp(adapter, block)


def mask_residual(
    adapter: ModelAdapter,
    block: nn.Module,
    attn_in: Sequence[int] | None = None,
    attn_out: Sequence[int] | None = None,
    mlp_in: Sequence[int] | None = None,
    mlp_out: Sequence[int] | None = None,
) -> None:
    """Zero the input columns (outputs rows) of residual dimensions a module does not
    read (write)."""
    hidden = adapter.config.hidden_size
    att, mlp = adapter.attention(block), adapter.mlp(block)

    def others(keep: Sequence[int]) -> list[int]:
        k = set(int(i) for i in keep)
        return [i for i in range(hidden) if i not in k]

    with torch.no_grad():
        if att is not None and attn_in is not None:
            for lin in (att.q, att.k, att.v):
                _zero_cols(lin, others(attn_in))
        if att is not None and attn_out is not None:
            rows = torch.as_tensor(others(attn_out), dtype=torch.long)
            att.o.weight[rows] = 0
            if att.o.bias is not None:
                att.o.bias[rows] = 0
        if mlp_in is not None:
            for lin in ([mlp.gate] if mlp.gate is not None else []) + [mlp.up]:
                _zero_cols(lin, others(mlp_in))
        if mlp_out is not None:
            rows = torch.as_tensor(others(mlp_out), dtype=torch.long)
            mlp.down.weight[rows] = 0
            if mlp.down.bias is not None:
                mlp.down.bias[rows] = 0
