"""What a pruning method is: a small class with one job, validated at construction."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from ..engine.stats import InputStats
from ..solvers.sparsity import Sparsity


class UnstructuredMethod(ABC):
    """Prunes one linear's weight matrix given its input statistics.

    ``needs_calibration``: whether the engine must run calibration data (magnitude
    does not). ``needs_hessian``: whether ``stats.hessian`` must be accumulated.
    """

    name: ClassVar[str]
    needs_calibration: ClassVar[bool] = True
    needs_hessian: ClassVar[bool] = False

    def __init__(self, sparsity: Sparsity) -> None:
        self.sparsity = sparsity

    @abstractmethod
    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        """Return the pruned (and possibly updated) weight, same shape, float32."""

    def options(self) -> dict:
        """Method options recorded in the report."""
        return {}
