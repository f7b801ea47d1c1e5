"""Adapter lookup by ``config.model_type``."""

from __future__ import annotations

from torch import nn

from ..errors import LlmpruneError
from .base import ModelAdapter
from .gemma3 import Gemma3Adapter
from .llama import LlamaAdapter
from .mamba import MambaAdapter
from .opt import OPTAdapter
from .phi import PhiAdapter

ADAPTERS: list[type[ModelAdapter]] = [LlamaAdapter, OPTAdapter, PhiAdapter, Gemma3Adapter, MambaAdapter]


def register(adapter: type[ModelAdapter]) -> type[ModelAdapter]:
    """Add an adapter class (usable as a decorator)."""
    ADAPTERS.append(adapter)
    return adapter


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``; a one-line error listing the supported families."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter(model)
    raise LlmpruneError(
        f"unsupported model family {model_type!r}: supported model_types are "
        f"{', '.join(supported_model_types())} (add an adapter in llmprune.models)"
    )
