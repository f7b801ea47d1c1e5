"""Speed and memory of a model: prefill and decode tokens/s, time to first token, peak
memory; several models measured in the same run with interleaved trials.

Protocol (recorded in the output): random token ids (seeded, the same for every model),
``prompt_len`` prompt tokens, greedy decoding of ``new_tokens`` tokens with the
transformers KV cache, one forward per token; ``warmup`` untimed repetitions, then
``trials`` timed ones, model A and model B alternating inside every trial so that
machine drift hits both alike; median and min/max reported. On CUDA, times come from
CUDA events and memory from ``torch.cuda.max_memory_allocated``; on CPU, from
``time.perf_counter`` and the process RSS sampled every 2 ms above its level before the
measurement (the weights themselves are reported separately as ``weight_mb``).
Keys ending in ``_b8`` hold the ``batch`` size of the run (8 by default; the protocol's
``batch_sizes`` names it).
"""

from __future__ import annotations

import inspect
import statistics
import threading
import time
from typing import Any, Callable

import torch
from torch import nn


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


class _PeakRSS:
    """Samples the process RSS in a thread; ``peak_mb`` is the maximum above the start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = _rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = _rss_mb()
            if now is not None and (self.peak is None or now > self.peak):
                self.peak = now
            time.sleep(self.interval)

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        if self.start is None or self.peak is None:
            return None
        return self.peak - self.start


class _Timer:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def measure(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0, out
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out


def weight_mb(model: nn.Module) -> float:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total / 2**20


CACHE_ARGS = ("cache", "past_key_values", "cache_params")


def cache_arg(model: nn.Module) -> str:
    """The name under which ``model.forward`` takes (and its output returns) the KV/state cache.

    transformers 5.24 renamed ``past_key_values`` (attention models) and ``cache_params``
    (Mamba) to ``cache``; the old names still work there but warn, and are removed in 5.40.
    Older releases (>= 5.0, our floor) only know the old names, so the name is read from
    the installed signature rather than assumed.
    """
    params = inspect.signature(model.forward).parameters
    for name in CACHE_ARGS:
        if name in params:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes none of {CACHE_ARGS}: no KV cache to decode with")


@torch.inference_mode()
def _prefill(model: nn.Module, ids: torch.Tensor, arg: str) -> tuple[Any, torch.Tensor]:
    out = model(input_ids=ids, use_cache=True)
    return getattr(out, arg), out.logits[:, -1:].argmax(-1)


@torch.inference_mode()
def _decode(
    model: nn.Module, cache: Any, token: torch.Tensor, steps: int, arg: str, tokens: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """``steps`` greedy decode steps, one forward per token on ``cache``; the chosen tokens
    are appended to ``tokens`` if given."""
    for _ in range(steps):
        out = model(input_ids=token, use_cache=True, **{arg: cache})
        cache = getattr(out, arg)
        token = out.logits[:, -1:].argmax(-1)
        if tokens is not None:
            tokens.append(token)
    return token


def greedy_decode(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The ``new_tokens`` greedy tokens after ``ids`` ([batch, new_tokens]), produced by the
    benchmark's own prefill + cached decode loop (so tests can check it against a full recompute)."""
    arg = cache_arg(model)
    cache, token = _prefill(model, ids, arg)
    tokens = [token]
    _decode(model, cache, token, new_tokens - 1, arg, tokens)
    return torch.cat(tokens, dim=1)


def _one_trial(
    model: nn.Module, ids1: torch.Tensor, ids8: torch.Tensor, new_tokens: int, timer: _Timer
) -> dict[str, float]:
    res: dict[str, float] = {}
    arg = cache_arg(model)
    t, (cache, tok) = timer.measure(lambda: _prefill(model, ids1, arg))
    res["ttft_s"] = t
    res["prefill_tok_s_b1"] = ids1.numel() / t
    t, _ = timer.measure(lambda: _decode(model, cache, tok, new_tokens, arg))
    res["decode_tok_s_b1"] = new_tokens / t
    t, (cache, tok) = timer.measure(lambda: _prefill(model, ids8, arg))
    res["prefill_tok_s_b8"] = ids8.numel() / t
    t, _ = timer.measure(lambda: _decode(model, cache, tok, new_tokens, arg))
    res["decode_tok_s_b8"] = ids8.shape[0] * new_tokens / t
    return res


def _config(model: nn.Module) -> Any:
    return model.config


def benchmark(
    models: dict[str, nn.Module],
    device: str = "cpu",
    prompt_len: int = 128,
    new_tokens: int = 64,
    batch: int = 8,
    trials: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict:
    """Measure every model in ``models`` (name -> model, already on ``device``)."""
    dev = torch.device(device)
    timer = _Timer(dev)
    vocab = min(int(_config(m).vocab_size) for m in models.values())
    g = torch.Generator().manual_seed(seed)
    ids8 = torch.randint(0, vocab, (batch, prompt_len), generator=g).to(dev)
    ids1 = ids8[:1]
    for model in models.values():
        model.eval()
        for _ in range(warmup):
            _one_trial(model, ids1, ids8, min(new_tokens, 8), timer)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    peaks: dict[str, float | None] = {}
    for _trial in range(trials):
        for name, model in models.items():
            peak: float | None
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
                runs[name].append(_one_trial(model, ids1, ids8, new_tokens, timer))
                peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            else:
                with _PeakRSS() as sampler:
                    runs[name].append(_one_trial(model, ids1, ids8, new_tokens, timer))
                peak = sampler.peak_mb
            if peak is not None:
                peaks[name] = max(peaks.get(name) or 0.0, peak)
    result: dict = {
        "protocol": {
            "device": str(dev),
            "prompt_len": prompt_len,
            "new_tokens": new_tokens,
            "batch_sizes": [1, batch],
            "trials": trials,
            "warmup": warmup,
            "seed": seed,
            "threads": torch.get_num_threads(),
            "timing": "CUDA events" if dev.type == "cuda" else "perf_counter",
            "memory": "max_memory_allocated above the weights"
            if dev.type == "cuda"
            else "peak process RSS above the level before each trial (sampled every 2 ms)",
            "decode": "greedy, one forward per token with the transformers KV cache",
            "order": "models alternate inside every trial",
        },
        "models": {},
    }
    for name, model in models.items():
        metrics = {}
        for key in runs[name][0]:
            values = [r[key] for r in runs[name]]
            metrics[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        result["models"][name] = {
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
            "weight_mb": weight_mb(model),
            "peak_activation_mb": peaks.get(name),
            "metrics": metrics,
        }
    names = list(models)
    if len(names) == 2:
        a, b = (result["models"][n]["metrics"] for n in names)
        result["speedup"] = {
            "of": names[0],
            "vs": names[1],
            **{k: a[k]["median"] / b[k]["median"] for k in a if k.endswith("tok_s_b1") or k.endswith("tok_s_b8")},
            "ttft_s": b["ttft_s"]["median"] / a["ttft_s"]["median"],
        }
    return result
