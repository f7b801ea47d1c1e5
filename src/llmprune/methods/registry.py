"""Method lookup by name."""

from __future__ import annotations

from ..errors import LlmpruneError
from .base import UnstructuredMethod
from .magnitude import Magnitude
from .mrp import MRP
from .sparsegpt import SparseGPT
from .wanda import Wanda

UNSTRUCTURED: dict[str, type[UnstructuredMethod]] = {
    cls.name: cls for cls in (Magnitude, Wanda, SparseGPT, MRP)
}


def method_names() -> list[str]:
    return sorted(UNSTRUCTURED)


def get_method(name: str) -> type[UnstructuredMethod]:
    try:
        return UNSTRUCTURED[name.lower()]
    except KeyError:
        raise LlmpruneError(f"unknown method {name!r}: choose one of {', '.join(method_names())}") from None
