"""``llmprune export SRC --format vllm|stock|layout --out DIR``: rewrite a saved model in
another checkpoint format (see :mod:`llmprune.export.layout` for the formats).

The source is read with :func:`llmprune.load` (any format llmprune writes, or a plain
Hugging Face directory) and written with :func:`llmprune.export.save.write_model` forced
to the requested format; a model the format cannot hold is refused before anything is
written. ``report.json`` is carried over with its ``export`` entry replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LlmpruneError
from .atomic import check_output_dir
from .layout import FORMATS

#: what ``llmprune export --format`` accepts
EXPORT_FORMATS = tuple(f for f in FORMATS if f != "auto")


def convert(src: str | Path, out: str | Path, fmt: str, force: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """Write the model saved in ``src`` to ``out`` in format ``fmt``; returns the ``export``
    record of what was written. The source's ``report.json``, when it has one, is carried over
    with ``export`` replaced and ``converted_from`` added."""
    from ..models.loading import load_model_and_tokenizer
    from ..prune_report import PruneReport
    from .save import write_model

    if fmt not in EXPORT_FORMATS:
        raise LlmpruneError(f"unknown --format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    source = Path(src).expanduser()
    if not source.is_dir():
        raise LlmpruneError(f"{src} is not a model directory: pass a directory written by `llmprune prune`")
    target = check_output_dir(out, force)
    if target.resolve() == source.resolve():
        raise LlmpruneError(f"--out {out} is the source directory: write the conversion to a new directory")
    report = PruneReport.from_json(source / "report.json") if (source / "report.json").is_file() else None
    previous = report.export.get("kind") if report is not None and report.export else None
    model, tokenizer = load_model_and_tokenizer(str(source), dtype=dtype)
    if report is not None:
        report.converted_from = {"path": str(src), "format": previous}
    return write_model(model, tokenizer, target, report, force=force, fmt=fmt)
