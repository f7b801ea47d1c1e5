"""Wanda (Sun et al., ICLR 2024): score ``S_ij = |W_ij| · ‖X_j‖₂`` (Eq. 1), prune the
lowest scores per output row (per group of M for N:M), no weight update."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..solvers.masks import nm_mask, row_mask
from .base import UnstructuredMethod


class Wanda(UnstructuredMethod):
    name = "wanda"

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None
        W = weight.detach().float().clone()
        score = W.abs() * stats.column_norms().to(W.device).unsqueeze(0)
        s = self.sparsity
        mask = nm_mask(score, s.n, s.m) if s.is_nm else row_mask(score, s.ratio)
        return W.masked_fill_(mask, 0.0)
