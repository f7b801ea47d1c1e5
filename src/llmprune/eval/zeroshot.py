"""Zero-shot accuracy on local task files with lm-eval as the engine.

The already-loaded model (any checkpoint :func:`llmprune.load` reads, heterogeneous
ones included) is wrapped in lm-eval's ``HFLM``; the tasks are lm-eval's own configs
for piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq and openbookqa, reading
``<data_dir>/zeroshot/<task>_<split>.jsonl`` (see :mod:`.zeroshot_tasks`). Nothing is
fetched from a hub: the Hugging Face offline switches are on while lm-eval runs.

Result: ``{"zeroshot": {task: {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n"}},
"protocol": {task: {...}}}``; ``acc_norm`` is ``None`` where lm-eval's task defines
only ``acc`` (winogrande, boolq).

Long tasks can be split: ``items="START:END"`` scores only those items (lm-eval's
``samples`` option, file order), and :func:`merge_item_ranges` joins ranges that cover a
task into the full-set score. acc and acc_norm are means over items, so the joined
value is the item-weighted mean of the parts.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import tempfile
from typing import Iterator, Sequence

import torch
from torch import nn

from ..checks import check_finite_logits, check_finite_model
from ..errors import LlmpruneError
from .zeroshot_tasks import TASKS, TaskFile, locate, parse_tasks, write_task_dir

_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Forbid hub access while lm-eval and ``datasets`` run (env and loaded modules)."""
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update({k: "1" for k in _OFFLINE_ENV})
    patched: list[tuple[object, str, object]] = []
    import datasets.config
    import huggingface_hub.constants

    for module, attr in (
        (datasets.config, "HF_DATASETS_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
    ):
        if hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, True)
    try:
        yield
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval warns that a model object (not a name) was passed; that is intended."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_git_probe() -> Iterator[None]:
    """lm-eval's ``simple_evaluate`` records the git commit of the working directory by
    running ``git describe`` with stderr inherited, so outside a git checkout every run
    prints ``fatal: not a git repository``. That field of lm-eval's result is not used
    here, so the probe is skipped (only while we evaluate; lm-eval's warnings and errors
    still reach the user)."""
    import lm_eval.evaluator

    probe = getattr(lm_eval.evaluator, "get_git_commit_hash", None)
    if probe is None:  # a later lm-eval without the probe
        yield
        return
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = probe


@contextlib.contextmanager
def _finite_logits(model: nn.Module) -> Iterator[None]:
    """Refuse NaN/inf logits: an argmax over NaN log-likelihoods silently picks choice 0."""

    def hook(module: nn.Module, args: object, output: object) -> None:
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, tuple) and output:
            logits = output[0]
        if isinstance(logits, torch.Tensor):
            check_finite_logits(logits, "zero-shot evaluation")

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def lm_eval_version() -> str:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        raise LlmpruneError("zero-shot evaluation needs lm-eval: pip install 'llmprune[zeroshot]'") from None


