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

from . import checks
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
    checks.check_model_spec(model)
    checks.check_device(device)
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


def _setup(model: nn.Module, name: str, cls: type, target: Any, options: dict, calib_samples: int, seqlen: int,
           seed: int) -> tuple[Any, Any]:
    """Build the method object (bad keyword = one-line error), check calibration, seed."""
    try:
        method_obj = cls(target, **options)
    except TypeError as exc:
        raise LlmpruneError(f"bad option for method {name}: {exc}") from None
    adapter = get_adapter(model)
    _validate_calibration(calib_samples, seqlen)
    if getattr(method_obj, "needs_calibration", True):
        checks.check_seqlen(model, seqlen)
    torch.manual_seed(seed)
    return method_obj, adapter


def prune(model: nn.Module, tokenizer, method: str, ratio: float | None = None, pattern: str | None = None,
          calib_samples: int = 128, seqlen: int = 2048, seed: int = 0, device: str = "cpu",
          calib_dataset: str = "wikitext2", data_dir: str | os.PathLike | None = None,
          progress: bool = True, update: str | None = None, **options: Any) -> dict:
    """Prune ``model`` in place with ``method`` and return the report dictionary.

    ``ratio`` is the fraction of decoder-block linear weights removed; ``pattern`` an
    N:M string such as ``"2:4"``. ``options`` go to the method (e.g. ``damp``,
    ``blocksize`` for SparseGPT). ``update`` (``"sparsegpt"`` or ``"mrp"``, magnitude and
    Wanda only) compensates the method's mask with that solver's weight update.
    """
    from .methods import get_method, prune_unstructured
    from .methods.update import check_update

    checks.check_prune_args(model, tokenizer, method, ratio, pattern, calib_samples, seqlen, seed, device, options)
    update = check_update(method, update)
    if update is not None:
        options["update"] = update
    if method.lower() == "manual":
        return prune_manual(model, options.pop("spec", None), **options)
    from .methods.structured import structured_methods

    if method.lower() in structured_methods():
        if pattern is not None or ratio is None:
            raise LlmpruneError(f"{method} is structured: give --ratio R (fraction of block weights), not --pattern")
        return prune_structured(model, tokenizer, method.lower(), float(ratio), calib_samples=calib_samples,
                                seqlen=seqlen, seed=seed, device=device, calib_dataset=calib_dataset,
                                data_dir=data_dir, progress=progress, **options)
    sparsity = Sparsity.parse(ratio=ratio, pattern=pattern)
    method_cls = get_method(method)
    method_obj, adapter = _setup(model, method, method_cls, sparsity, options, calib_samples, seqlen, seed)
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
        "update": update,
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


def _structured_counts(model: nn.Module, params_before: int, block_before: int, block_after: int) -> dict:
    return {"params_before": params_before, "params_after": count_parameters(model),
            "params_note": "stored parameters (tied embeddings counted once); structured pruning removes them",
            "block_linear_params_before": block_before, "block_linear_params": block_after}


