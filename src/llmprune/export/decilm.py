"""The vLLM-servable per-layer format: DeciLM / Nemotron-NAS ``block_configs``.

vLLM (like SGLang, MLX-LM and llama.cpp's converter) serves one heterogeneous LLaMA
layout: ``architectures: ["DeciLMForCausalLM"]``, ``model_type: "nemotron-nas"`` and one
``block_configs`` entry per decoder block (NVIDIA's Llama-3.x-Nemotron-NAS checkpoints).
Per block it can express exactly:

- the MLP width (``ffn.intermediate_size``) or a removed MLP (``ffn.no_op``, which also
  drops the post-attention norm);
- a removed attention (``attention.no_op``, which also drops the input norm) or an
  attention with ``num_attention_heads // n_heads_in_group`` KV heads;
- a removed block (simply absent, ``num_hidden_layers`` counts the kept ones).

The hidden size, the query-head count and ``head_dim`` stay global, so removed query
heads, residual-dimension selection (DISP), non-LLaMA blocks or sliding-window attention
are not expressible; :func:`obstacle` names the first block that is not. Weights keep
LLaMA's names. The checkpoint carries llmprune's own small config and modeling files
(``llmprune/modeling/configuration_llmprune_decilm.py`` and ``modeling_llmprune_decilm.py``) for
``trust_remote_code`` loading with transformers; vLLM takes only the config class from
them and computes with its own DeciLM implementation. The family's original config is
kept under ``llmprune_base_config`` so that :func:`llmprune.models.decilm.internal_config` rebuilds the model as
the stock family class plus ``llmprune_layout`` (what the pruning code works on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import ModelAdapter, stock_architecture
from ..modeling.modeling_llmprune import LAYOUT_KEY, NoAttention
from ..models.decilm import (
    LLAMA_KEYS,
    ARCHITECTURE,
    AUTO_MAP,
    BASE_KEY,
    CONFIG_FILE,
    LLAMA_STYLE,
    MODEL_TYPE,
    MODELING_FILE,
)

_SHARED_BOUNDS = "vLLM's per-layer format (DeciLM block_configs) keeps the hidden size global"


def _indexed(lin: nn.Linear | None) -> bool:
    return lin is not None and (
        getattr(lin, "in_index", None) is not None or getattr(lin, "out_index", None) is not None
    )


def _sliding(config) -> bool:
    if getattr(config, "use_sliding_window", False):
        return True
    if config.model_type == "mistral" and getattr(config, "sliding_window", None):
        return True
    return any(t != "full_attention" for t in (getattr(config, "layer_types", None) or []))


def _biases(adapter: ModelAdapter) -> dict[str, bool]:
    """q/k/v, o and MLP bias flags read from the first block that has each part."""
    flags: dict[str, bool] = {}
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        if att is not None and "qkv" not in flags:
            flags["qkv"] = att.q.bias is not None
            flags["o"] = att.o.bias is not None
        if mlp.channels and "mlp" not in flags:
            flags["mlp"] = mlp.up.bias is not None
    return {"qkv": flags.get("qkv", False), "o": flags.get("o", False), "mlp": flags.get("mlp", False)}


def stock_obstacle(model: nn.Module) -> str | None:
    """Why vLLM cannot serve ``model``'s stock config (None when it can): vLLM 0.32's Qwen2
    derives ``head_dim`` from ``hidden_size / num_attention_heads`` (measured)."""
    config: Any = model.config
    head_dim = getattr(config, "head_dim", None)
    if config.model_type == "qwen2" and head_dim and head_dim * config.num_attention_heads != config.hidden_size:
        return (
            f"vLLM's Qwen2 derives head_dim from hidden_size / num_attention_heads "
            f"({config.hidden_size} / {config.num_attention_heads}), not the config's {head_dim}; "
            "`llmprune export DIR --format vllm --out NEW` writes a servable copy"
        )
    return None


def obstacle(model: nn.Module, adapter: ModelAdapter) -> str | None:
    """Why ``model`` cannot be written as ``block_configs`` (None when it can): the
    family, or the first block that is not expressible."""
    config: Any = model.config
    family = getattr(config, "model_type", None)
    if family not in LLAMA_STYLE:
        return (
            f"the {family} family is not LLaMA-style; vLLM's per-layer format (DeciLM block_configs) "
            f"describes LLaMA blocks only ({', '.join(LLAMA_STYLE)})"
        )
    if _sliding(config):
        return "the model uses sliding-window attention, which vLLM's per-layer format does not describe"
    heads, head_dim = config.num_attention_heads, getattr(config, "head_dim", None)
    bias = _biases(adapter)
    any_attention = False
    for i, block in enumerate(adapter.blocks()):
        att, mlp = adapter.attention(block), adapter.mlp(block)
        if att is None and mlp.channels and not any_attention:
            # vLLM's DeciLM forward starts the residual in the first attention block; an MLP
            # before it gets no residual from the fused norm (measured: vLLM 0.32 fails)
            return (
                f"block {i} keeps its MLP but no attention and no earlier block has attention; vLLM's "
                "DeciLM code needs an attention block before the first MLP"
            )
        if any(_indexed(lin) for lin in (mlp.up, mlp.down) + ((att.q, att.o) if att is not None else ())):
            return f"block {i} reads or writes a subset of the residual stream; {_SHARED_BOUNDS}"
        if att is None:
            removed = next((m for m in block.modules() if isinstance(m, NoAttention)), None)
            if removed is not None and removed.bias is not None:
                return (
                    f"block {i} removed its attention but keeps the output-projection bias, which "
                    "vLLM's per-layer format cannot hold"
                )
        else:
            any_attention = True
            if att.num_heads != heads:
                return (
                    f"block {i} removes query heads ({att.num_heads} of {heads} kept); vLLM's per-layer "
                    "format keeps the query-head count global"
                )
            if head_dim is not None and att.head_dim != head_dim:
                return f"block {i} has head_dim {att.head_dim}, not the global {head_dim}"
            if {lin.bias is not None for lin in (att.q, att.k, att.v)} != {bias["qkv"]} or (
                att.o.bias is not None
            ) != bias["o"]:
                return f"block {i} has different attention biases than the other blocks"
        if mlp.channels == 0:
            if mlp.down.bias is not None:
                return (
                    f"block {i} removed all MLP channels but keeps the down-projection bias, which "
                    "vLLM's per-layer format cannot hold"
                )
        elif {lin.bias is not None for lin in (mlp.gate, mlp.up, mlp.down) if lin is not None} != {bias["mlp"]}:
            return f"block {i} has different MLP biases than the other blocks"
    if not any_attention:
        return "every block's attention is removed; vLLM needs at least one attention layer"
    return None


def block_configs(adapter: ModelAdapter, heads: int) -> list[dict]:
    """One ``{"attention": ..., "ffn": ...}`` entry per block of an expressible model."""
    out = []
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        attention: dict[str, Any] = {
            "no_op": att is None,
            "replace_with_linear": False,
            "n_heads_in_group": None if att is None else heads // att.num_kv_heads,
        }
        ffn: dict[str, Any] = {
            "no_op": mlp.channels == 0,
            "replace_with_linear": False,
            "intermediate_size": mlp.channels or None,
        }
        out.append({"attention": attention, "ffn": ffn})
    return out


def _clean_family_config(model: nn.Module) -> dict:
    hf: Any = model
    base = hf.config.to_dict()
    for key in (LAYOUT_KEY, "auto_map", "quantization_config", "_name_or_path"):
        base.pop(key, None)
    base["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    base["architectures"] = [stock_architecture(model)]
    return base


def decilm_config(model: nn.Module, adapter: ModelAdapter) -> dict:
    """The ``config.json`` of the ``block_configs`` checkpoint of an expressible model."""
    base = _clean_family_config(model)
    config = {k: base[k] for k in LLAMA_KEYS if k in base}
    hf: Any = model
    heads = hf.config.num_attention_heads
    blocks = block_configs(adapter, heads)
    kv = next(heads // b["attention"]["n_heads_in_group"] for b in blocks if not b["attention"]["no_op"])
    widths = [b["ffn"]["intermediate_size"] for b in blocks if not b["ffn"]["no_op"]]
    bias = _biases(adapter)
    config.update(
        {
            "architectures": [ARCHITECTURE],
            "model_type": MODEL_TYPE,
            "auto_map": dict(AUTO_MAP),
            "num_hidden_layers": len(blocks),
            "num_key_value_heads": kv,
            "head_dim": getattr(hf.config, "head_dim", None) or hf.config.hidden_size // heads,
            "intermediate_size": max(widths) if widths else hf.config.intermediate_size,
            "hidden_act": getattr(hf.config, "hidden_act", "silu"),
            "attention_bias": bias["o"],
            "mlp_bias": bias["mlp"],
            "dtype": base["dtype"],
            "block_configs": blocks,
            BASE_KEY: base,
        }
    )
    if bias["qkv"] != bias["o"]:
        config["qkv_bias"] = bias["qkv"]
    return config


def noop_names(adapter: ModelAdapter, block: nn.Module) -> tuple[str, ...]:
    """Name prefixes (relative to the block) of the tensors a ``no_op`` attention or MLP of
    ``block`` drops from the checkpoint (with the norm in front of it)."""
    drop: tuple[str, ...] = ()
    if adapter.attention(block) is None:
        drop += ("self_attn.", "input_layernorm.")
    if adapter.mlp(block).channels == 0:
        drop += ("mlp.", "post_attention_layernorm.")
    return drop


def decilm_state_dict(model: nn.Module, adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    """The model's tensors under LLaMA names, without the parts ``no_op`` removes."""
    blocks = adapter.blocks()
    prefix = next(name for name, m in model.named_modules() if m is blocks)
    drop = [f"{prefix}.{i}.{name}" for i, block in enumerate(blocks) for name in noop_names(adapter, block)]
    tied = adapter.tied_embeddings()
    out = {}
    for name, tensor in model.state_dict().items():
        if any(name.startswith(p) for p in drop) or (tied and name == "lm_head.weight"):
            continue
        out[name] = tensor.detach().contiguous()
    return out


def code_sources() -> dict[str, str]:
    """The config and modeling files copied into the checkpoint (verbatim)."""
    from .. import modeling

    here = Path(modeling.__file__).parent
    return {name: (here / name).read_text() for name in (CONFIG_FILE, MODELING_FILE)}


def write_decilm_files(model: nn.Module, adapter: ModelAdapter, directory: Path) -> dict:
    """Write config.json and the code files (no tensors, no generation config) into
    ``directory``; returns the config written. ``model`` may hold ``meta`` tensors."""
    import json

    config = decilm_config(model, adapter)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name, text in code_sources().items():
        (directory / name).write_text(text)
    return config


def write_decilm(model: nn.Module, adapter: ModelAdapter, directory: Path) -> dict:
    """Write config.json, safetensors, generation config and code files into ``directory``;
    returns the config written."""
    from huggingface_hub import save_torch_state_dict

    config = write_decilm_files(model, adapter, directory)
    save_torch_state_dict(decilm_state_dict(model, adapter), directory, metadata={"format": "pt"})
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(directory)
    return config
