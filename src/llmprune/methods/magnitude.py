"""Magnitude pruning: remove the smallest ``|W_ij|`` of each layer (Han et al. 2015;
layer-wise as in the Wanda paper's baseline). N:M: smallest per group of M."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..solvers.masks import layer_mask, nm_mask
from .base import UnstructuredMethod


class Magnitude(UnstructuredMethod):
    name = "magnitude"
    needs_calibration = False

    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        W = weight.detach().float().clone()
        s = self.sparsity
        mask = nm_mask(W.abs(), s.n, s.m) if s.is_nm else layer_mask(W.abs(), s.ratio)
        return W.masked_fill_(mask, 0.0)
