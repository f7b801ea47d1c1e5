"""One stream of calibration activations (N × L × d) that a streamed run carries from block
to block and can restore after a kill.

``activations="memory"``: the current tensor is in memory and each new one is committed as
``state/<stem>-NNNNN.safetensors`` (:meth:`RunState.save_hidden`; older files are dropped
after the commit). ``"disk"``: two memory-mapped files ``state/<stem>-a.bin`` and
``<stem>-b.bin`` (:class:`~llmprune.engine.streaming.DiskActivations`), the current one and
the one the next block's outputs are written into, flushed before the commit and swapped.
Either way the stream's :attr:`name` is what ``progress.json`` records.
"""

from __future__ import annotations

import torch

from .resume import RunState
from .streaming import DiskActivations


class ActivationStream:
    """The activations of one stream (e.g. SoBP's dense and pruned streams, its gradients)."""

    def __init__(self, state: RunState, stem: str, disk: bool, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.state = state
        self.stem = stem
        self.shape = tuple(shape)
        self.dtype = dtype
        self.acts = DiskActivations(state.dir, self.shape, dtype, (f"{stem}-a.bin", f"{stem}-b.bin")) if disk else None
        self.tensor: torch.Tensor | None = None
        self.name: str | None = None

    def start(self, first: torch.Tensor) -> None:
        """Make block 0's captured inputs ``first`` current: copied into the first file
        (disk), or kept as is and not saved (memory: a resumed run captures them again)."""
        if self.acts is None:
            self.tensor, self.name = first, None
            return
        out = self.outputs()
        assert out is not None
        out.copy_(first)
        self.advance(0, out)

    def restore(self, name: str) -> None:
        """Make the committed stream ``name`` current (a one-line error when it is missing)."""
        self.name = name
        self.tensor = self.acts.tensor(name) if self.acts is not None else self.state.load_hidden(name)

    def _target(self) -> str:
        assert self.acts is not None
        return self.acts.names[0] if self.name is None else self.acts.other(self.name)

    def outputs(self) -> torch.Tensor | None:
        """Where the next activations go: the file that is not current (disk), or None
        (memory: the runner allocates them, as :class:`~llmprune.engine.layerwise.BlockRunner` does)."""
        return None if self.acts is None else self.acts.tensor(self._target(), create=True)

    def buffer(self) -> torch.Tensor:
        """:meth:`outputs`, or a new tensor of the stream's shape in memory."""
        out = self.outputs()
        return torch.empty(self.shape, dtype=self.dtype) if out is None else out

    def advance(self, index: int, nxt: torch.Tensor) -> None:
        """Make ``nxt`` current and durable before the commit: the file :meth:`outputs` gave
        (``nxt`` was written into it), flushed (disk), or saved as ``<stem>-<index>`` (memory)."""
        if self.acts is not None:
            self.name = self._target()
            self.acts.flush(self.name)
        else:
            self.name = self.state.save_hidden(index, nxt, self.stem)
        self.tensor = nxt

    def drop_stale(self) -> None:
        """After the commit: remove the stream's older files (memory mode)."""
        if self.acts is None:
            self.state.drop_stale({self.name} if self.name else set(), self.stem)

    def close(self) -> None:
        """Release the stream and delete its files."""
        if self.acts is not None:
            for name in self.acts.names:
                self.acts.remove(name)
        else:
            self.state.drop_stale(set(), self.stem)
        self.tensor = self.name = None
