"""MRP as a method (Zhao et al., Findings of EMNLP 2024; the solver is
:mod:`llmprune.solvers.mrp`): adaptive mask, then the exact joint update of every row
(Eq. 8), unstructured or N:M."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..errors import LlmpruneError
from ..solvers.mrp import mrp_prune
from ..solvers.sparsity import Sparsity
from .base import UnstructuredMethod

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def solve_dtype(precision: str) -> torch.dtype:
    """The factorisation precision named by ``precision`` (float64 or float32)."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise LlmpruneError(f"precision {precision!r} is not float64 or float32: pass precision='float64'") from None


class MRP(UnstructuredMethod):
    """Optimal multi-weight removal per output row.

    ``precision`` is that of the solver's heavy arithmetic: the final joint update runs
    as batched preconditioned conjugate gradients (:mod:`llmprune.solvers.pcg`) whose
    matrix products are float32 (default; stops at ~1e-6 relative excess layer error,
    iterate and residual refreshes in float64) or float64; the unstructured sweep's
    batched Cholesky runs in the same precision, refined with float64 residuals. The
    exact solution fits the
    calibration tokens closely: give it many more tokens than a layer has inputs (the
    default 128 × 2048 does), or raise ``damp``.
    """

    name = "mrp"
    needs_hessian = True

    def __init__(self, sparsity: Sparsity, blocksize: int = 128, damp: float = 0.01,
                 precision: str = "float32") -> None:
        super().__init__(sparsity)
        if blocksize < 1:
            raise LlmpruneError(f"--blocksize {blocksize} must be at least 1")
        if damp < 0:
            raise LlmpruneError(f"--damp {damp} must be non-negative, e.g. --damp 0.01")
        self.blocksize = blocksize
        self.damp = damp
        self.precision = precision
        self.dtype = solve_dtype(precision)

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None and stats.hessian is not None
        return mrp_prune(weight, stats.hessian, self.sparsity, self.blocksize, self.damp, dtype=self.dtype)

    def options(self) -> dict:
        return {"blocksize": self.blocksize, "damp": self.damp, "precision": self.precision}
