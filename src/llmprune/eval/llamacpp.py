"""Run a GGUF file in llama.cpp (through ``llama-cpp-python``): greedy tokens, perplexity
on the same non-overlapping windows as :mod:`llmprune.eval.perplexity`, and
llama-bench-style prompt-processing / generation timings.

llama.cpp is the judge of a GGUF export: these functions feed it token ids directly, so
tokenization is not part of the comparison with transformers.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..export.gguf_quantize import llama_cpp_module


def open_gguf(
    path: str | os.PathLike,
    n_ctx: int = 512,
    threads: int | None = None,
    logits_all: bool = True,
    f32_cache: bool = False,
):
    """A ``llama_cpp.Llama`` on CPU for ``path`` (quiet, fixed seed). ``f32_cache`` keeps
    keys and values in float32 (llama.cpp's default is float16), for exact comparisons."""
    llama_cpp = llama_cpp_module()
    threads = int(threads or os.cpu_count() or 1)
    cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if f32_cache else {}
    return llama_cpp.Llama(
        model_path=str(Path(path)),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        seed=0,
        verbose=False,
        n_gpu_layers=0,
        **cache,
    )


def greedy(llm, prompt: Sequence[int], new_tokens: int) -> list[int]:
    """Greedy continuation of ``prompt`` (token ids), ``new_tokens`` long."""
    llm.reset()
    llm.eval(list(map(int, prompt)))
    out: list[int] = []
    for _ in range(new_tokens):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def prompt_logits(llm, prompt: Sequence[int]) -> np.ndarray:
    """Logits at every prompt position, ``[len(prompt), vocab]`` float32."""
    llm.reset()
    llm.eval(list(map(int, prompt)))
    return np.array(llm.scores[: len(prompt)], dtype=np.float32)


def perplexity(llm, windows: np.ndarray) -> float:
    """``exp(Σ NLL / Σ scored tokens)`` over windows ``[n, seqlen]``, each scoring its
    last ``seqlen - 1`` tokens with no context across windows (our protocol)."""
    nll, count = 0.0, 0
    for w in np.asarray(windows):
        logits = prompt_logits(llm, w)[:-1].astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        nll += float((lse - logits[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return math.exp(nll / count)


def time_prompt(llm, tokens: Sequence[int]) -> float:
    """Seconds to process ``tokens`` as one prompt from an empty context (llama-bench ``pp``)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(list(map(int, tokens)))
    return time.perf_counter() - t0


def time_generation(llm, tokens: Sequence[int]) -> float:
    """Seconds to evaluate ``tokens`` one at a time from an empty context (llama-bench
    ``tg``: each step is one decode of batch 1)."""
    llm.reset()
    t0 = time.perf_counter()
    for tok in tokens:
        llm.eval([int(tok)])
    return time.perf_counter() - t0
