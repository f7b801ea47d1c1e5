"""Evaluation and calibration corpora: WikiText-2 (embedded), PTB and C4 (local or hub).

Text conventions follow the GPTQ / SparseGPT / Wanda code so that perplexities are
comparable with published tables:

- WikiText-2: ``"\\n\\n".join(rows)`` of the raw split (blank rows as ``""``).
- PTB: ``" ".join(lines)``.
- C4: ``"\\n\\n".join(documents)`` of the local validation sample (the SparseGPT
  protocol takes 256 windows from the first 1100 validation documents; a local sample
  is comparable in spirit only).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from ..errors import LlmpruneError

CORPORA = {
    "wikitext2": ("test", "train", "validation"),
    "ptb": ("test", "valid"),
    "c4": ("validation",),
}

_FILES = {
    ("wikitext2", "test"): "wikitext2/wiki.test.raw",
    ("wikitext2", "validation"): "wikitext2/wiki.valid.raw",
    ("wikitext2", "train"): "wikitext2/wiki.train.prefix1MB.raw",
    ("ptb", "test"): "ptb/ptb.test.txt",
    ("ptb", "valid"): "ptb/ptb.valid.txt",
    ("c4", "validation"): "c4/c4_validation_2k.parquet",
}


#: environment variable naming the data folder used when no ``data_dir`` is given
DATA_DIR_ENV = "LLMPRUNE_DATA_DIR"


def _locate(name: str, split: str, data_dir: str | os.PathLike | None) -> Path | None:
    rel = _FILES[(name, split)]
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        found = _locate(name, split, os.environ[DATA_DIR_ENV])
        if found is not None or name != "wikitext2":
            return found
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        for candidate in (root / rel, root / Path(rel).name):
            if candidate.is_file():
                return candidate
        return None
    if name == "wikitext2":
        packaged = resources.files("llmprune.data").joinpath(rel)
        if packaged.is_file():
            return Path(str(packaged))
    return None


def _join_wikitext(raw: str) -> str:
    rows = [line if line.strip() else "" for line in raw.splitlines(keepends=True)]
    return "\n\n".join(rows)


def _read_c4(path: Path) -> str:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LlmpruneError("reading the C4 parquet file needs pyarrow: run `pip install pyarrow`") from None
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return "\n\n".join(texts)


def _from_hub(name: str, split: str) -> str:
    try:
        import datasets
    except ImportError:
        raise LlmpruneError(
            f"{name} is not shipped with llmprune: pass --data-dir DIR or set {DATA_DIR_ENV}=DIR "
            f"(a folder holding {_FILES[(name, split)]})"
        ) from None
    try:
        if name == "ptb":
            rows = datasets.load_dataset("ptb_text_only", "penn_treebank", split=split)["sentence"]
            return " ".join(rows)
        if name == "wikitext2":
            rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
            return "\n\n".join(rows)
        rows = datasets.load_dataset(
            "allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}, split="validation"
        )["text"][:1100]
        return "\n\n".join(rows)
    except Exception as exc:  # network/hub errors come in many types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmpruneError(
            f"cannot fetch {name} from the hub ({first}): pass --data-dir DIR with local files"
        ) from None


def load_text(name: str, split: str = "test", data_dir: str | os.PathLike | None = None) -> str:
    """The full text of one corpus split, joined by the published convention."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in CORPORA:
        raise LlmpruneError(f"unknown dataset {name!r}: choose one of {', '.join(CORPORA)}")
    if split not in CORPORA[key]:
        raise LlmpruneError(f"{key} has no split {split!r}: choose one of {', '.join(CORPORA[key])}")
    path = _locate(key, split, data_dir)
    if path is None:
        if data_dir is not None:
            raise LlmpruneError(
                f"{key} {split} not found under {data_dir}: expected {Path(data_dir) / _FILES[(key, split)]}"
            )
        return _from_hub(key, split)
    if key == "c4":
        return _read_c4(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LlmpruneError(f"{path} is not valid UTF-8 (byte {exc.start}): re-create it as UTF-8 text") from None
    except OSError as exc:
        raise LlmpruneError(f"cannot read {path} ({exc.strerror or type(exc).__name__}): check the file") from None
    if key == "ptb":
        return " ".join(raw.splitlines(keepends=True))
    if split == "train":
        return raw  # the prefix file is already "".join(rows)
    return _join_wikitext(raw)
