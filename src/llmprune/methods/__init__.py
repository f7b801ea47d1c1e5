"""Pruning methods: one module per method."""

from .registry import get_method, method_names
from .unstructured import prune_unstructured

__all__ = ["get_method", "method_names", "prune_unstructured"]
