"""Pruning methods: one module per method, each registered with :func:`register`."""

from .base import Method, MethodConfig, PruneContext, PruneResult
from .registry import build_method, get_method, method_names, methods, register
from .unstructured import prune_unstructured

__all__ = [
    "Method",
    "MethodConfig",
    "PruneContext",
    "PruneResult",
    "build_method",
    "get_method",
    "method_names",
    "methods",
    "prune_unstructured",
    "register",
]
