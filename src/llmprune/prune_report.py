"""``report.json``: what one pruning run did, as a typed, versioned record.

Every run writes the same top-level keys; what only one kind of method produces sits in
an optional section (``unstructured`` or ``structured``, the other is ``null``), timings
of a method's stages in ``stages`` and a method's own record in ``details``.
:meth:`PruneReport.from_json` validates a file (and upgrades schema 1, the untyped
dictionaries written before ``schema_version`` existed); a malformed file is a one-line
:class:`~llmprune.errors.LlmpruneError`.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import LlmpruneError

SCHEMA_VERSION = 2


@dataclass
class Calibration:
    dataset: str
    samples: int
    seqlen: int
    seed: int


@dataclass
class UnstructuredSection:
    """Weights zeroed in place (shapes kept)."""

    block_sparsity: float
    layers: list[dict]  # {"block", "linear", "shape": [out, in], "sparsity"}
    stored_params: int  # every stored parameter, zeros included
    update: str | None = None  # weight update compensating a mask (magnitude, wanda)


@dataclass
class StructuredSection:
    """Units removed physically (the model gets smaller)."""

    achieved_ratio: float  # fraction of decoder-block linear weights removed
    block_linear_params_before: int
    layers_structured: list[dict]  # kept widths per block, see llmprune.surgery.block_widths
    removed: dict | None = None  # counts of removed groups / channels / blocks / residual dims
    block_influence: list[float] | None = None  # ShortGPT


@dataclass
class PruneReport:
    """One pruning run. ``params_*`` count non-zero parameters for unstructured runs and
    stored parameters for structured ones (``params_note`` says which)."""

    method: str
    kind: str  # "unstructured" | "structured"
    ratio: float | None
    pattern: str | None
    options: dict
    method_args: dict
    model_type: str
    calibration: Calibration | None
    params_before: int
    params_after: int
    params_note: str
    block_linear_params: int
    seconds: float
    prune_seconds: float
    peak_rss_mb: float
    peak_device_mb: float | None
    device: str
    environment: dict
    unstructured: UnstructuredSection | None = None
    structured: StructuredSection | None = None
    stages: dict[str, float] = field(default_factory=dict)  # stage1_seconds, train_seconds, stage1_peak_rss_mb
    details: dict | None = None  # the method's own record (e.g. PG's probabilities, SoBP's refits)
    model: str | None = None
    speed: dict | None = None  # llmprune demo: dense vs pruned decode speed
    eval: dict | None = None  # llmprune demo: perplexity before and after
    export: dict | None = None  # how the checkpoint was written (set when saved)
    converted_from: dict | None = None  # llmprune export: the source directory and its format
    schema_version: int = SCHEMA_VERSION

    # -- derived ----------------------------------------------------------------------
    @property
    def achieved_ratio(self) -> float:
        """Fraction of decoder-block linear weights removed (zeroed or physically)."""
        if self.structured is not None:
            return self.structured.achieved_ratio
        return self.unstructured.block_sparsity if self.unstructured is not None else 0.0

    @property
    def setting(self) -> str:
        return self.pattern or f"{self.ratio}"

    # -- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_recipe(self) -> dict[str, Any]:
        """The run as a recipe (``llmprune prune --recipe``): method, ratio or pattern,
        method args, calibration and model."""
        recipe: dict[str, Any] = {"method": self.method}
        if self.method != "manual":
            recipe.update({"pattern": self.pattern} if self.pattern else {"ratio": self.ratio})
        recipe["method_args"] = self.method_args
        if self.calibration is not None:
            c = self.calibration
            recipe["calibration"] = {"dataset": c.dataset, "samples": c.samples, "seqlen": c.seqlen, "seed": c.seed}
        if self.model is not None:
            recipe["model"] = self.model
        return recipe

    @classmethod
    def from_dict(cls, data: Any, source: str = "report") -> "PruneReport":
        """Validate ``data`` (schema 1 or 2) into a report; one-line error otherwise."""
        if not isinstance(data, dict):
            raise LlmpruneError(f"{source} is not a JSON object: re-create it with `llmprune prune`")
        version = data.get("schema_version", 1)
        if version == 1:
            data = _upgrade_v1(data)
        elif version != SCHEMA_VERSION:
            raise LlmpruneError(
                f"{source} has schema_version {version!r}; this llmprune reads 1 and "
                f"{SCHEMA_VERSION}: upgrade llmprune or re-create the report"
            )
        try:
            return _build(cls, data, source)
        except (TypeError, ValueError) as exc:
            raise LlmpruneError(
                f"{source} is not a valid llmprune report ({exc}): re-create it with `llmprune prune`"
            ) from None

    @classmethod
    def from_json(cls, path: str | Path) -> "PruneReport":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LlmpruneError(f"{path} is not valid JSON ({exc}): re-create it") from None
        return cls.from_dict(data, str(path))


_ROWS = (("unstructured", "layers", ("block", "linear", "sparsity")), ("structured", "layers_structured", ("block",)))
_SECTIONS = {"calibration": Calibration, "unstructured": UnstructuredSection, "structured": StructuredSection}
_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "kind": (str,),
    "options": (dict,),
    "method_args": (dict,),
    "model_type": (str,),
    "params_before": (int,),
    "params_after": (int,),
    "block_linear_params": (int,),
    "seconds": (int, float),
    "prune_seconds": (int, float),
    "peak_rss_mb": (int, float),
    "environment": (dict,),
}


def _build(cls: type[PruneReport], data: dict, source: str) -> PruneReport:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    required = [f.name for f in fields(cls) if f.name not in data and _required(f)]
    if required:
        raise ValueError(f"missing key {required[0]!r}")
    for key, types in _TYPES.items():
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(f"{key!r} must be {' or '.join(t.__name__ for t in types)}, not {data[key]!r}")
    for key in ("ratio", "peak_device_mb"):
        if data.get(key) is not None and (isinstance(data[key], bool) or not isinstance(data[key], (int, float))):
            raise ValueError(f"{key!r} must be a number or null, not {data[key]!r}")
    for key in ("pattern", "model"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{key!r} must be a string or null, not {data[key]!r}")
    if data["kind"] not in ("unstructured", "structured"):
        raise ValueError(f"kind {data['kind']!r} is neither unstructured nor structured")
    values = dict(data)
    for key, section in _SECTIONS.items():
        value = values.get(key)
        if value is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{key!r} must be an object or null")
            values[key] = section(**value)
    for section_name, field_name, keys in _ROWS:
        rows = getattr(values.get(section_name), field_name, None)
        if rows is not None and (
            not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in keys) for r in rows)
        ):
            raise ValueError(f"{section_name}.{field_name} must be a list of objects with {', '.join(keys)}")
    if values["kind"] == "unstructured" and values.get("unstructured") is None:
        raise ValueError("an unstructured report needs its 'unstructured' section")
    if values["kind"] == "structured" and values.get("structured") is None:
        raise ValueError("a structured report needs its 'structured' section")
    return cls(**values)


def _required(f: Field) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


_V1_UNSTRUCTURED = ("block_sparsity", "layers", "stored_params", "update")
_V1_STRUCTURED = ("achieved_ratio", "block_linear_params_before", "layers_structured", "removed", "block_influence")
_V1_STAGES = ("stage1_seconds", "stage1_peak_rss_mb", "train_seconds")
_V1_DETAILS = ("sobp", "pg", "disp")


def _upgrade_v1(old: dict) -> dict:
    """Schema 1 (flat, per-kind key sets) → schema 2."""
    data = {k: v for k, v in old.items() if k not in _V1_UNSTRUCTURED + _V1_STRUCTURED + _V1_STAGES + _V1_DETAILS}
    structured = "layers_structured" in old
    data.setdefault("kind", "structured" if structured else "unstructured")
    data.setdefault("method_args", {})
    data.setdefault("options", {})
    data.setdefault("environment", {})
    data.setdefault("model_type", "unknown")
    data.setdefault("device", "cpu")
    data.setdefault("peak_device_mb", None)
    data.setdefault("params_note", "")
    data.setdefault("calibration", None)
    data.setdefault("pattern", None)
    data.setdefault("prune_seconds", old.get("seconds", 0.0))
    data.setdefault("seconds", data["prune_seconds"])
    data.setdefault("ratio", None)
    for key in ("params_before", "params_after"):
        data.setdefault(key, 0)
    data.setdefault("peak_rss_mb", 0.0)
    data["schema_version"] = SCHEMA_VERSION
    if structured:
        before = old.get("block_linear_params_before", old.get("block_linear_params", 0))
        data["structured"] = {
            "achieved_ratio": old.get("achieved_ratio", old.get("ratio") or 0.0),
            "block_linear_params_before": before,
            "layers_structured": old.get("layers_structured") or [],
            "removed": old.get("removed"),
            "block_influence": old.get("block_influence"),
        }
        data.setdefault("block_linear_params", before)
    else:
        data["unstructured"] = {
            "block_sparsity": old.get("block_sparsity", 0.0),
            "layers": old.get("layers") or [],
            "stored_params": old.get("stored_params", old.get("params_before", 0)),
            "update": old.get("update"),
        }
        data.setdefault("block_linear_params", 0)
    data["stages"] = {k: old[k] for k in _V1_STAGES if old.get(k) is not None}
    details = [old[k] for k in _V1_DETAILS if isinstance(old.get(k), dict)]
    data["details"] = details[0] if details else None
    return data
