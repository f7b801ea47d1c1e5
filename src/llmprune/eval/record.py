"""``eval.json`` next to a model: the evaluation results that ``llmprune report`` reads.

``llmprune eval DIR --save`` merges its result into ``DIR/eval.json``: the ``ppl``,
``zeroshot`` and ``protocol`` mappings are updated key by key (a perplexity run and a
zero-shot run add up; a re-run of one dataset or task replaces it), other keys are
replaced. The file is written to a temporary name in ``DIR`` and renamed, so a reader
never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import LlmpruneError

EVAL_FILE = "eval.json"
_MERGED = ("ppl", "zeroshot", "protocol")


def load_eval(model_dir: str | os.PathLike) -> dict | None:
    """The parsed ``eval.json`` of ``model_dir``, or ``None`` when there is none."""
    path = Path(model_dir) / EVAL_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LlmpruneError(
            f"{path} is not valid JSON ({exc}): delete it and re-run `llmprune eval {model_dir} --save`"
        ) from None
    if not isinstance(data, dict):
        raise LlmpruneError(f"{path} is not a JSON object: delete it and re-run `llmprune eval {model_dir} --save`")
    return data


def merge_eval(old: dict | None, new: dict) -> dict:
    """``new`` over ``old``, the result mappings merged key by key."""
    merged = dict(old or {})
    for key, value in new.items():
        if key in _MERGED and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def save_eval(model_dir: str | os.PathLike, result: dict) -> Path:
    """Merge ``result`` into ``model_dir/eval.json`` atomically; returns its path."""
    directory = Path(model_dir).expanduser()
    if not directory.is_dir():
        raise LlmpruneError(
            f"--save writes eval.json into the model directory, but {model_dir} is not a "
            "directory: evaluate a saved model directory or drop --save"
        )
    path = directory / EVAL_FILE
    text = json.dumps(merge_eval(load_eval(directory), result), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{EVAL_FILE}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
