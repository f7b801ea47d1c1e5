"""The speed benchmark's decode loop under the installed transformers' cache API: the cache
is really used (cached greedy decode == greedy decode by full recompute), for every family,
Mamba and a pruned model whose first attention was removed, without deprecated calls."""

from __future__ import annotations

import pytest
import torch
import transformers
from packaging.version import Version

from llmprune.eval.speed import benchmark, cache_arg, greedy_decode
from llmprune.models import get_adapter
from llmprune.surgery import StructuredPlan, apply_plan
from tiny_models import FAMILIES, build_tiny, build_tiny_mamba

NEW_CACHE_API = Version(transformers.__version__) >= Version("5.24.0")


def _model(name: str) -> torch.nn.Module:
    if name == "mamba":
        return build_tiny_mamba()
    if name.endswith("-no-attention-0"):
        model = build_tiny(name.removesuffix("-no-attention-0"))
        apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": {0: {"remove_attention": True}}}))
        return model
    return build_tiny(name)


def _greedy_recompute(model: torch.nn.Module, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    seq = ids
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=seq, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
    return seq[:, ids.shape[1] :]


@pytest.mark.parametrize("name", [*FAMILIES, "mamba", "llama-no-attention-0"])
def test_cached_decode_equals_recompute(name: str) -> None:
    model = _model(name)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))
    got = greedy_decode(model, ids, 6)
    want = _greedy_recompute(model, ids, 6)
    assert got.shape == (2, 6)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", [*FAMILIES, "mamba", *(f"{f}-no-attention-0" for f in FAMILIES)])
def test_cached_steps_equal_full_forward(name: str) -> None:
    """Logits of tokens fed one at a time through the cache == one full forward (a stale
    cache length, e.g. a removed attention that does not record its tokens, shifts them)."""
    model = _model(name)
    arg = cache_arg(model)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(input_ids=ids, use_cache=False).logits[:, 5:]
        out = model(input_ids=ids[:, :6], use_cache=True)
        got = [out.logits[:, 5:]]
        for t in range(6, 9):
            out = model(input_ids=ids[:, t : t + 1], use_cache=True, **{arg: getattr(out, arg)})
            got.append(out.logits)
    torch.testing.assert_close(torch.cat(got, dim=1), want, rtol=1e-4, atol=1e-5)


def test_cache_argument_follows_installed_transformers() -> None:
    assert cache_arg(build_tiny("llama")) == ("cache" if NEW_CACHE_API else "past_key_values")
    assert cache_arg(build_tiny_mamba()) == ("cache" if NEW_CACHE_API else "cache_params")


def test_cache_argument_missing_is_named() -> None:
    with pytest.raises(TypeError, match="takes none of"):
        cache_arg(torch.nn.Linear(2, 2))


def test_benchmark_runs_without_deprecation_warnings() -> None:
    """pyproject's filterwarnings turn any deprecation (warned or logged by transformers)
    into an error, so this fails if the decode loop uses a deprecated name."""
    result = benchmark(
        {"a": build_tiny("llama"), "b": _model("llama-no-attention-0")},
        prompt_len=8,
        new_tokens=3,
        batch=2,
        trials=1,
        warmup=1,
    )
    assert set(result["models"]) == {"a", "b"}
    assert result["models"]["a"]["metrics"]["decode_tok_s_b1"]["median"] > 0
