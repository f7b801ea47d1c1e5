"""Model adapters (one per family) and model loading."""

from .base import AttentionSpec, LinearGroup, MLPSpec, ModelAdapter, count_nonzero_parameters, count_parameters
from .registry import get_adapter, register, supported_model_types

__all__ = [
    "AttentionSpec",
    "LinearGroup",
    "MLPSpec",
    "ModelAdapter",
    "count_nonzero_parameters",
    "count_parameters",
    "get_adapter",
    "register",
    "supported_model_types",
]
