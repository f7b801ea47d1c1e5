"""Magnitude pruning: remove the smallest ``|W_ij|`` of each layer (Han et al. 2015;
layer-wise as in the Wanda paper's baseline). N:M: smallest per group of M. ``update``
compensates the mask (:mod:`llmprune.methods.update`) and then needs calibration."""

from __future__ import annotations

import torch

from ..engine.stats import InputStats
from ..solvers.masks import layer_mask, nm_mask
from .registry import register
from .update import MaskMethod


@register
class Magnitude(MaskMethod):
    name = "magnitude"
    summary = "smallest |W| per layer, no calibration (Han et al. 2015)"
    mask_needs_calibration = False

    def select_mask(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        s = self.sparsity
        return nm_mask(weight.abs(), *s.nm) if s.is_nm else layer_mask(weight.abs(), s.fraction)
