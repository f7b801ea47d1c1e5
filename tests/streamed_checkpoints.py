"""Tiny source checkpoints and checkpoint comparison shared by the streamed-pruning tests."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import torch


def tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors shards in ``path``."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(glob.glob(str(path / "*.safetensors"))):
        out.update(load_file(file))
    return out


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Same tensors (names, dtypes, values bit for bit), same config.json, same code files."""
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype, k
        assert torch.equal(ta[k], tb[k]), k
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    code = sorted(p.name for p in b.glob("*.py"))
    assert sorted(p.name for p in a.glob("*.py")) == code
    for name in code:
        assert (a / name).read_text() == (b / name).read_text()


def save_checkpoint(model, path: Path, tokenizer, **kwargs) -> Path:
    model.save_pretrained(path, **kwargs)
    tokenizer.save_pretrained(path)
    return path


def write_sources(root: Path, tokenizer) -> dict[str, Path]:
    """Tiny checkpoints written with save_pretrained: LLaMA (tied), Qwen2 (q/k/v biases) and
    a 4-block LLaMA (untied head, several input shards)."""
    from tiny_models import build_tiny
    from transformers import AutoModelForCausalLM, LlamaConfig

    vocab = len(tokenizer)
    out = {f: save_checkpoint(build_tiny(f, vocab_size=vocab), root / f, tokenizer) for f in ("llama", "qwen2")}
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    deep = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in deep.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    out["deep"] = save_checkpoint(deep, root / "deep", tokenizer, max_shard_size="100KB")
    return out
