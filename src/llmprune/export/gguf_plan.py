"""Which llama.cpp architecture can run a (pruned) model, and with which per-layer widths.

Findings from llama.cpp's loader and graph builders (``src/llama-model.cpp``,
``src/models/*.cpp``; see docs/llamacpp.md):

- the loader reads ``{arch}.attention.head_count``, ``head_count_kv`` and
  ``feed_forward_length`` as a scalar *or* a per-layer array for every architecture,
  but the ``llama`` and ``qwen2`` tensor loaders and graphs use the layer-0 value for
  all layers: they run dense and *uniformly* pruned models only (``qwen2`` moreover
  assumes ``heads * head_dim == hidden size``; a Qwen2 with pruned heads is written as
  ``llama``, which takes q/k/v biases as well);
- ``deci`` (DeciLM / Llama-Nemotron) sizes every layer's tensors and graph from its own
  entries, runs a layer with ``head_count == 0`` as attention-free (FFN only) and
  takes optional q/k/v/o and FFN biases. Two quirks shape what we write:
  a layer with ``feed_forward_length == 0`` is skipped *including its attention*, so a
  block that kept attention but lost its whole MLP gets one zero FFN channel (exact:
  its output is 0); and the head size is derived from layer 0's head count, so an
  attention-free layer 0 gets one zero-weight head (exact: ``attn_output`` is 0);
- no architecture reads a block from, or writes it to, a *subset* of the residual
  stream (DISP's index sets), so those models are refused.

``llama`` and ``deci`` apply RoPE to consecutive pairs of a head (``LLAMA_ROPE_TYPE_NORM``)
while Hugging Face rotates the two halves of a head, so their q/k rows are permuted
(:func:`rope_pairs_permutation`); ``qwen2`` uses the halves convention (NEOX) as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from ..modeling.modeling_llmprune import IndexedLinear, NoAttention

#: Hugging Face ``model_type`` -> llama.cpp architecture for dense / uniform models.
UNIFORM_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}
#: Architectures whose RoPE rotates consecutive pairs (q/k rows are permuted).
PAIRED_ROPE = {"llama", "deci"}


@dataclass
class LayerPlan:
    """One written block: its source block index and llama.cpp widths."""

    block: int
    heads: int
    kv_heads: int
    ff: int
    attention: bool = True  # False: attention-free (no attn_* tensors)
    dummy_attention: bool = False  # one zero head stands in (attention-free layer 0 in deci)
    zero_ffn: bool = False  # one zero channel stands in for a removed MLP (deci skips n_ff == 0 layers)
    ff_pad: int = 0  # zero channels appended (included in ``ff``) so the FFN width splits into quantization blocks


@dataclass
class GgufPlan:
    arch: str
    head_dim: int
    layers: list[LayerPlan] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def per_layer(self) -> bool:
        return self.arch == "deci"


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    scaling = getattr(config, "rope_scaling", None)
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) != "default":
        kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ("default", None):
        raise LlmpruneError(
            f"GGUF export: RoPE scaling {kind!r} is not implemented (only plain RoPE): export to safetensors instead"
        )
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def rope_theta(config) -> float:
    """The RoPE base frequency; non-default RoPE scaling is a one-line error."""
    return _rope_theta(config)


def check_family(model: nn.Module) -> str:
    """The model's ``model_type`` if GGUF export supports it, else a one-line error."""
    config = model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in UNIFORM_ARCH:
        raise LlmpruneError(
            f"GGUF export supports LLaMA-layout models (llama, mistral, SmolLM2) and qwen2; {model_type!r} is not "
            "supported: export it to safetensors (llmprune prune --out DIR) instead"
        )
    if model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        raise LlmpruneError(
            "GGUF export: Mistral with sliding-window attention has no llama.cpp mapping here: "
            "export to safetensors instead"
        )
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise LlmpruneError(
            f"GGUF export: activation {act!r} is not SiLU, which llama.cpp's llama/qwen2/deci "
            "graphs assume: export to safetensors instead"
        )
    _rope_theta(config)
    return model_type


def _refuse_residual_subsets(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, IndexedLinear):
            raise LlmpruneError(
                f"GGUF export: {name} reads or writes a subset of the residual stream (DISP-style dimension-"
                "independent blocks); no llama.cpp architecture can express that: keep the safetensors export"
            )


