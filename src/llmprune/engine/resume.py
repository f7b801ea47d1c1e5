"""Resume state of a streamed run: which blocks are finished, the next block's
calibration inputs, the per-layer results so far and the RNG state.

The state lives in ``state/`` inside the run's partial output directory. After block
``k`` the pipeline writes the block's shard, then the inputs of block ``k + 1``, then
``progress.json``; each file is written under a temporary name and renamed, and
``progress.json`` is the commit point: a run killed at any moment resumes from the last
block whose ``progress.json`` was renamed into place, and since every block is a
deterministic function of its inputs and weights the resumed run writes the same
tensors as an uninterrupted one.

The structured methods run two passes (:mod:`llmprune.streamed_structured`): pass 1
commits each block's unit scores (:meth:`RunState.save_scores`) before ``progress.json``
counts it in ``scored``; pass 2 commits written blocks in ``done`` as above. SoBP
(:mod:`llmprune.streamed_sobp`) counts its stage-1 blocks in ``scored`` from the last
block down, with the gradient at the lowest scored block's inputs (``grad``), and its
stages 2-3 in ``done`` with both streams (``hidden``: pruned, ``dense``).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import LlmpruneError

PROGRESS = "progress.json"


@dataclass
class Progress:
    """What a finished prefix of blocks produced."""

    fingerprint: dict
    done: int = 0  # blocks finished (0..n_blocks; for the structured methods: written in pass 2)
    scored: int = 0  # structured methods: blocks scored in pass 1 (their scores-NNNNN.pt files)
    hidden: str | None = None  # file in state/ with the inputs of block ``done``
    weight_map: dict[str, str] = field(default_factory=dict)
    total_size: int = 0
    layers: list[dict] = field(default_factory=list)
    block_seconds: list[float] = field(default_factory=list)
    nonzero_before: int = 0
    nonzero: int = 0
    params: int = 0
    rng: str | None = None
    # SoBP's stage 1 and LLM-Pruner's pass 1 (llmprune.streamed_gradients) commit ``scored``
    # (steps of the backward pass) from the last block down
    forward: int = 0  # with disk activations: block inputs x_1..x_forward of the forward pass in state/
    grad: str | None = None  # file with ∂L/∂(inputs of block n - scored)
    dense: str | None = None  # stages 2-3: file with the dense stream's inputs of block ``done``


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunState:
    """Reads and commits :class:`Progress` in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self, fingerprint: dict) -> Progress | None:
        """The committed progress, None when there is none; a run with other settings is refused."""
        path = self.dir / PROGRESS
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            progress = Progress(**data)
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise LlmpruneError(
                f"resume state {path} is unreadable ({type(exc).__name__}): "
                "pass resume=False (--no-resume) to start again"
            ) from None
        if progress.fingerprint != fingerprint:
            diff = sorted(
                k
                for k in set(fingerprint) | set(progress.fingerprint)
                if fingerprint.get(k) != progress.fingerprint.get(k)
            )
            raise LlmpruneError(
                f"the unfinished run in {self.dir.parent} used other settings ({', '.join(diff)}): "
                "rerun with the same settings, or pass resume=False (--no-resume) to start again"
            )
        return progress

    def commit(self, progress: Progress) -> None:
        progress.rng = base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()
        _atomic_write_text(self.dir / PROGRESS, json.dumps(asdict(progress)) + "\n")

    @staticmethod
    def restore_rng(progress: Progress) -> None:
        if progress.rng:
            state = torch.frombuffer(bytearray(base64.b64decode(progress.rng)), dtype=torch.uint8)
            torch.set_rng_state(state)

    # -- the next block's inputs (in-memory activation mode) -----------------------
    def save_hidden(self, done: int, hidden: torch.Tensor, stem: str = "hidden") -> str:
        """``hidden`` as ``<stem>-<done>.safetensors`` (written atomically); returns the name."""
        from safetensors.torch import save_file

        name = f"{stem}-{done:05d}.safetensors"
        tmp = self.dir / f".{name}.tmp"
        save_file({"hidden": hidden.detach().cpu().contiguous()}, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        return name

    def load_hidden(self, name: str) -> torch.Tensor:
        from safetensors.torch import load_file

        path = self.dir / name
        if not path.is_file():
            raise LlmpruneError(
                f"resume state names {path}, which is missing: pass resume=False (--no-resume) to start again"
            )
        return load_file(str(path))["hidden"]

    # -- pass-1 results of the structured methods ------------------------------------
    def save_scores(self, block: int, record: dict) -> None:
        """Block ``block``'s scores (tensors, numbers, strings, lists; see
        :mod:`llmprune.streamed_structured`), written atomically."""
        name = f"scores-{block:05d}.pt"
        tmp = self.dir / f".{name}.tmp"
        torch.save(record, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)

    def load_scores(self, block: int) -> dict:
        path = self.dir / f"scores-{block:05d}.pt"
        try:
            record: dict = torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise LlmpruneError(
                f"resume state {path} is missing or unreadable ({type(exc).__name__}): "
                "pass resume=False (--no-resume) to start again"
            ) from None
        return record

    def drop_stale(self, keep: set[str], stem: str = "hidden") -> None:
        """Remove ``stem`` files other than ``keep`` (earlier blocks' inputs)."""
        for path in self.dir.glob(f"{stem}-*.safetensors"):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def fingerprint(**settings: Any) -> dict:
    """Settings a resumed run must share with the run it continues (JSON-normalised)."""
    normalised: dict = json.loads(json.dumps(settings, sort_keys=True, default=str))
    return normalised
