"""The public Python surface: :func:`load`, :func:`prune`, :func:`evaluate`, :func:`save`.

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .engine.layerwise import peak_rss_mb
from .errors import LlmpruneError
from .models import count_nonzero_parameters, count_parameters, get_adapter
from .models.loading import load_model_and_tokenizer
from .solvers.sparsity import Sparsity

__all__ = ["calibration_data", "evaluate", "load", "prune", "save"]


def load(model: str | os.PathLike | None = None, dtype: str | torch.dtype = "float32",
         device: str = "cpu") -> tuple[nn.Module, Any]:
    """Load a model and tokenizer: ``None``/``"smollm2-135m"`` (the embedded default),
    a local Hugging Face directory (including llmprune outputs) or a hub id (online)."""
    return load_model_and_tokenizer(model, dtype=dtype, device=device)


def calibration_data(tokenizer, n: int, seqlen: int, seed: int = 0, dataset: str = "wikitext2",
                     data_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """``n`` random windows of ``seqlen`` tokens from the dataset's calibration split
    (WikiText-2 train portion by default; C4 validation for ``c4``)."""
    from .data import calibration_windows, load_text, tokenize

    split = {"wikitext2": "train", "c4": "validation", "ptb": "valid"}.get(dataset, "train")
    ids = tokenize(tokenizer, load_text(dataset, split=split, data_dir=data_dir))
    return calibration_windows(ids, n=n, seqlen=seqlen, seed=seed)


def _validate_calibration(calib_samples: int, seqlen: int) -> None:
    if calib_samples < 1:
        raise LlmpruneError(f"--calib-samples {calib_samples} must be at least 1")
    if seqlen < 2:
        raise LlmpruneError(f"--seqlen {seqlen} must be at least 2")


def prune(model: nn.Module, tokenizer, method: str, ratio: float | None = None, pattern: str | None = None,
          calib_samples: int = 128, seqlen: int = 2048, seed: int = 0, device: str = "cpu",
          calib_dataset: str = "wikitext2", data_dir: str | os.PathLike | None = None,
          progress: bool = True, **options: Any) -> dict:
    """Prune ``model`` in place with ``method`` and return the report dictionary.

    ``ratio`` is the fraction of decoder-block linear weights removed; ``pattern`` an
    N:M string such as ``"2:4"``. ``options`` go to the method (e.g. ``damp``,
    ``blocksize`` for SparseGPT).
    """
    from .methods import get_method, prune_unstructured

    sparsity = Sparsity.parse(ratio=ratio, pattern=pattern)
    method_cls = get_method(method)
    try:
        method_obj = method_cls(sparsity, **options)
    except TypeError as exc:
        raise LlmpruneError(f"bad option for method {method}: {exc}") from None
    adapter = get_adapter(model)
    _validate_calibration(calib_samples, seqlen)
    torch.manual_seed(seed)
    params_before = count_nonzero_parameters(model)
    t0 = time.perf_counter()
    calib = None
    if method_obj.needs_calibration:
        calib = calibration_data(tokenizer, calib_samples, seqlen, seed, calib_dataset, data_dir)
    result = prune_unstructured(model, adapter, method_obj, calib, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    return {
        "method": method_cls.name,
        "ratio": sparsity.ratio,
        "pattern": f"{sparsity.n}:{sparsity.m}" if sparsity.is_nm else None,
        "options": method_obj.options(),
        "model_type": model.config.model_type,
        "calibration": None if calib is None else {
            "dataset": calib_dataset, "samples": calib_samples, "seqlen": seqlen, "seed": seed},
        "params_before": params_before,
        "params_after": count_nonzero_parameters(model),
        "params_note": "non-zero parameters (tied embeddings counted once); unstructured sparsity keeps tensor shapes",
        "stored_params": count_parameters(model),
        "block_linear_params": adapter.block_linear_params(),
        "block_sparsity": result["block_sparsity"],
        "seconds": seconds,
        "prune_seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_device_mb": result.get("peak_device_mb"),
        "device": str(device),
        "layers": result["layers"],
        "environment": environment(),
    }


def environment() -> dict:
    """Versions and hardware recorded with every report (reproducibility)."""
    import transformers

    from . import __version__

    return {
        "llmprune": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def evaluate(model: nn.Module, tokenizer, ppl: Sequence[str] | str = ("wikitext2",), seqlen: int = 2048,
             max_windows: int | None = None, data_dir: str | os.PathLike | None = None,
             device: str = "cpu", progress: bool = True) -> dict:
    """Perplexity on each dataset: ``{"ppl": {name: value}, "protocol": {name: {...}}}``."""
    from .eval.perplexity import evaluate_ppl

    names = [p.strip() for p in (ppl.split(",") if isinstance(ppl, str) else ppl) if p.strip()]
    if not names:
        raise LlmpruneError("no perplexity dataset given: pass e.g. --ppl wikitext2")
    if seqlen < 2:
        raise LlmpruneError(f"--seqlen {seqlen} must be at least 2")
    if max_windows is not None and max_windows < 1:
        raise LlmpruneError(f"--max-windows {max_windows} must be at least 1")
    return evaluate_ppl(model, tokenizer, names, seqlen=seqlen, max_windows=max_windows,
                        data_dir=data_dir, device=device, progress=progress)


def save(model: nn.Module, tokenizer, out: str | os.PathLike, report: dict, force: bool = False) -> Path:
    """Write model + tokenizer + report.json to ``out`` atomically."""
    from .export import save_pruned

    return save_pruned(model, tokenizer, out, report, force=force)