def parse_items(items: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"START:END"`` (or a pair) -> ``(start, end)``: items ``start`` to ``end - 1`` of each task."""
    if items is None:
        return None
    try:
        start, end = (int(v) for v in (items.split(":") if isinstance(items, str) else items))
    except (TypeError, ValueError):
        raise LlmpruneError(f"--items {items!r} must be START:END with integers, e.g. --items 0:2500") from None
    if start < 0 or end <= start:
        raise LlmpruneError(f"--items {start}:{end} must satisfy 0 <= START < END")
    return start, end


def _item_range(f: TaskFile, items: tuple[int, int]) -> tuple[int, int]:
    """``items`` clipped to the file; a range that starts past the end is an error."""
    start, end = items
    if start >= f.rows:
        raise LlmpruneError(
            f"--items {start}:{end} starts past the end of {f.task.filename} ({f.rows} items): use START < {f.rows}"
        )
    return start, min(end, f.rows)


def merge_item_ranges(parts: Sequence[dict], n_available: int) -> dict:
    """Join per-range scores ``[{"items": [start, end], "acc", "acc_norm", "n"}, ...]`` of one task.

    The ranges must tile ``[0, n_available)`` exactly (no gap, no overlap). acc and
    acc_norm are means of 0/1 item scores, so the result is the sum of the parts' item
    counts over ``n`` (bit for bit lm-eval's mean on the whole set); the standard
    errors are recomputed as lm-eval does for a mean of 0/1 scores, ``sqrt(p(1-p)/(n-1))``.
    """
    ordered = sorted(parts, key=lambda p: p["items"][0])
    position = 0
    for part in ordered:
        start, end = part["items"]
        if start != position or part["n"] != end - start:
            raise LlmpruneError(
                f"item ranges do not tile 0:{n_available}: expected one starting at {position}, "
                f"got {start}:{end} with n={part['n']}; run the missing range with --items"
            )
        position = end
    if position != n_available:
        raise LlmpruneError(f"item ranges cover 0:{position} of 0:{n_available}: run --items {position}:{n_available}")
    out: dict = {"n": n_available}
    for metric in ("acc", "acc_norm"):
        values = [p.get(metric) for p in ordered]
        if any(v is None for v in values):
            out[metric] = out[f"{metric}_stderr"] = None
            continue
        # every part's score is (items right) / n: join the integer counts, so the result is
        # the very float lm-eval's mean of 0/1 scores gives on the whole set
        mean = sum(round(v * p["n"]) for v, p in zip(values, ordered)) / n_available
        out[metric] = mean
        out[f"{metric}_stderr"] = (mean * (1 - mean) / (n_available - 1)) ** 0.5 if n_available > 1 else None
    return out


def protocol(
    f: TaskFile,
    n: int,
    limit: int | None,
    batch_size: int,
    version: str,
    dtype: str,
    items: tuple[int, int] | None = None,
) -> dict:
    """What a zero-shot number means: engine, prompt source, data file, sample count."""
    return {
        "engine": f"lm-eval {version} (HFLM over the loaded model)",
        "task": f"{f.task.lm_eval_name} = lm-eval {f.task.name} prompt/choices/metrics on a local file",
        "num_fewshot": 0,
        "limit": limit,
        "items": None if items is None else list(items),
        "n": n,
        "n_available": f.rows,
        "batch_size": batch_size,
        "dtype": dtype,
        "file": f"zeroshot/{f.task.filename}",
        "sha256": f.sha256[:16],
        "split": f.task.split,
        "metrics": list(f.task.metrics),
    }


def _metrics(raw: dict, f: TaskFile, n: int) -> dict:
    out: dict = {}
    for metric in ("acc", "acc_norm"):
        value = raw.get(f"{metric},none") if metric in f.task.metrics else None
        stderr = raw.get(f"{metric}_stderr,none") if metric in f.task.metrics else None
        out[metric] = None if value is None else float(value)
        out[f"{metric}_stderr"] = stderr if isinstance(stderr, (int, float)) else None
    out["n"] = n
    return out


def check_zeroshot(
    tasks: str | Sequence[str],
    data_dir: str | os.PathLike | None,
    limit: int | None = None,
    batch_size: int = 8,
    items: str | Sequence[int] | None = None,
) -> list[TaskFile]:
    """Validate the arguments, lm-eval's presence and every data file (before any model work)."""
    names = parse_tasks(tasks if isinstance(tasks, str) else list(tasks))
    if limit is not None and limit < 1:
        raise LlmpruneError(f"--limit {limit} must be at least 1")
    rng = parse_items(items)
    if rng is not None and limit is not None:
        raise LlmpruneError("--limit and --items both choose items: give one of them")
    if batch_size < 1:
        raise LlmpruneError(f"--batch-size {batch_size} must be at least 1")
    lm_eval_version()
    files = [locate(TASKS[name], data_dir) for name in names]
    if rng is not None:
        for f in files:
            _item_range(f, rng)
    return files


def evaluate_zeroshot(
    model: nn.Module,
    tokenizer,
    tasks: str | Sequence[str],
    data_dir: str | os.PathLike | None,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
    items: str | Sequence[int] | None = None,
) -> dict:
    """Zero-shot acc / acc_norm of ``model`` on each task (first ``limit`` items if given, or
    items ``START:END`` of the file, clipped to its length, if ``items`` is given).

    ``progress`` is accepted for symmetry with perplexity; lm-eval draws its own bars.
    lm-eval seeds Python's, NumPy's and torch's generators (its defaults) while it runs.
    """
    files = check_zeroshot(tasks, data_dir, limit, batch_size, items)
    version = lm_eval_version()
    rng = parse_items(items)
    ranges = {f.task.name: _item_range(f, rng) for f in files} if rng is not None else {}
    samples = {f.task.lm_eval_name: list(range(*ranges[f.task.name])) for f in files} if ranges else None
    check_finite_model(model, "evaluate zero-shot accuracy")
    with (
        offline(),
        _quiet_lm_eval(),
        _no_git_probe(),
        _finite_logits(model),
        tempfile.TemporaryDirectory(prefix="llmprune-tasks-") as tmp,
    ):
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        write_task_dir(files, tmp)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        manager = TaskManager(include_path=tmp, include_defaults=False)
        out = simple_evaluate(
            model=lm,
            tasks=[f.task.lm_eval_name for f in files],
            task_manager=manager,
            num_fewshot=0,
            limit=limit,
            samples=samples,
            log_samples=False,
        )
    if out is None:
        raise LlmpruneError("lm-eval returned no results (non-zero rank?): run on a single process")
    result: dict = {"zeroshot": {}, "protocol": {}}
    for f in files:
        key = f.task.lm_eval_name
        counts = out.get("n-samples", {}).get(key, {})
        rng_f = ranges.get(f.task.name)
        expected = rng_f[1] - rng_f[0] if rng_f else (f.rows if limit is None else min(limit, f.rows))
        n = int(counts.get("effective", expected))
        result["zeroshot"][f.task.name] = _metrics(out["results"][key], f, n)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        result["protocol"][f.task.name] = protocol(f, n, limit, batch_size, version, dtype, rng_f)
    return result


def mean_accuracy(zeroshot: dict, metric: str = "acc") -> float | None:
    """Unweighted mean of ``metric`` over the tasks that have it (``None`` if none)."""
    values = [v[metric] for v in zeroshot.values() if v.get(metric) is not None]
    return sum(values) / len(values) if values else None
