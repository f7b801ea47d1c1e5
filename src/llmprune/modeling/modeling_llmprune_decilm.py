"""transformers model for per-layer pruned LLaMA-style checkpoints in the DeciLM /
Nemotron-NAS ``block_configs`` format (see ``configuration_llmprune_decilm.py``).

This file is self-contained (torch + transformers only) because it is copied into every
such checkpoint for ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.
It vendors no modeling code: the stock ``LlamaForCausalLM`` builds every block from the
global config, then each block is rebuilt to its ``block_configs`` entry:

- ``attention.no_op``: the block has no attention and no input norm (the residual
  stream passes unchanged); otherwise its K/V projections get
  ``num_attention_heads // n_heads_in_group`` heads;
- ``ffn.no_op``: the block has no MLP and no post-attention norm; otherwise its MLP has
  ``intermediate_size`` channels.

Weight names are LLaMA's (``model.layers.N.self_attn.q_proj.weight``, ...), so vLLM's
own DeciLM implementation reads the same safetensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaForCausalLM

from .configuration_llmprune_decilm import LlmpruneDeciLMConfig


def _linear(in_features: int, out_features: int, bias: bool, like: nn.Linear) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=bias, device=like.weight.device, dtype=like.weight.dtype)


def _cache_of(kwargs: dict) -> Any:
    for key in ("cache", "past_key_values", "past_key_value"):
        if kwargs.get(key) is not None:
            return kwargs[key]
    return None


class DeciLMBlock(nn.Module):
    """A LLaMA decoder block whose attention and/or MLP may be absent (``None``)."""

    def __init__(self, layer: Any, block: Any, config: LlmpruneDeciLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim: int = layer.self_attn.head_dim
        self.input_layernorm: Any
        self.self_attn: Any
        self.post_attention_layernorm: Any
        self.mlp: Any
        attention, ffn = block.attention, block.ffn
        for part, name in ((attention, "attention"), (ffn, "ffn")):
            if getattr(part, "replace_with_linear", False):
                raise ValueError(f"block {layer_idx}: {name}.replace_with_linear is not supported by this loader")
        if attention.no_op:
            self.input_layernorm = None
            self.self_attn = None
        else:
            self.input_layernorm = layer.input_layernorm
            self.self_attn = self._attention(layer.self_attn, attention, config)
        if ffn.no_op:
            self.post_attention_layernorm = None
            self.mlp = None
        else:
            if not hasattr(ffn, "intermediate_size"):
                raise ValueError(
                    f"block {layer_idx}: ffn needs intermediate_size (ffn_mult is not supported by this loader)"
                )
            self.post_attention_layernorm = layer.post_attention_layernorm
            self.mlp = self._mlp(layer.mlp, int(ffn.intermediate_size), config)

    @staticmethod
    def _attention(att: Any, spec: Any, config: LlmpruneDeciLMConfig) -> nn.Module:
        heads = config.num_attention_heads
        group = int(spec.n_heads_in_group)
        if heads % group:
            raise ValueError(f"n_heads_in_group {group} does not divide num_attention_heads {heads}")
        kv = heads // group
        hidden, hd = config.hidden_size, att.head_dim
        qkv_bias = bool(getattr(config, "qkv_bias", config.attention_bias))
        att.q_proj = _linear(hidden, heads * hd, qkv_bias, att.q_proj)
        att.k_proj = _linear(hidden, kv * hd, qkv_bias, att.k_proj)
        att.v_proj = _linear(hidden, kv * hd, qkv_bias, att.v_proj)
        att.o_proj = _linear(heads * hd, hidden, bool(config.attention_bias), att.o_proj)
        att.num_key_value_groups = group
        return att

    @staticmethod
    def _mlp(mlp: Any, width: int, config: LlmpruneDeciLMConfig) -> nn.Module:
        hidden, bias = config.hidden_size, bool(getattr(config, "mlp_bias", False))
        mlp.gate_proj = _linear(hidden, width, bias, mlp.gate_proj)
        mlp.up_proj = _linear(hidden, width, bias, mlp.up_proj)
        mlp.down_proj = _linear(width, hidden, bias, mlp.down_proj)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = width
        return mlp

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.self_attn is not None:
            out, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
            hidden_states = hidden_states + out
        else:
            cache = _cache_of(kwargs)
            if cache is not None and hasattr(cache, "update"):
                # keep this layer's cache length equal to the others' (empty keys/values)
                b, s = hidden_states.shape[:2]
                empty = hidden_states.new_zeros(b, 0, s, self.head_dim)
                cache.update(empty, empty, self.layer_idx)
        if self.mlp is not None:
            hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states


class LlmpruneDeciLMForCausalLM(LlamaForCausalLM):
    """``LlamaForCausalLM`` with every decoder block rebuilt from ``config.block_configs``."""

    config_class = LlmpruneDeciLMConfig

    def __init__(self, config: LlmpruneDeciLMConfig) -> None:
        super().__init__(config)
        if config.block_configs is None or len(config.block_configs) != len(self.model.layers):
            raise ValueError("config.block_configs must list one entry per decoder block")
        for i, block in enumerate(config.block_configs):
            self.model.layers[i] = DeciLMBlock(self.model.layers[i], block, config, i)
