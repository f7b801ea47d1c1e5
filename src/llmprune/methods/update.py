"""``update=sparsegpt|mrp``: keep a cheap method's mask (magnitude, Wanda) and
compensate the remaining weights with the calibration Hessian.

``sparsegpt`` runs SparseGPT's sequential OBS updates with the mask fixed (Frantar &
Alistarh 2023, the ``mask`` argument of :func:`sparsegpt_prune`); ``mrp`` solves the
exact joint update of every row for that mask (Zhao et al. 2024, Eq. 8,
:func:`mrp_update`). Both need ``stats.hessian``, so a method with an update asks the
engine for Hessians and calibration data.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..engine.stats import InputStats
from ..solvers.mrp import mrp_prune
from ..solvers.sparsegpt import sparsegpt_prune
from .base import MethodConfig
from .unstructured import LayerwiseMethod

UPDATES = ("none", "sparsegpt", "mrp")


def compensate(
    weight: torch.Tensor, mask: torch.Tensor, stats: InputStats | None, update: str, damp: float, blocksize: int
) -> torch.Tensor:
    """``weight`` with ``mask`` (True = prune) removed and the rest updated by ``update``."""
    if stats is None or stats.hessian is None:
        raise ValueError(f"update={update} needs the calibration Hessian")
    if update == "mrp":
        return mrp_prune(weight, stats.hessian, None, blocksize=blocksize, damp=damp, mask=mask, dtype=torch.float32)
    return sparsegpt_prune(weight, stats.hessian, None, blocksize=blocksize, damp=damp, mask=mask)


class MaskConfig(MethodConfig):
    update: Literal["none", "sparsegpt", "mrp"] | None = Field(
        None, description="compensate the mask with SparseGPT's or MRP's weight update (needs calibration)"
    )
    damp: float | None = Field(None, description="dampening of the update (default 0.01; needs update)")
    blocksize: int | None = Field(None, description="column block of the update (default 128; needs update)")

    @field_validator("update", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> "MaskConfig":
        if self.update in (None, "none") and (self.damp is not None or self.blocksize is not None):
            raise ValueError("damp/blocksize tune the weight update: add update=sparsegpt or update=mrp, or drop them")
        if self.blocksize is not None and self.blocksize < 1:
            raise ValueError(f"blocksize {self.blocksize} must be at least 1")
        return self


class MaskMethod(LayerwiseMethod):
    """A method that only chooses a mask; ``update`` optionally compensates it.

    ``needs_calibration`` and ``needs_hessian`` become True with an update.
    """

    Config = MaskConfig
    config: MaskConfig
    mask_needs_calibration: bool = True

    @property
    def update(self) -> str | None:
        return None if self.config.update in (None, "none") else self.config.update

    @property
    def damp(self) -> float:
        return 0.01 if self.config.damp is None else self.config.damp

    @property
    def blocksize(self) -> int:
        return 128 if self.config.blocksize is None else self.config.blocksize

    @property
    def needs_calibration(self) -> bool:
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