def plan_gguf(model: nn.Module, adapter: ModelAdapter, ff_multiple: int = 1) -> GgufPlan:
    """The architecture and per-layer widths to write, or a one-line error. With
    ``ff_multiple`` > 1 every FFN width is padded with zero channels to a multiple of it
    (exact: a zero gate/up row and down column add 0), so that llama.cpp's quantizer can
    split ``ffn_down``'s rows into blocks instead of keeping the matrix in float16, and its
    fast matrix kernels apply."""
    plan = _plan(model, adapter)
    if ff_multiple > 1:
        padded = 0
        for layer in plan.layers:
            layer.ff_pad = -layer.ff % ff_multiple
            layer.ff += layer.ff_pad
            padded += layer.ff_pad > 0
        if padded:
            plan.notes.append(
                f"FFN width of {padded} layer(s) padded with zero channels to a multiple of {ff_multiple} "
                "(exact) for llama.cpp's quantization blocks and matrix kernels"
            )
    return plan


def _plan(model: nn.Module, adapter: ModelAdapter) -> GgufPlan:
    model_type = check_family(model)
    _refuse_residual_subsets(model)
    config: Any = model.config
    head_dim = None
    raw = []
    for i, block in enumerate(adapter.blocks()):
        att, mlp = adapter.attention(block), adapter.mlp(block)
        if att is None or att.num_heads == 0:
            gone = getattr(block, "self_attn", None)
            bias = getattr(gone, "bias", None) if isinstance(gone, NoAttention) or att is None else att.o.bias
            if isinstance(bias, torch.Tensor) and bool(torch.any(bias != 0)):
                raise LlmpruneError(
                    f"GGUF export: block {i} lost its attention but keeps an output bias; "
                    "llama.cpp's attention-free layer adds none: keep the safetensors export"
                )
            raw.append((i, 0, 0, mlp.channels))
            continue
        if head_dim is None:
            head_dim = att.head_dim
        elif att.head_dim != head_dim:
            raise LlmpruneError(
                f"GGUF export: head size differs between layers ({head_dim} vs {att.head_dim} in "
                f"block {i}); llama.cpp has one head size per model"
            )
        raw.append((i, att.num_heads, att.num_kv_heads, mlp.channels))
    if head_dim is None:
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    if head_dim % 2:
        raise LlmpruneError(f"GGUF export: head size {head_dim} is odd; RoPE needs an even head size")
    notes: list[str] = []
    kept = [r for r in raw if r[1] or r[3]]
    if len(kept) < len(raw):
        notes.append(f"{len(raw) - len(kept)} block(s) with neither attention nor MLP left out (identity)")
    if not kept:
        raise LlmpruneError("GGUF export: every block is empty (no attention, no MLP): nothing to run")
    widths = {(h, kv, ff) for _, h, kv, ff in kept}
    uniform = len(widths) == 1 and all(h > 0 and ff > 0 for _, h, _, ff in kept)
    if uniform:
        layers = [LayerPlan(i, h, kv, ff) for i, h, kv, ff in kept]
        arch = UNIFORM_ARCH[model_type]
        if arch == "qwen2" and layers[0].heads * head_dim != config.hidden_size:
            arch = "llama"  # llama.cpp's qwen2 loader assumes q width == hidden size; llama takes q/k/v biases too
            notes.append("qwen2 with pruned query heads written as llama (q/k rows permuted to paired RoPE)")
        return GgufPlan(arch, head_dim, layers, notes)
    layers = []
    for pos, (i, h, kv, ff) in enumerate(kept):
        layer = LayerPlan(i, h, kv, ff, attention=h > 0)
        if h == 0 and pos == 0:
            layer.heads, layer.kv_heads, layer.dummy_attention = 1, 1, True
            notes.append(
                f"block {i}: attention-free first layer written with one zero-weight head "
                "(llama.cpp derives the head size from layer 0)"
            )
        if ff == 0:
            layer.ff, layer.zero_ffn = 1, True
            notes.append(
                f"block {i}: removed MLP written as one zero channel (llama.cpp's deci graph skips a "
                "layer with no FFN, attention included)"
            )
        layers.append(layer)
    return GgufPlan("deci", head_dim, layers, notes)


def rope_pairs_permutation(rows: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder q/k projection rows (and biases) of each head from the halves layout
    ``[x_0..x_{d/2-1}, y_0..y_{d/2-1}]`` (Hugging Face ``rotate_half``) to consecutive
    pairs ``[x_0, y_0, x_1, y_1, ...]`` (llama.cpp's NORM RoPE): new row ``2i + j`` of a
    head is old row ``j * d/2 + i``."""
    if n_heads == 0:
        return rows
    d = rows.shape[0] // n_heads
    return rows.reshape(n_heads, 2, d // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)