def prune_structured(model: nn.Module, tokenizer, method: str, ratio: float, calib_samples: int = 128,
                     seqlen: int = 2048, seed: int = 0, device: str = "cpu", calib_dataset: str = "wikitext2",
                     data_dir: "str | os.PathLike | None" = None, progress: bool = True, **options: Any) -> dict:
    """Structured methods (Wanda-sp, FLAP, ShortGPT, LLM-Pruner, SoBP): heads/channels/blocks removed
    physically; ``ratio`` is the fraction of decoder-block linear weights."""
    from .methods.structured import prune_structured as run, structured_methods
    from .surgery import block_widths

    method_obj, adapter = _setup(model, method, structured_methods()[method], ratio, options, calib_samples, seqlen,
                                 seed)
    params_before = count_parameters(model)
    block_before = adapter.block_linear_params()
    t0 = time.perf_counter()
    calib = calibration_data(tokenizer, calib_samples, seqlen, seed, calib_dataset, data_dir)
    result = run(model, adapter, method_obj, calib, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    adapter = get_adapter(model)
    block_after = adapter.block_linear_params()
    return {
        "method": method,
        "ratio": ratio,
        "achieved_ratio": 1.0 - block_after / block_before,
        "pattern": None,
        "options": method_obj.options(),
        "model_type": model.config.model_type,
        "calibration": {"dataset": calib_dataset, "samples": calib_samples, "seqlen": seqlen, "seed": seed},
        **_structured_counts(model, params_before, block_before, block_after),
        "seconds": seconds,
        "prune_seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_device_mb": result["peak_device_mb"],
        "device": str(device),
        "removed": result["removed"],
        "block_influence": result["block_influence"],
        **{k: result[k] for k in ("stage1_seconds", "stage1_peak_rss_mb", "train_seconds", "disp", "pg", "sobp") if k in result},
        "layers_structured": block_widths(adapter),
        "environment": environment(),
    }


def prune_manual(model: nn.Module, spec: "str | os.PathLike | dict | None", **unused: Any) -> dict:
    """Apply a structured plan (YAML/JSON file or dict; see :mod:`llmprune.surgery.plan`)
    physically and return the report: the model really gets smaller."""
    from .surgery import StructuredPlan, apply_plan, block_widths, load_plan

    if spec is None:
        raise LlmpruneError("--method manual needs --spec FILE listing what to remove per layer")
    plan = StructuredPlan.from_dict(spec) if isinstance(spec, dict) else load_plan(spec)
    adapter = get_adapter(model)
    params_before = count_parameters(model)
    block_before = adapter.block_linear_params()
    t0 = time.perf_counter()
    apply_plan(adapter, plan)
    seconds = time.perf_counter() - t0
    adapter = get_adapter(model)
    block_after = adapter.block_linear_params()
    return {
        "method": "manual",
        "ratio": 1.0 - block_after / block_before,
        "pattern": None,
        "options": {"plan": plan.to_dict()},
        "model_type": model.config.model_type,
        "calibration": None,
        **_structured_counts(model, params_before, block_before, block_after),
        "seconds": seconds,
        "prune_seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": None,
        "device": "cpu",
        "layers_structured": block_widths(adapter),
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


def evaluate(model: nn.Module, tokenizer, ppl: Sequence[str] | str | None = None, seqlen: int = 2048,
             max_windows: int | None = None, data_dir: str | os.PathLike | None = None,
             device: str = "cpu", progress: bool = True, zeroshot: Sequence[str] | str | None = None,
             limit: int | None = None, batch_size: int = 8, items: str | Sequence[int] | None = None) -> dict:
    """Perplexity on each dataset and zero-shot accuracy on each task:
    ``{"ppl": {name: value}, "zeroshot": {task: {"acc", "acc_norm", "n", ...}}, "protocol": {name: {...}}}``.

    ``ppl`` defaults to WikiText-2 when no ``zeroshot`` tasks are given, else to none.
    Zero-shot tasks (piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq,
    openbookqa, or ``"all"``) run lm-eval on ``data_dir/zeroshot/*.jsonl``, the first
    ``limit`` items each when given, or items ``"START:END"`` (``items``; join ranges with
    :func:`llmprune.eval.zeroshot.merge_item_ranges`); the ``"zeroshot"`` key is present only then.
    """
    from .eval.perplexity import evaluate_ppl

    checks.check_eval_args(model, tokenizer, seqlen, max_windows, device)
    if ppl is None:
        ppl = () if zeroshot else ("wikitext2",)
    names = [p.strip() for p in (ppl.split(",") if isinstance(ppl, str) else ppl) if p.strip()]
    if not names and not zeroshot:
        raise LlmpruneError("no perplexity dataset given: pass e.g. --ppl wikitext2")
    if seqlen < 2:
        raise LlmpruneError(f"--seqlen {seqlen} must be at least 2")
    if max_windows is not None and max_windows < 1:
        raise LlmpruneError(f"--max-windows {max_windows} must be at least 1")
    if zeroshot:
        from .eval.zeroshot import check_zeroshot, evaluate_zeroshot

        check_zeroshot(zeroshot, data_dir, limit, batch_size, items)  # fail before the perplexity work
    result: dict = {"ppl": {}, "protocol": {}}
    if names:
        result = evaluate_ppl(model, tokenizer, names, seqlen=seqlen, max_windows=max_windows,
                              data_dir=data_dir, device=device, progress=progress)
    if zeroshot:
        scores = evaluate_zeroshot(model, tokenizer, zeroshot, data_dir, limit=limit,
                                   batch_size=batch_size, progress=progress, items=items)
        result["zeroshot"] = scores["zeroshot"]
        result["protocol"].update(scores["protocol"])
    return result


def save(model: nn.Module, tokenizer, out: str | os.PathLike, report: dict, force: bool = False) -> Path:
    """Write model + tokenizer + report.json to ``out`` atomically."""
    from .export import save_pruned

    return save_pruned(model, tokenizer, out, report, force=force)
