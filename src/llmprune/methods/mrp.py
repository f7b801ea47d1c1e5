"""MRP as a method (Zhao et al., Findings of EMNLP 2024; the solver is
:mod:`llmprune.solvers.mrp`): adaptive mask, then the exact joint update of every row
(Eq. 8), unstructured or N:M."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from ..engine.stats import InputStats
from ..solvers.mrp import mrp_prune
from .base import MethodConfig
from .registry import register
from .unstructured import LayerwiseMethod

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


class MRPConfig(MethodConfig):
    blocksize: int = Field(128, description="rows solved together")
    damp: float = Field(0.01, description="Hessian dampening, relative to mean(diag H)")
    precision: Literal["float32", "float64"] = Field(
        "float32", description="precision of the solver's heavy arithmetic (float32: refined in float64)"
    )
    solver: Literal["pcg", "exact"] = Field(
        "pcg",
        description="final joint update: batched conjugate gradients (pcg) or one factorisation per row (exact, "
        "O(rows * n^3): slow beyond small layers)",
    )
    tol: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="final joint update: stop when each row's excess error over the exact solution is below "
        "this fraction of its error (default 1e-3 in float32, rounding in float64; e.g. 0.05 is faster and "
        "keeps most of MRP's advantage, docs/faithfulness.md)",
    )

    @field_validator("blocksize")
    @classmethod
    def _blocksize(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"blocksize {value} must be at least 1")
        return value

    @field_validator("damp")
    @classmethod
    def _damp(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"damp {value} must be non-negative, e.g. damp=0.01")
        return value


@register
class MRP(LayerwiseMethod):
    """Optimal multi-weight removal per output row.

    ``precision`` is that of the solver's heavy arithmetic: the final joint update runs
    as batched preconditioned conjugate gradients (:mod:`llmprune.solvers.pcg`) whose
    matrix products are float32 (default; stops at an excess of 1e-3 of each row's error, ``tol``;
    iterate and residual refreshes in float64) or float64; the unstructured sweep's
    batched Cholesky runs in the same precision, refined with float64 residuals. The
    exact solution fits the calibration tokens closely: give it many more tokens than a
    layer has inputs (the default 128 × 2048 does), or raise ``damp``.
    """

    name = "mrp"
    summary = "adaptive mask + exact joint row update (Zhao et al. 2024)"
    Config = MRPConfig
    config: MRPConfig
    needs_hessian = True

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.config.precision]

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None and stats.hessian is not None
        c = self.config
        return mrp_prune(
            weight, stats.hessian, self.sparsity, c.blocksize, c.damp, dtype=self.dtype, solver=c.solver, tol=c.tol
        )
