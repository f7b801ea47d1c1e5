"""``--update {none,sparsegpt,mrp}``: keep a cheap method's mask (magnitude, Wanda) and
compensate the remaining weights with the calibration Hessian.

``sparsegpt`` runs SparseGPT's sequential OBS updates with the mask fixed (Frantar &
Alistarh 2023, the ``mask`` argument of :func:`sparsegpt_prune`); ``mrp`` solves the
exact joint update of every row for that mask (Zhao et al. 2024, Eq. 8,
:func:`mrp_update`). Both need ``stats.hessian``, so a method with an update asks the
engine for Hessians and calibration data.
"""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..errors import LlmpruneError
from ..solvers.mrp import mrp_prune
from ..solvers.sparsegpt import sparsegpt_prune
from ..solvers.sparsity import Sparsity
from .base import UnstructuredMethod

UPDATES = ("none", "sparsegpt", "mrp")


def parse_update(update: str | None) -> str | None:
    """``None``/``"none"`` → None; ``"sparsegpt"``/``"mrp"`` as is; else a clear error."""
    if update is None:
        return None
    value = str(update).strip().lower()
    if value not in UPDATES:
        raise LlmpruneError(f"unknown update {update!r}: choose one of {', '.join(UPDATES)}")
    return None if value == "none" else value


def check_update(method: str, update: str | None) -> str | None:
    """``parse_update(update)``, refusing an update for a method that is not a mask method."""
    from .registry import UNSTRUCTURED

    update = parse_update(update)
    if update is not None and not issubclass(UNSTRUCTURED.get(method.lower(), object), MaskMethod):
        raise LlmpruneError(f"--update {update} compensates a magnitude or wanda mask, not {method}: "
                            "drop --update or use --method wanda/magnitude")
    return update


def compensate(weight: torch.Tensor, mask: torch.Tensor, stats: InputStats | None, update: str,
               damp: float, blocksize: int) -> torch.Tensor:
    """``weight`` with ``mask`` (True = prune) removed and the rest updated by ``update``."""
    if stats is None or stats.hessian is None:
        raise ValueError(f"--update {update} needs the calibration Hessian")
    if update == "mrp":
        return mrp_prune(weight, stats.hessian, None, blocksize=blocksize, damp=damp, mask=mask, dtype=torch.float32)
    return sparsegpt_prune(weight, stats.hessian, None, blocksize=blocksize, damp=damp, mask=mask)


class MaskMethod(UnstructuredMethod):
    """A method that only chooses a mask; ``update`` optionally compensates it.

    ``needs_calibration`` and ``needs_hessian`` become True with an update.
    """

    mask_needs_calibration: bool = True

    def __init__(self, sparsity: Sparsity, update: str | None = None, damp: float | None = None,
                 blocksize: int | None = None) -> None:
        super().__init__(sparsity)
        self.update = parse_update(update)
        if self.update is None and (damp is not None or blocksize is not None):
            raise LlmpruneError(f"--damp/--blocksize tune the weight update: add --update sparsegpt or "
                                f"--update mrp to {self.name}, or drop them")
        self.damp = 0.01 if damp is None else damp
        self.blocksize = 128 if blocksize is None else blocksize
        if self.blocksize < 1:
            raise LlmpruneError(f"--blocksize {self.blocksize} must be at least 1")

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return self.mask_needs_calibration or self.update is not None

    @property
    def needs_hessian(self) -> bool:  # type: ignore[override]
        return self.update is not None

    def select_mask(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        """The boolean mask (True = prune) of ``weight`` (float32 copy)."""
        raise NotImplementedError

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        W = weight.detach().float().clone()
        mask = self.select_mask(W, stats)
        if self.update is None:
            return W.masked_fill_(mask, 0.0)
        return compensate(W, mask, stats, self.update, self.damp, self.blocksize)

    def options(self) -> dict:
        if self.update is None:
            return {}
        return {"update": self.update, "damp": self.damp, "blocksize": self.blocksize}
