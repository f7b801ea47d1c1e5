"""Adapter for LLaMA-layout models: LLaMA 1-3, SmolLM2, Mistral, Qwen2/Qwen3.

Layout: ``model.model.layers[i]`` with ``self_attn.{q,k,v,o}_proj`` (q/k/v biases in
Qwen2), ``mlp.{gate,up,down}_proj``, ``input_layernorm`` and
``post_attention_layernorm``; GQA through ``num_key_value_heads``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..modeling.modeling_llmprune import NoAttention
from .base import AttentionSpec, MLPSpec, ModelAdapter


class LlamaAdapter(ModelAdapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3")
    family = "llama"

    def decoder(self) -> nn.Module:
        return self.model.model

    def blocks(self) -> nn.ModuleList:
        return self.model.model.layers

    def embeddings(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    def final_norm(self) -> nn.Module | None:
        return self.model.model.norm

    def attention(self, block: Any) -> AttentionSpec | None:
        att = block.self_attn
        if isinstance(att, NoAttention):
            return None
        heads, kv = self.head_geometry(att.q_proj, att.k_proj, att.head_dim)
        return AttentionSpec(att, att.q_proj, att.k_proj, att.v_proj, att.o_proj, heads, kv, att.head_dim)

    def mlp(self, block: Any) -> MLPSpec:
        m = block.mlp
        return MLPSpec(m, up=m.up_proj, down=m.down_proj, gate=m.gate_proj)

    def norms(self, block: Any) -> list[nn.Module]:
        return [block.input_layernorm, block.post_attention_layernorm]
