"""Shared linear algebra for OBS-family solvers."""

from __future__ import annotations

import torch

from ..errors import LlmpruneError


def dampen(H: torch.Tensor, damp: float) -> torch.Tensor:
    """``H + damp · mean(diag H) · I`` (SparseGPT's dampening), on a copy.

    Dead inputs (zero diagonal: the column never fires) get a unit diagonal so ``H``
    stays invertible; their weights carry no signal and are pruned first.
    """
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    return H


def inverse_cholesky_upper(H: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = Uᵀ U``), computed in float64."""
    try:
        L = torch.linalg.cholesky(H.double())
        Hinv = torch.cholesky_inverse(L)
        del L  # at most two float64 matrices alive (a 28672-wide Hessian: 6.6 GB each)
        U: torch.Tensor = torch.linalg.cholesky(Hinv, upper=True)
        return U.to(H.dtype)
    except torch.linalg.LinAlgError:
        raise LlmpruneError(
            "the calibration Hessian is not positive definite: raise the dampening (--damp 0.1) "
            "or use more calibration samples"
        ) from None
