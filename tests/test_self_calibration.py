"""Self-generated calibration windows (``--calib-dataset self``; Ji et al. 2024)."""

from __future__ import annotations

import copy

import pytest
import torch

import llmprune
from llmprune.data import self_generated as sg
from llmprune.errors import LlmpruneError

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture()
def chat_tokenizer(toy_tokenizer):
    tok = copy.deepcopy(toy_tokenizer)
    tok.chat_template = "<|im_start|>system\nBe brief.<|im_end|>\n" + CHATML
    return tok


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMPRUNE_CACHE", str(tmp_path))
    return tmp_path / "calib"


def test_prefix_is_the_opening_of_a_user_turn(chat_tokenizer):
    ids = sg.prefix_ids(chat_tokenizer)
    assert chat_tokenizer.decode(ids) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"


def test_prefix_without_template_is_eos(toy_tokenizer):
    assert toy_tokenizer.chat_template is None
    assert sg.prefix_ids(toy_tokenizer) == [toy_tokenizer.eos_token_id]


def test_windows_shape_prefix_determinism_and_cache(tiny_llama, chat_tokenizer, cache, monkeypatch):
    model = copy.deepcopy(tiny_llama)
    prefix = sg.prefix_ids(chat_tokenizer)
    a = llmprune.calibration_data(chat_tokenizer, 3, 80, seed=0, dataset="self", model=model)
    assert a.shape == (3, 80) and a.dtype == torch.long
    assert (a[:, : len(prefix)] == torch.tensor(prefix)).all()
    assert a[:, len(prefix) :].unique().numel() > 5  # sampled, not one repeated token
    assert len(list(cache.glob("self-*.pt"))) == 1
    b = sg.self_generated_windows(model, chat_tokenizer, 3, 80, seed=0, cache=False)
    assert torch.equal(a, b)  # same seed, same windows, with or without the cache
    c = sg.self_generated_windows(model, chat_tokenizer, 3, 80, seed=1, cache=False)
    assert not torch.equal(a, c)

    def no_generate(*args, **kwargs):
        raise AssertionError("generated although cached")

    monkeypatch.setattr(model, "generate", no_generate)
    assert torch.equal(sg.self_generated_windows(model, chat_tokenizer, 3, 80, seed=0), a)
    with torch.no_grad():  # other weights: a different cache key, so it generates again
        model.lm_head.weight.mul_(2.0)
    with pytest.raises(AssertionError, match="generated although cached"):
        sg.self_generated_windows(model, chat_tokenizer, 3, 80, seed=0)


def test_windows_follow_the_model(tiny_llama, toy_tokenizer, cache):
    """A model whose logits favour one token by a wide margin samples only that token."""
    model = copy.deepcopy(tiny_llama)
    target = 7
    bias = torch.full((model.config.vocab_size,), -1e4)
    bias[target] = 0.0
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.lm_head.bias = torch.nn.Parameter(bias)  # logits = bias
    ids = sg.self_generated_windows(model, toy_tokenizer, 2, 24, seed=0, cache=False)
    assert ids[:, 0].tolist() == [toy_tokenizer.eos_token_id] * 2
    assert (ids[:, 1:] == target).all()


def test_prune_records_self_calibration(tiny_llama, chat_tokenizer, cache, tmp_path):
    model = copy.deepcopy(tiny_llama)
    report = llmprune.prune(
        model, chat_tokenizer, "wanda", ratio=0.5, calib_samples=2, seqlen=80, calib_dataset="self", progress=False
    )
    assert report.calibration.dataset == "self"
    out = llmprune.save(model, chat_tokenizer, tmp_path / "out", report)
    assert "dataset: self" in (out / "recipe.yaml").read_text()


def test_errors_are_one_line(tiny_llama, chat_tokenizer, toy_tokenizer, cache, tiny_llama_dir, tmp_path):
    with pytest.raises(LlmpruneError, match="needs the model"):
        llmprune.calibration_data(chat_tokenizer, 2, 32, dataset="self")
    with pytest.raises(LlmpruneError, match="raise --seqlen"):
        sg.self_generated_windows(tiny_llama, chat_tokenizer, 2, 4)
    bad = copy.deepcopy(toy_tokenizer)
    bad.chat_template = "{{ raise_exception('only system and assistant') }}"
    with pytest.raises(LlmpruneError, match="does not render a user turn"):
        sg.prefix_ids(bad)
    upper = copy.deepcopy(toy_tokenizer)
    upper.chat_template = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(LlmpruneError, match="cannot be found"):
        sg.prefix_ids(upper)
    from llmprune.streamed import prune_streamed

    with pytest.raises(LlmpruneError, match="cannot use --calib-dataset self"):
        prune_streamed(tiny_llama_dir, "wanda", tmp_path / "s", ratio=0.5, calib_dataset="self")
