"""The one contract every pruning method follows.

A method is a class with a ``name``, a ``kind`` (``"unstructured"``: weights zeroed in
place, shapes kept; ``"structured"``: heads, channels, residual dimensions or blocks
removed physically), a validated :class:`MethodConfig` and :meth:`Method.run`, which
prunes the model of a :class:`PruneContext` in place and returns a :class:`PruneResult`.

Options are validated once, when the method object is built (before any model is
loaded): an unknown or ill-typed option raises :class:`~llmprune.errors.LlmpruneError`
with a one-line message listing the valid options.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from ..solvers.sparsity import Sparsity

Kind = Literal["unstructured", "structured"]


class MethodConfig(BaseModel):
    """Base of every method's options: unknown options are rejected, values are coerced
    to the declared types (``"0.1"`` → ``0.1`` from ``--method-args``), nothing changes
    after construction. Each field's ``description`` is its one-line documentation."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def options_help(cls) -> str:
        """``name (type, default)`` of every option, comma-separated."""
        return ", ".join(
            f"{n} ({_type_name(f.annotation)}, default {f.default!r})" for n, f in cls.model_fields.items()
        )

    @classmethod
    def parse(cls, method: str, options: Mapping[str, Any]) -> "MethodConfig":
        """The validated config, or a one-line :class:`LlmpruneError` naming the bad
        option and the valid ones."""
        values = {k: _none(cls, k, v) for k, v in options.items()}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise LlmpruneError(_one_line(method, cls, exc)) from None


def _none(cls: type[MethodConfig], key: str, value: Any) -> Any:
    """``"none"``/``"null"`` from the command line is None for options whose default is None."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null"):
        f = cls.model_fields.get(key)
        if f is not None and f.default is None:
            return None
    return value


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not getattr(annotation, "__args__", None) else None
    return text or str(annotation).replace("typing.", "").replace("NoneType", "None")


def _one_line(method: str, cls: type[MethodConfig], exc: ValidationError) -> str:
    valid = ", ".join(cls.model_fields) or "(none)"
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {loc!r} for method {method}")
            continue
        msg = str(err["msg"]).removeprefix("Value error, ")
        value = err.get("input")
        shown = value if isinstance(value, (str, int, float)) else repr(value)
        parts.append(f"{method} option {loc}={shown}: {msg}" if loc else f"{method}: {msg}")
    return "; ".join(parts) + f" (valid options: {valid}; see `llmprune methods {method}`)"


class NoOptions(MethodConfig):
    """A method without options."""


@dataclass
class PruneContext:
    """Everything a method's :meth:`Method.run` may use.

    ``calib``: calibration token ids ``[n, seqlen]`` (None when the method does not need
    calibration); ``reuse``: results of stages computed earlier and handed in by name
    (e.g. SoBP's ``"first_order_scores"``), so a caller can share a stage between runs.
    """

    model: nn.Module
    adapter: ModelAdapter
    calib: torch.Tensor | None
    device: str = "cpu"
    progress: bool = True
    seed: int = 0
    reuse: Mapping[str, Any] = field(default_factory=dict)

    def require_calib(self, method: str) -> torch.Tensor:
        if self.calib is None:
            raise ValueError(f"{method} needs calibration data")
        return self.calib


@dataclass
class PruneResult:
    """What a method measured and decided; :func:`llmprune.api.prune` turns it into a
    :class:`~llmprune.report.PruneReport`.

    ``layers``: per-linear ``{"block", "linear", "shape", "sparsity"}`` (unstructured);
    ``removed``: counts of removed units (structured); ``block_influence``: ShortGPT's
    per-block scores; ``stages``: extra timings/memory (``stage1_seconds``,
    ``train_seconds``, ``stage1_peak_rss_mb``); ``details``: the method's own section."""

    seconds: float
    peak_rss_mb: float
    peak_device_mb: float | None = None
    layers: list[dict] | None = None
    removed: dict | None = None
    block_influence: list[float] | None = None
    stages: dict[str, float] = field(default_factory=dict)
    details: dict | None = None


class Method(ABC):
    """A pruning method: ``Method(target, **options)`` validates, :meth:`run` prunes.

    ``target`` is a :class:`Sparsity` for unstructured methods and the fraction of
    decoder-block linear weights to remove for structured ones (see :meth:`build`)."""

    name: ClassVar[str]
    kind: ClassVar[Kind]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = NoOptions
    #: what the method needs of the whole model at once (e.g. "gradients of the LM loss through
    #: the whole model"), the reason ``prune-streamed`` cannot run it block by block
    whole_model: ClassVar[str] = ""

    config: MethodConfig

    def __init__(self, target: Any = None, /, **options: Any) -> None:
        self.config = self.Config.parse(self.name, options)

    @property
    def needs_calibration(self) -> bool:
        return True

    @classmethod
    def build(
        cls, ratio: float | str | None = None, pattern: str | None = None, options: Mapping[str, Any] | None = None
    ) -> "Method":
        """The method for ``--ratio``/``--pattern`` and ``options`` (all validated here)."""
        return cls(cls.target(ratio, pattern), **dict(options or {}))

    @classmethod
    def target(cls, ratio: float | str | None, pattern: str | None) -> Any:
        if cls.kind == "unstructured":
            return Sparsity.parse(ratio=ratio, pattern=pattern)
        if pattern is not None or ratio is None:
            raise LlmpruneError(f"{cls.name} is structured: give --ratio R (fraction of block weights), not --pattern")
        try:
            return float(ratio)
        except ValueError:
            raise LlmpruneError(f"ratio {ratio!r} is not a number: pass e.g. --ratio 0.3") from None

    def reported_target(self) -> tuple[float | None, str | None]:
        """``(ratio, "N:M" pattern)`` as asked for (a ``sparsity`` or ``ratio`` attribute)."""
        sparsity = getattr(self, "sparsity", None)
        if isinstance(sparsity, Sparsity):
            return sparsity.ratio, (f"{sparsity.n}:{sparsity.m}" if sparsity.is_nm else None)
        ratio = getattr(self, "ratio", None)
        return (None if ratio is None else float(ratio)), None

    def options(self) -> dict:
        """Options recorded in the report (default: the whole config)."""
        return self.config.model_dump()

    def method_args(self) -> dict:
        """The validated config as plain values (recorded in ``recipe.yaml``)."""
        return self.config.model_dump(mode="json")

    @abstractmethod
    def run(self, ctx: PruneContext) -> PruneResult:
        """Prune ``ctx.model`` in place."""


def warn(message: str) -> None:
    """One line on stderr (notes a method prints while it runs)."""
    print(message, file=sys.stderr)
