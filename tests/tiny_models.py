"""Tiny random models of every supported family, built from transformers configs."""

from __future__ import annotations

import torch
from torch import nn


def _configs(vocab_size: int) -> dict:
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, OPTConfig, PhiConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2, max_position_embeddings=256
    )
    return {
        "llama": LlamaConfig(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **common),
        "mistral": MistralConfig(num_attention_heads=4, num_key_value_heads=2, sliding_window=None, **common),
        "qwen2": Qwen2Config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, **common),
        "opt": OPTConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            word_embed_proj_dim=64,
        ),
        "phi": PhiConfig(num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.5, **common),
        "gemma3": Gemma3TextConfig(
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            **common,
        ),
    }


FAMILIES = ("llama", "mistral", "qwen2", "opt", "phi", "gemma3")


def build_tiny(family: str, vocab_size: int = 128, seed: int = 0) -> nn.Module:
    """A tiny random causal LM of ``family`` in eval mode, float32, eager attention."""
    from transformers import AutoModelForCausalLM

    config = _configs(vocab_size)[family]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random norms/biases so that every parameter matters
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def build_tiny_servable(family: str = "qwen2", vocab_size: int = 256, layers: int = 6, seed: int = 0) -> nn.Module:
    """A tiny random LLaMA-style model that vLLM's CPU backend can serve (``head_dim`` 32,
    its smallest; GQA 4 query / 2 KV heads; Qwen2 has q/k/v biases), float32, eval mode."""
    from transformers import AutoModelForCausalLM

    config = _configs(vocab_size)[family]
    config.hidden_size, config.intermediate_size, config.head_dim = 128, 256, 32
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"] * layers
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # random norms/biases so that every parameter matters
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def build_tiny_mamba(vocab_size: int = 128, seed: int = 0) -> nn.Module:
    """A tiny random Mamba (no attention, so it is not in :data:`FAMILIES`), float32, eval
    mode; ``time_step_rank`` 8 so that every linear takes 2:4 and 4:8 patterns."""
    from transformers import MambaConfig, MambaForCausalLM

    config = MambaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=4,
        time_step_rank=8,
        use_cache=False,
    )
    torch.manual_seed(seed)
    model = MambaForCausalLM(config)
    with torch.no_grad():  # random norms/biases so that every parameter matters
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def assert_reload_matches(model, tokenizer, report: dict, out, vocab: int | None = None) -> None:
    """Save ``model`` with llmprune, reload it and check the logits are unchanged."""
    import llmprune

    ids = torch.randint(0, vocab or len(tokenizer), (1, 12))
    with torch.no_grad():
        want = model(ids).logits
    llmprune.save(model, tokenizer, out, report)
    reloaded, _ = llmprune.load(out)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, want, rtol=1e-5, atol=1e-5)
