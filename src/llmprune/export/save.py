"""Write a pruned model, its tokenizer and ``report.json`` atomically."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..models.loading import strip_quantization
from .atomic import atomic_directory


def save_pruned(model: nn.Module, tokenizer, out: str | Path, report: dict, force: bool = False) -> Path:
    """Save as safetensors + config (+ tokenizer, + report.json); returns the path."""
    strip_quantization(model)
    with atomic_directory(out, force=force) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return Path(out)
