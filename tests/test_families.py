"""Every supported family end-to-end on a tiny random model built from its config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import FAMILIES, build_tiny

from llmprune.engine import LayerwiseEngine
from llmprune.errors import LlmpruneError
from llmprune.methods import get_method, prune_unstructured
from llmprune.models import get_adapter
from llmprune.solvers import Sparsity

GEOMETRY = {  # (heads, kv heads, head_dim, gated MLP)
    "llama": (4, 2, 16, True),
    "mistral": (4, 2, 16, True),
    "qwen2": (4, 2, 16, True),
    "opt": (4, 4, 16, False),
    "phi": (4, 4, 16, False),
    "gemma3": (4, 2, 16, True),
}


def _ids(n: int = 2, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_geometry(family: str) -> None:
    model = build_tiny(family)
    adapter = get_adapter(model)
    heads, kv, head_dim, gated = GEOMETRY[family]
    for block in adapter.blocks():
        att = adapter.attention(block)
        assert (att.num_heads, att.num_kv_heads, att.head_dim) == (heads, kv, head_dim)
        assert (adapter.mlp(block).gate is not None) == gated
        names = [n for g in adapter.linear_groups(block) for n in g.names]
        assert len(names) == len(set(names)) == (7 if gated else 6)
    if family == "qwen2":
        assert adapter.attention(adapter.blocks()[0]).q.bias is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_layerwise_forward_equals_full_forward(family: str) -> None:
    model = build_tiny(family)
    adapter = get_adapter(model)
    ids = _ids()
    engine = LayerwiseEngine(model, adapter, progress=False)
    engine.run(ids, lambda i, block, runner: None)
    with torch.no_grad():
        layerwise = adapter.logits(engine.final_hidden)
        full = model(input_ids=ids, use_cache=False).logits
    assert torch.allclose(layerwise, full, atol=1e-5, rtol=1e-5)


def _check_sparsity(adapter, method: str, sparsity: Sparsity) -> None:
    for block in adapter.blocks():
        for name, lin in adapter.prunable_linears(block).items():
            zero = lin.weight == 0
            if sparsity.is_nm:
                per_group = (~zero).reshape(zero.shape[0], -1, sparsity.m).sum(-1)
                assert int(per_group.max()) <= sparsity.n, name
            elif method == "wanda":
                assert zero.sum(1).eq(int(sparsity.ratio * zero.shape[1])).all(), name
            else:
                assert int(zero.sum()) == round(sparsity.ratio * zero.numel()), name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method,spec", [("wanda", "0.5"), ("sparsegpt", "2:4"), ("magnitude", "0.3")])
def test_prune_save_reload(family: str, method: str, spec: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = build_tiny(family)
    adapter = get_adapter(model)
    sparsity = Sparsity.parse(pattern=spec) if ":" in spec else Sparsity.parse(ratio=spec)
    report = prune_unstructured(model, adapter, get_method(method)(sparsity), _ids(4, 32, seed=1), progress=False)
    _check_sparsity(adapter, method, sparsity)
    assert len(report.layers) == sum(len(adapter.prunable_linears(b)) for b in adapter.blocks())
    ids = _ids(1, 16, seed=2)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)


def test_unsupported_family_lists_supported() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(LlmpruneError, match="unsupported model family 'gpt2'.*llama.*opt.*phi"):
        get_adapter(model)
