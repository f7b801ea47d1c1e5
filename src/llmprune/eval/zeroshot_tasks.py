"""The seven zero-shot tasks: where their local files live, what a row must hold, and
the lm-eval task folder that reads them.

A data folder holds ``zeroshot/<task>_<split>.jsonl`` (one JSON object per line, the
Hugging Face dataset schema of each task; hellaswag's rows are lm-eval's processed
``{query, choices, label}``). :func:`locate` checks every row before lm-eval sees it, so
a missing or malformed file is one :class:`LlmpruneError` line naming the file and the
fix. :func:`write_task_dir` writes lm-eval task yamls (templates in
``llmprune/eval/tasks/``) pointing at those files, usable by our API and by
``lm_eval --include_path DIR`` alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from ..errors import LlmpruneError

TASK_PREFIX = "llmprune_"
DATA_HINT = "pass --data-dir pointing at a folder with zeroshot/<task>_<split>.jsonl"


def _str(row: dict, key: str) -> str | None:
    return None if isinstance(row.get(key), str) else f"field {key!r} must be a string"


def _int_label(row: dict, key: str, n: int) -> str | None:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        return f"field {key!r} must be an integer in [0, {n - 1}]"
    return None


def _lettered(row: dict, stem: str) -> str | None:
    """ARC / OpenBookQA: ``{stem, choices: {text[], label[]}, answerKey}``."""
    problem = _str(row, stem)
    if problem:
        return problem
    choices = row.get("choices")
    if (
        not isinstance(choices, dict)
        or not isinstance(choices.get("text"), list)
        or not isinstance(choices.get("label"), list)
        or len(choices["text"]) != len(choices["label"])
        or len(choices["text"]) < 2
        or not all(isinstance(t, str) for t in choices["text"])
    ):
        return "field 'choices' must be {text: [str, ...], label: [...]} of equal lengths"
    key = row.get("answerKey")
    if not isinstance(key, str) or key.lstrip() not in choices["label"]:
        return "field 'answerKey' must be one of choices.label"
    return None


def _check_piqa(row: dict) -> str | None:
    return _str(row, "goal") or _str(row, "sol1") or _str(row, "sol2") or _int_label(row, "label", 2)


def _check_hellaswag(row: dict) -> str | None:
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        return "field 'choices' must be a list of 4 strings"
    return _str(row, "query") or _int_label(row, "label", 4)


def _check_winogrande(row: dict) -> str | None:
    problem = _str(row, "sentence") or _str(row, "option1") or _str(row, "option2")
    if problem:
        return problem
    if "_" not in row["sentence"]:
        return "field 'sentence' must contain the blank '_'"
    return None if row.get("answer") in ("1", "2") else 'field \'answer\' must be "1" or "2"'


def _check_boolq(row: dict) -> str | None:
    return _str(row, "question") or _str(row, "passage") or _int_label(row, "label", 2)


@dataclass(frozen=True)
class ZeroShotTask:
    """One task: its lm-eval config template, eval split, file schema and metrics."""

    name: str
    split: str
    fields: str
    check: Callable[[dict], str | None]
    metrics: tuple[str, ...] = ("acc", "acc_norm")

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.split}.jsonl"

    @property
    def lm_eval_name(self) -> str:
        return TASK_PREFIX + self.name


TASKS: dict[str, ZeroShotTask] = {
    t.name: t
    for t in (
        ZeroShotTask("piqa", "validation", "{goal, sol1, sol2, label:int}", _check_piqa),
        ZeroShotTask("hellaswag", "validation", "{query, choices[4], label:int}", _check_hellaswag),
        ZeroShotTask(
            "winogrande", "validation", '{sentence, option1, option2, answer:"1"|"2"}', _check_winogrande, ("acc",)
        ),
        ZeroShotTask(
            "arc_easy", "test", "{question, choices:{text[], label[]}, answerKey}", lambda r: _lettered(r, "question")
        ),
        ZeroShotTask(
            "arc_challenge",
            "test",
            "{question, choices:{text[], label[]}, answerKey}",
            lambda r: _lettered(r, "question"),
        ),
        ZeroShotTask("boolq", "validation", "{question, passage, label:int (1 = yes)}", _check_boolq, ("acc",)),
        ZeroShotTask(
            "openbookqa",
            "test",
            "{question_stem, choices:{text[], label[]}, answerKey}",
            lambda r: _lettered(r, "question_stem"),
        ),
    )
}


def parse_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"piqa,boolq"`` or a list -> validated task names (``all`` = the seven)."""
    names = [t.strip().lower() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()]
    if names == ["all"]:
        return list(TASKS)
    if not names:
        raise LlmpruneError(f"no zero-shot task given: pass e.g. --zeroshot {','.join(TASKS)}")
    for name in names:
        if name not in TASKS:
            raise LlmpruneError(f"unknown zero-shot task {name!r}: choose from {', '.join(TASKS)} or all")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class TaskFile:
    """A checked data file: absolute path, row count, sha256 and the bytes that were checked."""

    task: ZeroShotTask
    path: Path
    rows: int
    sha256: str
    data: bytes = field(default=b"", repr=False, compare=False)


