"""Numerical cores: mask selection, OBS algebra, SparseGPT, MRP."""

from .masks import count_mask, layer_mask, nm_mask, row_mask
from .mrp import mrp_prune, mrp_update
from .sparsegpt import sparsegpt_prune
from .sparsity import Sparsity

__all__ = ["Sparsity", "count_mask", "layer_mask", "mrp_prune", "mrp_update", "nm_mask", "row_mask", "sparsegpt_prune"]
