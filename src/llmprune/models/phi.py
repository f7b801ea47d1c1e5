"""Adapter for Phi-1/1.5/2 (``model_type == "phi"``): attention and MLP run in
*parallel* on the same ``input_layernorm`` output, so q, k, v and fc1 share one input
(one Hessian); ``self_attn.dense`` is the output projection; partial rotary and
optional q/k LayerNorms live inside the attention module."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..modeling.modeling_llmprune import NoAttention
from .base import AttentionSpec, LinearGroup, MLPSpec, ModelAdapter


class PhiAdapter(ModelAdapter):
    model_types = ("phi",)
    family = "phi"

    def decoder(self) -> nn.Module:
        return self.model.model

    def blocks(self) -> nn.ModuleList:
        return self.model.model.layers

    def embeddings(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    def final_norm(self) -> nn.Module | None:
        return self.model.model.final_layernorm

    def attention(self, block: Any) -> AttentionSpec | None:
        att = block.self_attn
        if isinstance(att, NoAttention):
            return None
        heads, kv = self.head_geometry(att.q_proj, att.k_proj, att.head_dim)
        return AttentionSpec(att, att.q_proj, att.k_proj, att.v_proj, att.dense, heads, kv, att.head_dim)

    def mlp(self, block: Any) -> MLPSpec:
        return MLPSpec(block.mlp, up=block.mlp.fc1, down=block.mlp.fc2, gate=None)

    def norms(self, block: Any) -> list[nn.Module]:
        return [block.input_layernorm]

    def linear_groups(self, block: Any) -> list[LinearGroup]:
        att, mlp = self.attention(block), self.mlp(block)
        if att is None:
            return [LinearGroup(("fc1",), (mlp.up,)), LinearGroup(("fc2",), (mlp.down,))]
        return [
            LinearGroup(("q", "k", "v", "fc1"), (att.q, att.k, att.v, mlp.up)),
            LinearGroup(("dense",), (att.o,)),
            LinearGroup(("fc2",), (mlp.down,)),
        ]
