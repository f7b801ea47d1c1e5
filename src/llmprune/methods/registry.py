"""The one registry of pruning methods.

A method module decorates its class with :func:`register`; every module of the
:mod:`llmprune.methods` package is imported (by name, on the first lookup), so adding a
method means adding its module and nothing else. Methods defined elsewhere (a plugin,
a test) register the same way once their module is imported.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping, TypeVar

from ..errors import LlmpruneError
from .base import Method

M = TypeVar("M", bound=type[Method])

_METHODS: dict[str, type[Method]] = {}
_discovered = False


def register(cls: M) -> M:
    """Class decorator: make ``cls`` available as ``--method cls.name``."""
    name = cls.name.lower()
    old = _METHODS.get(name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"method name {name!r} is taken by {old.__module__}.{old.__qualname__}")
    _METHODS[name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = __name__.rpartition(".")[0]
    path = importlib.import_module(package).__path__
    for info in pkgutil.iter_modules(path):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def methods() -> dict[str, type[Method]]:
    """Every registered method by name."""
    _discover()
    return dict(sorted(_METHODS.items()))


def method_names(kind: str | None = None) -> list[str]:
    return [n for n, cls in methods().items() if kind is None or cls.kind == kind]


def get_method(name: str) -> type[Method]:
    try:
        return methods()[name.lower()]
    except KeyError:
        raise LlmpruneError(f"unknown method {name!r}: choose one of {', '.join(method_names())}") from None


def build_method(
    name: str, ratio: float | str | None = None, pattern: str | None = None, options: Mapping[str, Any] | None = None
) -> Method:
    """``get_method(name).build(ratio, pattern, options)``: every check, no model needed."""
    return get_method(name).build(ratio, pattern, options)
