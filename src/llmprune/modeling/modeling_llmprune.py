"""Heterogeneous pruned checkpoints on top of the installed transformers classes.

This file is self-contained (torch + transformers only) because it is also copied into
every heterogeneous checkpoint that llmprune writes, where
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` imports it. It
vendors no modeling code: the stock family class (``LlamaForCausalLM``,
``OPTForCausalLM``, ...) builds the model from the global config, then
:func:`apply_layout` resizes each decoder block to the widths recorded in
``config.llmprune_layout``:

- every linear of a block gets its recorded ``[out, in]`` shape and bias;
- a linear may read a subset of the residual stream (``in_index``) or write into a
  subset of it (``out_index``): DISP-style dimension-independent blocks, where a block
  reads ``index_select(norm(x), I_in)`` and writes ``x.index_add(-1, I_out, out)``;
- attention modules get their per-layer head counts (``num_key_value_groups`` ...);
- a block whose attention was removed entirely gets :class:`NoAttention`.

Blocks that were removed are simply absent: the config's ``num_hidden_layers`` (and
``layer_types``) already count only the kept blocks.

Why not ``config.per_layer_config``: transformers 5 parses that field but its stock
modeling classes still build every layer from the global config, and reading a
per-layer attribute from a heterogeneous global config raises. Our own field keeps the
global config valid for the stock constructor, and the resize below is the whole
"modeling code".
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LAYOUT_KEY = "llmprune_layout"
LAYOUT_VERSION = 1


class IndexedLinear(nn.Linear):
    """A linear that reads ``x[..., in_index]`` and/or writes its outputs into positions
    ``out_index`` of a zero vector of width ``full_out`` (so a residual add after it is
    ``x.index_add(-1, out_index, y)``). Indices are persistent buffers (saved)."""

    in_index: torch.Tensor | None
    out_index: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        in_index: int | None = None,
        out_index: int | None = None,
        full_out: int | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        idx_device = None if device is None else device
        self.full_out: int | None = None
        if in_index is not None:
            self.register_buffer("in_index", torch.zeros(in_index, dtype=torch.long, device=idx_device))
        else:
            self.in_index = None
        if out_index is not None:
            self.register_buffer("out_index", torch.zeros(out_index, dtype=torch.long, device=idx_device))
            assert full_out is not None, "out_index needs full_out"
            self.full_out = int(full_out)
        else:
            self.out_index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_index is not None:
            x = x.index_select(-1, self.in_index)
        y = F.linear(x, self.weight, self.bias)
        if self.out_index is None or self.full_out is None:  # both are set together
            return y
        out = y.new_zeros(*y.shape[:-1], self.full_out)
        return out.index_copy_(-1, self.out_index, y)

    def extra_repr(self) -> str:
        extra = super().extra_repr()
        if self.in_index is not None:
            extra += f", reads {self.in_index.numel()} residual dims"
        if self.out_index is not None:
            extra += f", writes {self.out_index.numel()} of {self.full_out} residual dims"
        return extra


class NoAttention(nn.Module):
    """Stands in for an attention module whose heads were all removed.

    Returns zeros (or the output projection's bias, which is all that remains of an
    attention with no heads) and keeps the KV cache's sequence length right by
    appending keys and values of one zero head of width 1 for this layer (transformers'
    cache layers report an empty tensor as length 0, which would shift the positions of
    every later token when this is the first block).
    """

    def __init__(
        self, hidden_size: int, head_dim: int, layer_idx: int, bias: bool = False, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.bias: nn.Parameter | None = None
        if bias:
            self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype))

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        # transformers >= 5.24 passes the cache as ``cache``; older releases as ``past_key_values``
        cache = next(
            (kwargs[k] for k in ("cache", "past_key_values", "past_key_value") if kwargs.get(k) is not None), None
        )
        if cache is not None and hasattr(cache, "update"):
            b, s = hidden_states.shape[0], hidden_states.shape[1]
            placeholder = hidden_states.new_zeros(b, 1, s, 1)
            cache.update(placeholder, placeholder, self.layer_idx)
        out = torch.zeros_like(hidden_states)
        if self.bias is not None:
            out = out + self.bias
        return out, None

    def extra_repr(self) -> str:
        return f"removed attention, layer {self.layer_idx}"


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(get_submodule(root, parent_path), name, module)


def build_linear(spec: dict, like: nn.Module | None) -> nn.Linear:
    """A fresh linear with the recorded shape (values are loaded afterwards)."""
    out_f, in_f = spec["shape"]
    kw: dict[str, Any] = {}
    if like is not None and hasattr(like, "weight"):
        kw = {"device": like.weight.device, "dtype": like.weight.dtype}
    if spec.get("in_index") is not None or spec.get("out_index") is not None:
        return IndexedLinear(
            in_f,
            out_f,
            bias=spec["bias"],
            in_index=spec.get("in_index"),
            out_index=spec.get("out_index"),
            full_out=spec.get("full_out"),
            **kw,
        )
    with warnings.catch_warnings():  # zero-width linears (all channels removed) are intended
        warnings.simplefilter("ignore", UserWarning)
        return nn.Linear(in_f, out_f, bias=spec["bias"], **kw)


def apply_layout(model: nn.Module, layout: dict) -> nn.Module:
    """Resize ``model`` (built from the global config) to the recorded per-block widths."""
    if layout.get("version") != LAYOUT_VERSION:
        raise ValueError(f"unsupported llmprune layout version {layout.get('version')!r}: upgrade llmprune")
    blocks: Any = get_submodule(model, layout["blocks_path"])
    if len(blocks) != len(layout["layers"]):
        raise ValueError(
            f"llmprune layout lists {len(layout['layers'])} blocks but the config builds {len(blocks)}: "
            "the checkpoint's config.json is inconsistent"
        )
    for block, spec in zip(blocks, layout["layers"]):
        removed = spec.get("no_attention")
        if removed is not None:
            old = get_submodule(block, removed["path"])
            ref = next(iter(old.parameters()), None)
            set_submodule(
                block,
                removed["path"],
                NoAttention(
                    removed["hidden_size"],
                    removed["head_dim"],
                    getattr(old, "layer_idx", removed["layer_idx"]),
                    bias=removed["bias"],
                    device=None if ref is None else ref.device,
                    dtype=None if ref is None else ref.dtype,
                ),
            )
        for path, lspec in spec.get("linears", {}).items():
            old = get_submodule(block, path)
            set_submodule(block, path, build_linear(lspec, old))
        for path, value in spec.get("attrs", {}).items():
            owner_path, _, name = path.rpartition(".")
            setattr(get_submodule(block, owner_path), name, value)
    return model


def pruned_class(base: Any) -> type:
    """A subclass of the stock ``base`` causal-LM class that applies the layout."""

    def __init__(self, config, *args, **kwargs):  # noqa: N807
        base.__init__(self, config, *args, **kwargs)
        layout = getattr(config, LAYOUT_KEY, None)
        if layout:
            apply_layout(self, layout)

    return type(f"Llmprune{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__})
