"""How a run is described: ``--method-args key=value,...`` and ``recipe.yaml``.

``--method-args`` follows lm-eval's ``--model_args``: comma-separated ``key=value``
pairs; values stay strings and the method's ``Config`` converts them to its field types.
A piece without ``=`` continues the previous value, so list options read naturally
(``units=groups,channels,steps=10``).

A recipe (``--recipe FILE``, in the spirit of llm-compressor's recipes) is a YAML mapping::

    method: sobp
    ratio: 0.2            # or  pattern: "2:4"
    method_args: {refine: true, refit_target: stream}
    calibration: {dataset: wikitext2, samples: 128, seqlen: 2048, seed: 0}
    model: smollm2-135m   # optional

A mapping without any of those keys is read as the method's options alone
(``refit_target: stream``), to go with ``--method`` and ``--ratio`` on the command line.
``llmprune prune`` writes the run it did as ``recipe.yaml`` next to ``report.json``, so
``llmprune prune --recipe OUT/recipe.yaml --out AGAIN`` repeats it. Command-line flags
override the recipe's values; ``--method-args`` are merged over its ``method_args``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LlmpruneError

_RECIPE_KEYS = ("method", "ratio", "pattern", "method_args", "calibration", "model")
_CALIBRATION_KEYS = ("dataset", "samples", "seqlen", "seed")


def parse_method_args(text: str | None) -> dict[str, str]:
    """``"a=1,b=x,y"`` → ``{"a": "1", "b": "x,y"}``; a one-line error for a malformed list."""
    out: dict[str, str] = {}
    last: str | None = None
    for piece in (text or "").split(","):
        if "=" in piece:
            key, _, value = piece.partition("=")
            key = key.strip().replace("-", "_")
            if not key:
                raise LlmpruneError(f"--method-args {text!r}: empty option name before '=': write key=value,key=value")
            if key in out:
                raise LlmpruneError(f"--method-args {text!r}: {key} given twice")
            out[key], last = value.strip(), key
        elif piece.strip():
            if last is None:
                raise LlmpruneError(
                    f"--method-args {text!r}: {piece.strip()!r} is not key=value: "
                    "write e.g. --method-args damp=0.01,blocksize=64"
                )
            out[last] += "," + piece.strip()
    return out


@dataclass
class Recipe:
    method: str | None = None
    ratio: float | str | None = None
    pattern: str | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file (unknown keys are errors, naming the valid ones)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise LlmpruneError(f"recipe {path} not found: pass a YAML file (e.g. the recipe.yaml of an earlier run)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LlmpruneError(f"recipe {path} is not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise LlmpruneError(f"recipe {path}: expected a mapping with keys {', '.join(_RECIPE_KEYS)}")
    if data and not any(k in _RECIPE_KEYS for k in data):  # a plain mapping of method options
        return Recipe(method_args=dict(data))
    unknown = [k for k in data if k not in _RECIPE_KEYS]
    if unknown:
        raise LlmpruneError(f"recipe {path}: unknown key {unknown[0]!r}; valid keys: {', '.join(_RECIPE_KEYS)}")
    for key in ("method_args", "calibration"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise LlmpruneError(f"recipe {path}: {key} must be a mapping of option: value")
    calibration = data.get("calibration") or {}
    bad = [k for k in calibration if k not in _CALIBRATION_KEYS]
    if bad:
        raise LlmpruneError(f"recipe {path}: unknown calibration key {bad[0]!r}; valid: {', '.join(_CALIBRATION_KEYS)}")
    return Recipe(
        method=data.get("method"),
        ratio=data.get("ratio"),
        pattern=data.get("pattern"),
        method_args=dict(data.get("method_args") or {}),
        calibration=dict(calibration),
        model=data.get("model"),
    )
