"""The public Python surface: :func:`load`, :func:`prune`, :func:`evaluate`, :func:`save`.

The CLI is a thin layer over these functions.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from . import checks
from .errors import LlmpruneError
from .models import count_nonzero_parameters, count_parameters, get_adapter
from .models.loading import load_model_and_tokenizer
from .prune_report import Calibration, PruneReport, StructuredSection, UnstructuredSection

if TYPE_CHECKING:
    from .methods import Method

__all__ = ["calibration_data", "evaluate", "load", "prune", "save"]


def load(
    model: str | os.PathLike | None = None, dtype: str | torch.dtype = "float32", device: str = "cpu"
) -> tuple[nn.Module, Any]:
    """Load a model and tokenizer: ``None``/``"smollm2-135m"`` (the embedded default),
    a local Hugging Face directory (including llmprune outputs) or a hub id (online)."""
    checks.check_model_spec(model)
    checks.check_device(device)
    return load_model_and_tokenizer(model, dtype=dtype, device=device)


def calibration_data(
    tokenizer,
    n: int,
    seqlen: int,
    seed: int = 0,
    dataset: str = "wikitext2",
    data_dir: str | os.PathLike | None = None,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """``n`` random windows of ``seqlen`` tokens from the dataset's calibration split
    (WikiText-2 train portion by default; C4 validation for ``c4``), or, for
    ``dataset="self"``, ``n`` windows ``model`` samples itself (chat models: whole
    conversations from their chat template; see :mod:`llmprune.data.self_generated`)."""
    from .data import calibration_windows, load_text, tokenize
    from .data.self_generated import NAME as SELF
    from .data.self_generated import self_generated_windows

    if dataset == SELF:
        if model is None:
            raise LlmpruneError("calibration dataset 'self' needs the model that generates it: pass model=")
        if n < 1:
            raise LlmpruneError(f"--calib-samples {n} must be at least 1")
        return self_generated_windows(model, tokenizer, n, seqlen, seed)

    split = {"wikitext2": "train", "c4": "validation", "ptb": "valid"}.get(dataset, "train")
    ids = tokenize(tokenizer, load_text(dataset, split=split, data_dir=data_dir))
    return calibration_windows(ids, n=n, seqlen=seqlen, seed=seed)


def _config(model: nn.Module) -> Any:
    """A transformers model's config (``nn.Module`` attributes are untyped)."""
    return model.config


def _validate_calibration(calib_samples: int, seqlen: int) -> None:
    if calib_samples < 1:
        raise LlmpruneError(f"--calib-samples {calib_samples} must be at least 1")
    if seqlen < 2:
        raise LlmpruneError(f"--seqlen {seqlen} must be at least 2")


