"""Adapter for OPT (Zhang et al. 2022): ``model.model.decoder.layers[i]`` with
``self_attn.{q,k,v,out}_proj`` (biases), ``fc1``/``fc2``, LayerNorms
``self_attn_layer_norm`` and ``final_layer_norm``; learned positions; optional
``project_in``/``project_out`` when the embedding width differs from the hidden size."""

from __future__ import annotations

import torch
from typing import Any

from torch import nn

from ..modeling.modeling_llmprune import NoAttention
from .base import AttentionSpec, MLPSpec, ModelAdapter


class OPTAdapter(ModelAdapter):
    model_types = ("opt",)
    family = "opt"

    def decoder(self) -> Any:
        return self.model.model.decoder

    def blocks(self) -> nn.ModuleList:
        return self.decoder().layers

    def embeddings(self) -> nn.Embedding:
        return self.decoder().embed_tokens

    def final_norm(self) -> nn.Module | None:
        return self.decoder().final_layer_norm

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        norm, proj = self.final_norm(), self.decoder().project_out
        if norm is not None:
            hidden = norm(hidden)
        if proj is not None:
            hidden = proj(hidden)
        return self.lm_head()(hidden)

    def attention(self, block: Any) -> AttentionSpec | None:
        att = block.self_attn
        if isinstance(att, NoAttention):
            return None
        heads, kv = self.head_geometry(att.q_proj, att.k_proj, att.head_dim)
        return AttentionSpec(att, att.q_proj, att.k_proj, att.v_proj, att.out_proj, heads, kv, att.head_dim)

    def mlp(self, block: Any) -> MLPSpec:
        return MLPSpec(block, up=block.fc1, down=block.fc2, gate=None)

    def uniform_config(self, heads: int, kv_heads: int, head_dim: int, channels: int) -> dict | None:
        # OPT derives head_dim from hidden_size / num_attention_heads: fewer heads
        # cannot be expressed in its stock config.
        if heads * head_dim != self.config.hidden_size:
            return None
        return {"ffn_dim": channels}

    def norms(self, block: Any) -> list[nn.Module]:
        return [block.self_attn_layer_norm, block.final_layer_norm]