def locate(task: ZeroShotTask, data_dir: str | os.PathLike | None) -> TaskFile:
    """Find and check ``<data_dir>/zeroshot/<task>_<split>.jsonl`` (every row)."""
    if data_dir is None:
        raise LlmpruneError(f"zero-shot task {task.name} needs local data: {DATA_HINT}")
    path = (Path(data_dir).expanduser() / "zeroshot" / task.filename).resolve()
    if not path.is_file():
        raise LlmpruneError(f"zero-shot data file {path} not found: {DATA_HINT}")
    raw = path.read_bytes()
    rows = 0
    for lineno, data in enumerate(raw.splitlines(), start=1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LlmpruneError(
                f"zero-shot data file {path} line {lineno} is not valid UTF-8 (byte {exc.start}): "
                f"re-create it as UTF-8, one {task.fields} object per line"
            ) from None
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmpruneError(
                f"zero-shot data file {path} line {lineno} is not JSON ({exc.msg}): "
                f"re-create it as one {task.fields} object per line"
            ) from None
        problem = "not a JSON object" if not isinstance(row, dict) else task.check(row)
        if problem:
            raise LlmpruneError(
                f"zero-shot data file {path} line {lineno}: {problem}: "
                f"re-create it as one {task.fields} object per line"
            )
        rows += 1
    if rows == 0:
        raise LlmpruneError(f"zero-shot data file {path} is empty: re-create it as one {task.fields} object per line")
    return TaskFile(task, path, rows, hashlib.sha256(raw).hexdigest(), raw)


def template(task: ZeroShotTask) -> str:
    """The packaged lm-eval yaml of ``task`` (without its data file)."""
    return resources.files("llmprune.eval.tasks").joinpath(f"{task.name}.yaml").read_text()


def snapshot(f: TaskFile) -> Path:
    """A content-addressed copy of the checked bytes: ``<cache>/zeroshot/<sha256>/<task file>``.

    lm-eval reads the data through ``datasets``, whose cache is keyed by a file's path,
    size and modification time: a file edited in place with the same three would be
    scored from the stale cache. The copy's path names the sha256 of the bytes checked
    (and printed), so the data scored is always that data."""
    from ..models.loading import cache_dir

    if not f.data:
        return f.path
    folder = cache_dir() / "zeroshot" / f.sha256
    target = folder / f.task.filename
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == f.sha256:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{f.task.filename}.{os.getpid()}.tmp"
        tmp.write_bytes(f.data)
        os.replace(tmp, target)
    except OSError as exc:
        raise LlmpruneError(
            f"cannot write the zero-shot data snapshot {target} ({exc.strerror}): "
            "set LLMPRUNE_CACHE to a writable folder"
        ) from None
    return target


def write_task_dir(files: list[TaskFile], out: str | os.PathLike) -> Path:
    """Write one lm-eval yaml per task into ``out``, each reading the snapshot of its local file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        data_files = f"dataset_kwargs:\n  data_files:\n    {f.task.split}: {json.dumps(str(snapshot(f)))}\n"
        (out / f"{f.task.lm_eval_name}.yaml").write_text(template(f.task).rstrip() + "\n" + data_files)
    return out
