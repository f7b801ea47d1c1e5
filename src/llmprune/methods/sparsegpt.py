"""SparseGPT as a method (the solver is :mod:`llmprune.solvers.sparsegpt`)."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..solvers.sparsegpt import sparsegpt_prune
from ..solvers.sparsity import Sparsity
from .base import UnstructuredMethod


class SparseGPT(UnstructuredMethod):
    name = "sparsegpt"
    needs_hessian = True

    def __init__(self, sparsity: Sparsity, blocksize: int = 128, damp: float = 0.01) -> None:
        super().__init__(sparsity)
        self.blocksize = blocksize
        self.damp = damp

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        assert stats is not None and stats.hessian is not None
        return sparsegpt_prune(weight, stats.hessian, self.sparsity, self.blocksize, self.damp)

    def options(self) -> dict:
        return {"blocksize": self.blocksize, "damp": self.damp}
