"""Method-level checks: metrics against brute force, engine wiring, the Python API."""

from __future__ import annotations

import pytest
import torch

from llmprune.engine.stats import InputStats
from llmprune.methods.magnitude import Magnitude
from llmprune.methods.wanda import Wanda
from llmprune.solvers import Sparsity


def _stats(X: torch.Tensor) -> InputStats:
    acc = InputStats(X.shape[1], hessian=False)
    acc.add(X)
    return acc


def test_wanda_matches_brute_force_metric() -> None:
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 12, generator=g)
    X = torch.randn(40, 12, generator=g) * torch.linspace(0.1, 3, 12)
    out = Wanda(Sparsity(ratio=0.5)).prune_weight(W, _stats(X))
    score = W.abs() * X.norm(dim=0)  # |W_ij| * ||X_j||_2, Sun et al. Eq. 1
    for r in range(5):
        pruned = set(torch.argsort(score[r])[:6].tolist())
        assert {j for j in range(12) if out[r, j] == 0} == pruned
        assert torch.equal(out[r][out[r] != 0], W[r][out[r] != 0])  # no weight update


def test_magnitude_layerwise_and_nm() -> None:
    W = torch.arange(1, 17, dtype=torch.float32).reshape(2, 8)
    out = Magnitude(Sparsity(ratio=0.25)).prune_weight(W, None)
    assert out.flatten()[:4].eq(0).all() and out.flatten()[4:].ne(0).all()
    out = Magnitude(Sparsity(n=1, m=4)).prune_weight(W, None)
    assert (out != 0).reshape(2, 2, 4).sum(-1).eq(1).all()


def test_api_prune_evaluate_save_load(tiny_llama_dir, tmp_path) -> None:
    import llmprune

    model, tok = llmprune.load(tiny_llama_dir)
    before = llmprune.evaluate(model, tok, ppl="wikitext2", seqlen=64, max_windows=4, progress=False)
    report = llmprune.prune(model, tok, "sparsegpt", ratio=0.5, calib_samples=8, seqlen=64, progress=False)
    after = llmprune.evaluate(model, tok, ppl="wikitext2", seqlen=64, max_windows=4, progress=False)
    assert report.unstructured.block_sparsity == pytest.approx(0.5, abs=1e-6)
    assert report.params_after < report.params_before
    assert before["protocol"]["wikitext2"]["windows"] == 4
    assert after["ppl"]["wikitext2"] != before["ppl"]["wikitext2"]
    out = llmprune.save(model, tok, tmp_path / "m", report)
    again, _ = llmprune.load(out)
    reloaded = llmprune.evaluate(again, tok, ppl="wikitext2", seqlen=64, max_windows=4, progress=False)
    assert reloaded["ppl"]["wikitext2"] == pytest.approx(after["ppl"]["wikitext2"], rel=1e-6)


def test_calibration_is_seeded(toy_tokenizer) -> None:
    import llmprune

    a = llmprune.calibration_data(toy_tokenizer, 3, 32, seed=0)
    b = llmprune.calibration_data(toy_tokenizer, 3, 32, seed=0)
    c = llmprune.calibration_data(toy_tokenizer, 3, 32, seed=1)
    assert a.shape == (3, 32) and torch.equal(a, b) and not torch.equal(a, c)