def prune(
    model: nn.Module,
    tokenizer,
    method: "str | Method",
    ratio: float | str | None = None,
    pattern: str | None = None,
    calib_samples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    device: str = "cpu",
    calib_dataset: str = "wikitext2",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    reuse: Mapping[str, Any] | None = None,
    **options: Any,
) -> PruneReport:
    """Prune ``model`` in place with ``method`` and return the :class:`PruneReport`.

    ``method`` is a name (see ``llmprune methods``) or a method object already built
    (then ``ratio``, ``pattern`` and ``options`` must not be given). ``ratio`` is the
    fraction of decoder-block linear weights removed; ``pattern`` an N:M string such as
    ``"2:4"`` (unstructured methods). ``options`` are the method's (validated by its
    ``Config``, e.g. ``damp``/``blocksize`` for SparseGPT, ``update="mrp"`` for Wanda).
    ``reuse`` hands results of earlier stages to the method (see :class:`PruneContext`).
    """
    from .methods import Method, PruneContext, build_method
    from .methods.unstructured import block_sparsity
    from .surgery import block_widths

    checks.check_prune_args(model, method, ratio, pattern, calib_samples, seqlen, seed, device)
    if isinstance(method, Method):
        if ratio is not None or pattern is not None or options:
            raise LlmpruneError("pass ratio, pattern and options when building the method, not to prune()")
        m = method
    else:
        m = build_method(method, ratio, pattern, options)
    if m.needs_calibration:
        checks.check_tokenizer(tokenizer, f"method {m.name} (calibration text)")
    adapter = get_adapter(model)
    _validate_calibration(calib_samples, seqlen)
    if m.needs_calibration:
        checks.check_seqlen(model, seqlen)
    torch.manual_seed(seed)
    structured = m.kind == "structured"
    params_before = count_parameters(model) if structured else count_nonzero_parameters(model)
    block_before = adapter.block_linear_params()
    t0 = time.perf_counter()
    calib = None
    if m.needs_calibration:
        calib = calibration_data(tokenizer, calib_samples, seqlen, seed, calib_dataset, data_dir, model)
    result = m.run(
        PruneContext(model, adapter, calib, device=str(device), progress=progress, seed=seed, reuse=reuse or {})
    )
    seconds = time.perf_counter() - t0
    adapter = get_adapter(model)
    block_after = adapter.block_linear_params()
    unstructured_section = structured_section = None
    if structured:
        achieved = 1.0 - block_after / block_before if block_before else 0.0
        structured_section = StructuredSection(
            achieved_ratio=achieved,
            block_linear_params_before=block_before,
            layers_structured=block_widths(adapter),
            removed=result.removed,
            block_influence=result.block_influence,
        )
        ratio_out, pattern_out = m.reported_target()
        ratio_out = achieved if ratio_out is None else ratio_out
        params_after = count_parameters(model)
        note = "stored parameters (tied embeddings counted once); structured pruning removes them"
    else:
        layers = result.layers or []
        unstructured_section = UnstructuredSection(
            block_sparsity=block_sparsity(layers),
            layers=layers,
            stored_params=count_parameters(model),
            update=getattr(m, "update", None),
        )
        ratio_out, pattern_out = m.reported_target()
        params_after = count_nonzero_parameters(model)
        note = "non-zero parameters (tied embeddings counted once); unstructured sparsity keeps tensor shapes"
    return PruneReport(
        method=m.name,
        kind=m.kind,
        ratio=ratio_out,
        pattern=pattern_out,
        options=m.options(),
        method_args=m.method_args(),
        model_type=str(_config(model).model_type),
        calibration=None if calib is None else Calibration(calib_dataset, calib_samples, seqlen, seed),
        params_before=params_before,
        params_after=params_after,
        params_note=note,
        block_linear_params=block_after,
        seconds=seconds,
        prune_seconds=result.seconds,
        peak_rss_mb=result.peak_rss_mb,
        peak_device_mb=result.peak_device_mb,
        device=str(device),
        environment=environment(),
        unstructured=unstructured_section,
        structured=structured_section,
        stages=dict(result.stages),
        details=result.details,
    )


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


def evaluate(
    model: nn.Module,
    tokenizer,
    ppl: Sequence[str] | str | None = None,
    seqlen: int = 2048,
    max_windows: int | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    progress: bool = True,
    zeroshot: Sequence[str] | str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    items: str | Sequence[int] | None = None,
) -> dict:
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
        result = evaluate_ppl(
            model,
            tokenizer,
            names,
            seqlen=seqlen,
            max_windows=max_windows,
            data_dir=data_dir,
            device=device,
            progress=progress,
        )
    if zeroshot:
        scores = evaluate_zeroshot(
            model, tokenizer, zeroshot, data_dir, limit=limit, batch_size=batch_size, progress=progress, items=items
        )
        result["zeroshot"] = scores["zeroshot"]
        result["protocol"].update(scores["protocol"])
    return result


def save(
    model: nn.Module, tokenizer, out: str | os.PathLike, report: PruneReport | dict | None, force: bool = False
) -> Path:
    """Write model + tokenizer + ``report.json`` and ``recipe.yaml`` (the run as a recipe)
    to ``out`` atomically.

    ``out`` ending in ``.gguf``: one GGUF file for llama.cpp instead of a directory (f16, or
    the type tagged in its name: ``NAME.f32.gguf``, ``NAME.q8_0.gguf``, ``NAME.Q4_1.gguf``,
    ``NAME.Q4_K_M.gguf``), with ``NAME.gguf.report.json`` and ``NAME.gguf.recipe.yaml``
    next to it; the same file as ``llmprune export`` of the directory (see
    :mod:`llmprune.export.gguf_out`). ``report.export`` records what was written."""
    from .export.gguf_out import is_gguf_out, save_gguf

    if is_gguf_out(out):
        save_gguf(model, tokenizer, out, report, force=force)
        return Path(out).expanduser()
    from .export import save_pruned

    return save_pruned(model, tokenizer, out, report, force=force)
