"""Describe a (possibly heterogeneous) pruned model so that it reloads.

Three outcomes, checked by rebuilding on the ``meta`` device and comparing every
parameter shape with the live model:

- ``dense``: shapes are those of the model's own config (unstructured pruning);
- ``stock``: every block has the same widths and the family's config can express
  them (e.g. ``num_attention_heads``/``intermediate_size``): a plain config that loads
  with stock transformers, no remote code;
- ``block_configs``: per-block MLP widths, removed attention/MLP/blocks of a LLaMA-style
  model: the DeciLM / Nemotron-NAS format that vLLM serves (:mod:`llmprune.export.decilm`);
- ``layout``: anything else (removed query heads, residual index sets, other families):
  the config keeps the global dense values and gains ``llmprune_layout``; the checkpoint
  carries ``modeling_llmprune.py`` for ``trust_remote_code`` loading.

``plan_export(..., fmt=...)`` forces one of them (``llmprune export --format``) and
refuses, with the reason, when the model cannot be written that way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import LlmpruneError
from ..models.base import ModelAdapter, stock_architecture
from ..modeling.modeling_llmprune import LAYOUT_KEY, LAYOUT_VERSION, NoAttention, pruned_class
from ..surgery.structural import GROUP_ATTRS, HEAD_ATTRS, KV_ATTRS


#: ``--format`` names (what the user asks for) and the kinds they allow
FORMATS = {
    "auto": ("dense", "stock", "block_configs", "layout"),
    "vllm": ("block_configs",),
    "stock": ("dense", "stock"),
    "layout": ("layout",),
}


@dataclass
class ExportPlan:
    kind: str  # "dense" | "stock" | "block_configs" | "layout"
    config_updates: dict[str, Any]
    #: why vLLM cannot serve the written checkpoint (None when it can)
    vllm_obstacle: str | None = None


def _path_of(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise LlmpruneError("internal error: module not found in model")


def _linear_spec(lin: nn.Linear) -> dict:
    spec: dict[str, Any] = {"shape": [lin.out_features, lin.in_features], "bias": lin.bias is not None}
    in_index = getattr(lin, "in_index", None)
    out_index = getattr(lin, "out_index", None)
    if in_index is not None:
        spec["in_index"] = int(in_index.numel())
    if out_index is not None:
        spec["out_index"] = int(out_index.numel())
        spec["full_out"] = int(getattr(lin, "full_out"))  # noqa: B009 (an IndexedLinear's plain int)
    return spec


def describe_layout(model: nn.Module, adapter: ModelAdapter) -> dict:
    """The ``llmprune_layout`` record of ``model``'s current per-block shapes."""
    layers = []
    for block in adapter.blocks():
        spec: dict[str, Any] = {"linears": {}, "attrs": {}}
        for name, module in block.named_modules():
            if isinstance(module, NoAttention):
                spec["no_attention"] = {
                    "path": name,
                    "hidden_size": module.hidden_size,
                    "head_dim": module.head_dim,
                    "layer_idx": module.layer_idx,
                    "bias": module.bias is not None,
                }
            elif isinstance(module, nn.Linear):
                spec["linears"][name] = _linear_spec(module)
        att = adapter.attention(block)
        if att is not None:
            att_path = _path_of(block, att.module)
            for attr in HEAD_ATTRS + KV_ATTRS + GROUP_ATTRS:
                if hasattr(att.module, attr):
                    spec["attrs"][f"{att_path}.{attr}" if att_path else attr] = int(getattr(att.module, attr))
        layers.append(spec)
    return {
        "version": LAYOUT_VERSION,
        "base_architecture": stock_architecture(model),
        "blocks_path": _path_of(model, adapter.blocks()),
        "layers": layers,
    }


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    out = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return out


def _meta_build(model: nn.Module, config) -> nn.Module:
    cls = type(model)
    layout = getattr(config, LAYOUT_KEY, None)
    if layout:
        cls = pruned_class(cls)
    with torch.device("meta"):
        return cls(config)


def _matches(model: nn.Module, config) -> bool:
    try:
        ref = _meta_build(model, config)
    except Exception:
        return False
    return _shapes(ref) == _shapes(model)


def _widths(adapter: ModelAdapter) -> list[tuple[int, int, int, int] | None]:
    out = []
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        out.append(None if att is None else (att.num_heads, att.num_kv_heads, att.head_dim, mlp.channels))
    return out


def _uniform_widths(adapter: ModelAdapter) -> tuple[int, int, int, int] | None:
    widths = set(_widths(adapter))
    return widths.pop() if len(widths) == 1 and None not in widths else None


def _not_uniform(adapter: ModelAdapter) -> str:
    """The first block whose widths differ from block 0's (for the stock refusal)."""
    names = ("query heads", "KV heads", "head_dim", "MLP channels")
    widths = _widths(adapter)
    first = widths[0] if widths else None
    for i, w in enumerate(widths):
        if w is None:
            return f"block {i} has no attention"
        if first is not None and w != first:
            k = next(j for j in range(4) if w[j] != first[j])
            return f"block {i} has {w[k]} {names[k]} but block 0 has {first[k]}"
    return "the family's config cannot express these widths"


def plan_export(model: nn.Module, adapter: ModelAdapter, fmt: str = "auto") -> ExportPlan:
    """Decide how ``model`` is saved so that it reloads with the same shapes: the first
    kind of ``FORMATS[fmt]`` that can express it, or a one-line error naming why none can."""
    from .decilm import obstacle

    if fmt not in FORMATS:
        raise LlmpruneError(f"unknown export format {fmt!r}: use one of {', '.join(f for f in FORMATS if f != 'auto')}")
    kinds = FORMATS[fmt]
    hf: Any = model
    config: Any = copy.deepcopy(hf.config)
    for key in (LAYOUT_KEY, "auto_map"):
        if hasattr(config, key):
            delattr(config, key)
    dense = _matches(model, config)
    if dense and "dense" in kinds:
        return ExportPlan("dense", {})
    if "stock" in kinds:
        widths = _uniform_widths(adapter)
        updates = adapter.uniform_config(*widths) if widths is not None else None
        if updates is not None:
            for k, v in updates.items():
                setattr(config, k, v)
            if _matches(model, config):
                from .decilm import stock_obstacle

                probe = copy.copy(model)
                probe.config = config
                return ExportPlan("stock", updates, vllm_obstacle=stock_obstacle(probe))
        if fmt == "stock":
            why = (
                _not_uniform(adapter)
                if widths is None
                else f"the {config.model_type} config cannot express these widths"
            )
            raise LlmpruneError(
                f"cannot write a stock config: {why}; a stock config has the same widths in "
                "every block (use --format vllm or --format layout)"
            )
    reason = obstacle(model, adapter)
    if "block_configs" in kinds:
        if reason is None:
            return ExportPlan("block_configs", {})
        if fmt == "vllm":
            raise LlmpruneError(f"cannot write the vLLM format: {reason} (use --format layout)")
    config = copy.deepcopy(hf.config)
    layout = describe_layout(model, adapter)
    setattr(config, LAYOUT_KEY, layout)
    if not _matches(model, config):
        raise LlmpruneError("internal error: the recorded layout does not rebuild the pruned model's shapes")
    return ExportPlan("layout", {LAYOUT_KEY: layout}, vllm_obstacle=reason)
