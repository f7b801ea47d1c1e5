"""Atomic output directories: written under a temporary name, renamed when complete.

What an output directory promises:

- no partial output: everything is written into ``.<name>.llmprune-tmp-<pid>-*`` next to
  ``out`` and renamed to ``out`` only when complete; an error, Ctrl-C or SIGTERM removes
  the temporary folder, and one left by ``kill -9`` or a power cut is removed (and named
  in a warning) by the next run writing into the same folder;
- no silent overwrite: an existing ``out`` is refused unless ``force`` is given, and
  ``force`` replaces only an earlier llmprune output (a directory with our
  ``report.json``) or an empty directory; the final check and rename happen under an
  exclusive lock on the parent directory, so of two concurrent runs writing the same
  ``out`` without ``force`` one fails instead of replacing the other's output;
- early failure: a path containing the current directory, an unwritable parent or too
  little free space is refused before any work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from torch import nn

from ..errors import LlmpruneError

try:
    import fcntl
except ImportError:  # not POSIX: commits are not serialised across processes
    fcntl = None  # type: ignore[assignment]

REPORT_FILE = "report.json"
_TMP_TAG = "llmprune-tmp"
_OLD_TAG = "llmprune-old"
_MARGIN_BYTES = 8 << 20  # tokenizer files, configs and report next to the weights


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        key = tensor.data_ptr() if tensor.device.type != "meta" else id(tensor)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def is_llmprune_output(path: Path) -> bool:
    """A directory written by llmprune: its ``report.json`` is a JSON object naming a method."""
    try:
        data = json.loads((path / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "method" in data


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_writable(parent: Path, out: Path) -> None:
    """Create and remove a probe folder: catches permissions, read-only mounts and root alike."""
    try:
        probe = tempfile.mkdtemp(prefix=".llmprune-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise LlmpruneError(
            f"cannot write --out {out}: {parent} is not writable ({exc.strerror}); choose another --out"
        ) from None


def _check_free_space(parent: Path, out: Path, need: int) -> None:
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return
    if free < need:
        raise LlmpruneError(
            f"not enough free space for --out {out}: about {need / 2**20:.1f} MiB needed, "
            f"{free / 2**20:.1f} MiB free on {parent}; free space or choose another --out"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(path: Path) -> list[Path]:
    """Remove temporary folders (and files) next to ``path`` whose writing process is gone; warn naming each."""
    parent = path.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:{_TMP_TAG}|{_OLD_TAG})-(\d+)-")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        folder = entry.is_dir() and not entry.is_symlink()
        if folder:
            shutil.rmtree(entry, ignore_errors=True)
        else:  # a single-file output's temporary (``atomic_files``)
            with contextlib.suppress(OSError):
                entry.unlink()
        if not entry.exists():
            removed.append(entry)
            print(
                f"warning: removed {entry}, a temporary {'folder' if folder else 'file'} left by "
                f"an interrupted llmprune run (pid {m.group(1)})",
                file=sys.stderr,
            )
    return removed


def check_output_dir(out: str | Path, force: bool, model: nn.Module | None = None) -> Path:
    """Fail early (before any work) if ``out`` cannot or must not be written.

    ``model`` (optional) sizes the free-space check: its weights plus a margin.
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise LlmpruneError(f"output directory {out!r} must be a path")
    path = Path(out).expanduser()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if cwd == resolved or resolved in cwd.parents:
        raise LlmpruneError(
            f"--out {out} is (or contains) the current directory: choose a new folder such as --out pruned-model"
        )
    if path.exists() and not path.is_dir():
        raise LlmpruneError(f"output path {path} exists and is not a directory: choose another --out")
    if path.exists() and not force:
        raise LlmpruneError(f"output directory {path} already exists: choose another --out or pass --force")
    if path.exists() and any(path.iterdir()) and not is_llmprune_output(path):
        raise LlmpruneError(
            f"--force replaces only an llmprune output (with its {REPORT_FILE}) or an empty "
            f"directory, and {path} is neither: choose another --out"
        )
    sweep_stale(path)
    parent = _existing_ancestor(resolved.parent)
    _check_writable(parent, path)
    if model is not None:
        _check_free_space(parent, path, model_bytes(model) + _MARGIN_BYTES)
    return path


@contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the parent directory: one commit at a time per folder."""
    if fcntl is None:
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into ``SystemExit`` while writing, so that ``finally`` removes the
    temporary folder (only where the default handler would have killed the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


@contextmanager
def atomic_directory(out: str | Path, force: bool = False, need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; on success it becomes ``out``.

    Errors while writing (a full disk, a read-only folder ...) become one-line
    :class:`LlmpruneError` and leave nothing behind.
    """
    path = check_output_dir(out, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmpruneError(f"cannot create {path.parent} ({exc.strerror}): choose another --out") from None
    if need_bytes is not None:
        _check_free_space(path.parent, path, need_bytes)
    with _terminate_cleanly():
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_TMP_TAG}-{os.getpid()}-", dir=path.parent))
        try:
            tmp.chmod(0o755)
            try:
                yield tmp
            except LlmpruneError:
                raise
            except Exception as exc:
                raise LlmpruneError(
                    f"writing {path} failed ({_first_line(exc)}); nothing was written: check "
                    "free space and permissions, or choose another --out"
                ) from None
            _commit(tmp, path, force)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _commit(tmp: Path, path: Path, force: bool) -> None:
    """Rename ``tmp`` to ``path`` under the parent's lock, re-checking what is there now."""
    with _parent_lock(path.parent):
        if path.exists() and not force:
            raise LlmpruneError(
                f"output directory {path} appeared while this run was working (another run "
                "writing the same --out?): nothing was replaced; choose another --out or pass --force"
            )
        if path.exists():
            if not path.is_dir() or (any(path.iterdir()) and not is_llmprune_output(path)):
                raise LlmpruneError(
                    f"--force replaces only an llmprune output or an empty directory, and {path} "
                    "is neither now: choose another --out"
                )
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_OLD_TAG}-{os.getpid()}-", dir=path.parent))
            old = trash / path.name
            try:
                path.rename(old)
            except OSError as exc:
                shutil.rmtree(trash, ignore_errors=True)
                raise LlmpruneError(f"cannot replace {path} ({exc.strerror}): choose another --out") from None
            try:
                tmp.rename(path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    old.rename(path)
                if not old.exists():  # restored: the previous output is back in place
                    shutil.rmtree(trash, ignore_errors=True)
                raise LlmpruneError(f"cannot rename the finished output to {path} ({exc.strerror})") from None
            shutil.rmtree(trash, ignore_errors=True)
            return
        try:
            tmp.rename(path)
        except OSError as exc:
            raise LlmpruneError(
                f"cannot rename the finished output to {path} ({exc.strerror}): choose another --out"
            ) from None


def check_out_file(out: str | os.PathLike, force: bool = False) -> Path:
    """A single-file output (``FILE.gguf``): refused when it is a directory or exists without ``force``."""
    path = Path(out).expanduser()
    if path.suffix.lower() != ".gguf":
        raise LlmpruneError(f"--out {path} should name a .gguf file")
    if path.is_dir():
        raise LlmpruneError(f"--out {path} is a directory: name a .gguf file")
    if path.exists() and not force:
        raise LlmpruneError(f"{path} already exists: choose another --out or pass --force")
    return path


@contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """A temporary path next to ``out`` that becomes ``out`` on success (else is removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_files(paths: Sequence[Path], force: bool = False) -> Iterator[list[Path]]:
    """Temporary paths next to ``paths`` (same names' suffixes, so ``x.gguf`` gets a ``.gguf``
    temporary), renamed onto them together when the block succeeds, the **last path last**
    (the main file: its presence means the others are complete too).

    Errors while writing become one-line :class:`LlmpruneError`; on any error, Ctrl-C or
    SIGTERM every temporary is removed and nothing is renamed. At the commit, under the
    parent's lock, an output that appeared meanwhile is refused without ``force``; a failed
    rename removes the files this call already put in place.
    """
    paths = [Path(p) for p in paths]
    parent = paths[-1].parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmpruneError(f"cannot create {parent} ({exc.strerror}): choose another --out") from None
    tmps: list[Path] = []
    with _terminate_cleanly():
        try:
            for p in paths:
                fd, name = tempfile.mkstemp(prefix=f".{p.name}.{_TMP_TAG}-{os.getpid()}-", suffix=p.suffix, dir=parent)
                os.close(fd)
                tmps.append(Path(name))
            try:
                yield tmps
            except LlmpruneError:
                raise
            except Exception as exc:
                raise LlmpruneError(
                    f"writing {paths[-1]} failed ({_first_line(exc)}); nothing was written: check "
                    "free space and permissions, or choose another --out"
                ) from None
            _commit_files(tmps, paths, force)
        finally:
            for tmp in tmps:
                if tmp.exists():
                    tmp.unlink()


def _commit_files(tmps: Sequence[Path], paths: Sequence[Path], force: bool) -> None:
    with _parent_lock(paths[-1].parent):
        there = [p for p in paths if p.exists()]
        if there and not force:
            raise LlmpruneError(
                f"{there[0]} appeared while this run was working (another run writing the same --out?): "
                "nothing was replaced; choose another --out or pass --force"
            )
        done: list[Path] = []
        for tmp, path in zip(tmps, paths):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                for p in done:
                    with contextlib.suppress(OSError):
                        p.unlink()
                raise LlmpruneError(f"cannot rename the finished output to {path} ({exc.strerror})") from None
            done.append(path)
