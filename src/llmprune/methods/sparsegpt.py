"""SparseGPT as a method (Frantar & Alistarh, ICML 2023; the solver is
:mod:`llmprune.solvers.sparsegpt`)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..engine.stats import InputStats
from ..solvers.sparsegpt import sparsegpt_prune
from .base import MethodConfig
from .registry import register
from .unstructured import LayerwiseMethod


class SparseGPTConfig(MethodConfig):
    blocksize: int = Field(128, ge=1, description="columns pruned and updated together (lazy batch)")
    damp: float = Field(0.01, ge=0, description="Hessian dampening, relative to mean(diag H)")


@register
class SparseGPT(LayerwiseMethod):
    name = "sparsegpt"
    summary = "OBS mask and weight update per layer (Frantar & Alistarh 2023)"
    Config = SparseGPTConfig
    config: SparseGPTConfig
    needs_hessian = True

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None and stats.hessian is not None
        return sparsegpt_prune(weight, stats.hessian, self.sparsity, self.config.blocksize, self.config.damp)
