"""Shared fixtures: the offline data folder, a toy tokenizer, tiny saved models."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class _LoggedDeprecationToWarning(logging.Handler):
    """transformers reports some deprecations through its logger, not ``warnings`` (e.g.
    reading ``output.past_key_values`` since 5.24); re-issue them as ``FutureWarning`` so the
    ``filterwarnings = error::FutureWarning`` of pyproject.toml fails the test that caused them."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and "deprecat" in message.lower():
            warnings.warn(f"transformers logged: {message}", FutureWarning, stacklevel=2)


def pytest_configure(config) -> None:
    logging.getLogger("transformers").addHandler(_LoggedDeprecationToWarning())


@pytest.fixture(scope="module")
def bench_import():
    """``importlib.import_module`` with ``benchmarks/`` on ``sys.path`` for the module's tests
    (the benchmark scripts import each other by bare name)."""
    path = str(REPO / "benchmarks")
    sys.path.insert(0, path)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline data folder next to the checkout (PTB, C4, zero-shot sets)."""
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("shared data folder not present")
    return path


@pytest.fixture(scope="session")
def toy_tokenizer():
    """A 512-token byte-level BPE trained on WikiText-2 train text (offline, fast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from llmprune.data import load_text

    text = load_text("wikitext2", "train")[:200_000]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.fixture(scope="session")
def tiny_llama(toy_tokenizer):
    """A tiny random LLaMA (GQA 4 heads / 2 KV heads) matching the toy tokenizer."""
    from tiny_models import build_tiny

    return build_tiny("llama", vocab_size=len(toy_tokenizer))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_llama, toy_tokenizer) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A family llmprune does not support (for the error path)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(toy_tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    path = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return path
