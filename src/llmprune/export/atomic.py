"""Atomic output directories: written under a temporary name, renamed when complete.

A crash or an error mid-way never leaves a half-written directory under the final
name; an existing directory is refused unless ``force`` is given.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LlmpruneError


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Fail early (before any work) if ``out`` exists and ``force`` is not set."""
    path = Path(out).expanduser()
    if path.exists() and not force:
        raise LlmpruneError(f"output directory {path} already exists: choose another --out or pass --force")
    if path.exists() and not path.is_dir():
        raise LlmpruneError(f"output path {path} exists and is not a directory: choose another --out")
    return path


@contextmanager
def atomic_directory(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it becomes ``out``."""
    path = check_output_dir(out, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            path.rename(trash / path.name)
            tmp.rename(path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
