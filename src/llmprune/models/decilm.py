"""Reading a DeciLM / Nemotron-NAS ``block_configs`` checkpoint (the vLLM-servable
per-layer format written by :mod:`llmprune.export.decilm`) back as the stock family class
plus ``llmprune_layout``: llmprune never runs the checkpoint's own code."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..errors import LlmpruneError
from ..modeling.modeling_llmprune import LAYOUT_KEY, LAYOUT_VERSION

ARCHITECTURE = "DeciLMForCausalLM"
MODEL_TYPE = "nemotron-nas"
BASE_KEY = "llmprune_base_config"
CONFIG_FILE = "configuration_llmprune_decilm.py"
MODELING_FILE = "modeling_llmprune_decilm.py"
AUTO_MAP = {
    "AutoConfig": "configuration_llmprune_decilm.LlmpruneDeciLMConfig",
    "AutoModelForCausalLM": "modeling_llmprune_decilm.LlmpruneDeciLMForCausalLM",
}
#: families whose blocks are LLaMA blocks (pre-norm RMSNorm, rotary attention, gated MLP)
LLAMA_STYLE = ("llama", "mistral", "qwen2")
#: LLaMA hyper-parameters carried from the family config into the DeciLM config
LLAMA_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "attention_dropout",
    "dtype",
)


def is_decilm(cfg: dict) -> bool:
    return cfg.get("model_type") == MODEL_TYPE or ARCHITECTURE in (cfg.get("architectures") or [])


def _base_config_dict(cfg: dict, path: Path) -> dict:
    base = cfg.get(BASE_KEY)
    if isinstance(base, dict):
        return copy.deepcopy(base)
    # a block_configs checkpoint written elsewhere: read it as LLaMA when LLaMA can express it
    qkv = cfg.get("qkv_bias", cfg.get("attention_bias", False))
    if bool(qkv) != bool(cfg.get("attention_bias", False)):
        raise LlmpruneError(
            f"{path}: qkv_bias differs from attention_bias and the checkpoint does not name its "
            "family (no llmprune_base_config): llmprune cannot rebuild it"
        )
    base = {k: cfg[k] for k in LLAMA_KEYS if k in cfg}
    base.update(
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        attention_bias=bool(qkv),
        mlp_bias=bool(cfg.get("mlp_bias", False)),
    )
    return base


def internal_config(cfg: dict, path: Path) -> Any:
    """The family config (with ``llmprune_layout``) that rebuilds a ``block_configs``
    checkpoint as the stock family class, and that class's name."""
    from transformers import CONFIG_MAPPING

    blocks = cfg.get("block_configs")
    if not isinstance(blocks, list):
        raise LlmpruneError(f"{path}/config.json says {MODEL_TYPE} but has no block_configs list: re-export it")
    base = _base_config_dict(cfg, path)
    model_type = base.pop("model_type", "llama")
    if model_type not in LLAMA_STYLE:
        raise LlmpruneError(f"{path}: {BASE_KEY} names family {model_type!r}, not one of {', '.join(LLAMA_STYLE)}")
    config = CONFIG_MAPPING[model_type].from_dict(base)
    if len(blocks) != config.num_hidden_layers:
        raise LlmpruneError(
            f"{path}: block_configs lists {len(blocks)} blocks but num_hidden_layers is "
            f"{config.num_hidden_layers}: re-export it"
        )
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_global = getattr(config, "num_key_value_heads", None) or heads
    qkv_bias = bool(cfg.get("qkv_bias", cfg.get("attention_bias", False)))
    mlp_bias = bool(cfg.get("mlp_bias", False))
    layers = []
    for i, block in enumerate(blocks):
        try:
            attention, ffn = block["attention"], block["ffn"]
            if attention.get("replace_with_linear") or ffn.get("replace_with_linear"):
                raise LlmpruneError(f"{path}: block {i} uses replace_with_linear, which llmprune does not load")
            spec: dict[str, Any] = {"linears": {}, "attrs": {}}
            if attention["no_op"]:
                spec["no_attention"] = {
                    "path": "self_attn",
                    "hidden_size": hidden,
                    "head_dim": head_dim,
                    "layer_idx": i,
                    "bias": False,
                }
            elif heads // int(attention["n_heads_in_group"]) != kv_global:
                kv = heads // int(attention["n_heads_in_group"])
                for name in ("k_proj", "v_proj"):
                    spec["linears"][f"self_attn.{name}"] = {"shape": [kv * head_dim, hidden], "bias": qkv_bias}
                spec["attrs"]["self_attn.num_key_value_groups"] = int(attention["n_heads_in_group"])
            width = 0 if ffn["no_op"] else ffn.get("intermediate_size")
            if width is None:
                raise LlmpruneError(
                    f"{path}: block {i} gives ffn_mult, not intermediate_size; llmprune reads intermediate_size only"
                )
            if width != config.intermediate_size:
                bias = mlp_bias and width > 0
                spec["linears"]["mlp.gate_proj"] = {"shape": [width, hidden], "bias": bias}
                spec["linears"]["mlp.up_proj"] = {"shape": [width, hidden], "bias": bias}
                spec["linears"]["mlp.down_proj"] = {"shape": [hidden, width], "bias": bias}
        except (KeyError, TypeError, ValueError):
            raise LlmpruneError(f"{path}: block_configs entry {i} is malformed: re-export it") from None
        layers.append(spec)
    architecture = (base.get("architectures") or ["LlamaForCausalLM"])[0]
    setattr(
        config,
        LAYOUT_KEY,
        {"version": LAYOUT_VERSION, "base_architecture": architecture, "blocks_path": "model.layers", "layers": layers},
    )
    return config
