"""The chunked LM-head loss of SoBP stage 1 / LLM-Pruner equals the unchunked one."""

from __future__ import annotations

import pytest
import torch

from llmprune.methods.gradients import backward_windows, lm_loss_backward
from tiny_models import FAMILIES, build_tiny


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_chunked_loss_and_gradients_equal_unchunked(family: str, chunk: int) -> None:
    model = build_tiny(family, vocab_size=96)
    if family == "gemma3":
        model.config.final_logit_softcapping = 3.0  # exercise the soft-capped head
    ids = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(1))
    model.zero_grad()
    ref = model(input_ids=ids, labels=ids, use_cache=False).loss
    ref.backward()
    want = _grads(model)
    model.zero_grad()
    got_loss = lm_loss_backward(model, ids, chunk)
    got = _grads(model)
    assert got_loss == pytest.approx(float(ref.detach()), rel=1e-5)
    assert want.keys() == got.keys() and want
    for name in want:
        assert torch.allclose(got[name], want[name], rtol=1e-4, atol=1e-6), name


def test_backward_windows_sums_window_gradients_of_trainable_only() -> None:
    model = build_tiny("llama", vocab_size=96)
    calib = torch.randint(0, 96, (3, 12), generator=torch.Generator().manual_seed(2))
    lin = model.model.layers[0].mlp.down_proj
    want = torch.zeros_like(lin.weight)
    for i in range(3):
        model.zero_grad()
        model(input_ids=calib[i : i + 1], labels=calib[i : i + 1], use_cache=False).loss.backward()
        want += lin.weight.grad
    model.zero_grad()
    backward_windows(model, calib, "cpu", [lin.weight], progress=False, loss_chunk=4)
    assert torch.allclose(lin.weight.grad, want, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None for n, p in model.named_parameters() if p is not lin.weight)
    assert all(p.requires_grad for p in model.parameters())  # flags restored
