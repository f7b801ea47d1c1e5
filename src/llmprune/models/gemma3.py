"""Adapter for the Gemma 3 text model (``Gemma3ForCausalLM``, ``model_type ==
"gemma3_text"``). The multimodal ``Gemma3ForConditionalGeneration`` is not supported.

Blocks have four RMSNorms (input, post-attention, pre- and post-feed-forward), q/k
norms over ``head_dim``, a gated MLP, and alternate sliding-window and global layers
whose masks and rotary tables differ: the engine records each block's own arguments.
The embedding is scaled by ``sqrt(hidden_size)`` inside its module; logits may be
soft-capped (``final_logit_softcapping``).
"""

from __future__ import annotations

import torch
from typing import Any

from torch import nn

from ..modeling.modeling_llmprune import NoAttention
from .base import AttentionSpec, MLPSpec, ModelAdapter


class Gemma3Adapter(ModelAdapter):
    model_types = ("gemma3_text",)
    family = "gemma3"

    def decoder(self) -> nn.Module:
        return self.model.model

    def blocks(self) -> nn.ModuleList:
        return self.model.model.layers

    def embeddings(self) -> nn.Embedding:
        return self.model.model.embed_tokens

    def final_norm(self) -> nn.Module | None:
        return self.model.model.norm

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().logits(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

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
        return [
            block.input_layernorm,
            block.post_attention_layernorm,
            block.pre_feedforward_layernorm,
            block.post_feedforward_layernorm,
        ]
