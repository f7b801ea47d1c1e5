"""Wanda (Sun et al., ICLR 2024): score ``S_ij = |W_ij| · ‖X_j‖₂`` (Eq. 1), prune the
lowest scores per output row (per group of M for N:M), no weight update (``update``
adds one, see :mod:`llmprune.methods.update`)."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..solvers.masks import nm_mask, row_mask
from .registry import register
from .update import MaskMethod


@register
class Wanda(MaskMethod):
    name = "wanda"
    summary = "|W|·‖X‖ per output row, no weight update (Sun et al. 2024)"

    def select_mask(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None
        score = weight.abs() * stats.column_norms().to(weight.device).unsqueeze(0)
        s = self.sparsity
        return nm_mask(score, *s.nm) if s.is_nm else row_mask(score, s.fraction)
