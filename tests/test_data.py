"""Corpora, windows and perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from llmprune.data import calibration_windows, eval_windows, load_text
from llmprune.errors import LlmpruneError
from llmprune.eval import perplexity


def test_embedded_wikitext2_follows_convention() -> None:
    text = load_text("wikitext2")
    assert text.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English")
    assert text.count("\n\n") >= 4358 - 1
    assert len(load_text("wikitext2", "train")) > 900_000


def test_ptb_and_c4_from_folder(shared_data) -> None:
    ptb = load_text("ptb", "test", shared_data)
    assert ptb.startswith(" no it was n't black monday")
    pytest.importorskip("pyarrow")
    c4 = load_text("c4", "validation", shared_data)
    assert c4.count("\n\n") >= 1999


@pytest.mark.parametrize(
    "call,msg",
    [
        (lambda d: load_text("nosuch"), "unknown dataset 'nosuch'"),
        (lambda d: load_text("wikitext2", "dev"), "no split 'dev'"),
        (lambda d: load_text("ptb", "test", d), "ptb test not found under"),
    ],
)
def test_corpus_errors(tmp_path, call, msg: str) -> None:
    with pytest.raises(LlmpruneError, match=msg):
        call(tmp_path)


def test_eval_windows_non_overlapping() -> None:
    ids = torch.arange(103)
    w = eval_windows(ids, 10)
    assert w.shape == (10, 10) and torch.equal(w.flatten(), ids[:100])
    assert eval_windows(ids, 10, max_windows=3).shape == (3, 10)
    with pytest.raises(LlmpruneError, match="fewer than one window"):
        eval_windows(ids, 200)


def test_calibration_windows_seeded_and_checked() -> None:
    ids = torch.arange(1000)
    a, b = calibration_windows(ids, 4, 50, seed=3), calibration_windows(ids, 4, 50, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, calibration_windows(ids, 4, 50, seed=4))
    assert all(torch.equal(row, torch.arange(row[0], row[0] + 50)) for row in a)  # contiguous slices
    with pytest.raises(LlmpruneError, match="at least 1"):
        calibration_windows(ids, 0, 50)
    with pytest.raises(LlmpruneError, match="lower --seqlen"):
        calibration_windows(ids, 2, 1000)


def test_perplexity_matches_hf_loss(tiny_llama) -> None:
    windows = torch.randint(0, tiny_llama.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        losses = [tiny_llama(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    assert perplexity(tiny_llama, windows, progress=False) == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_perplexity_nan_is_a_clear_error(tiny_llama) -> None:
    import copy

    broken = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))
    with pytest.raises(LlmpruneError, match="not finite"):
        perplexity(broken, torch.zeros(1, 8, dtype=torch.long), progress=False)
