"""Numerical cores: mask selection, OBS algebra, SparseGPT."""

from .masks import count_mask, layer_mask, nm_mask, row_mask
from .sparsegpt import sparsegpt_prune
from .sparsity import Sparsity

__all__ = ["Sparsity", "count_mask", "layer_mask", "nm_mask", "row_mask", "sparsegpt_prune"]
