"""Write a pruned model, its tokenizer and ``report.json`` atomically.

Structured models are saved so that they reload with their pruned shapes (see
:mod:`llmprune.export.layout`): a stock config when the family can express the widths,
otherwise the global config plus ``llmprune_layout`` and ``modeling_llmprune.py`` for
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..checks import check_finite_model
from ..modeling import modeling_llmprune
from .atomic import atomic_directory, check_output_dir, model_bytes
from .layout import plan_export
from ..modeling.modeling_llmprune import LAYOUT_KEY

if TYPE_CHECKING:
    from ..prune_report import PruneReport

REMOTE_FILE = "modeling_llmprune.py"
REMOTE_CLASS = "LlmprunePrunedForCausalLM"


def remote_code_source(base_architecture: str) -> str:
    """The modeling file written into heterogeneous checkpoints."""
    source = inspect.getsource(modeling_llmprune)
    return (source.rstrip() + "\n\n\nimport transformers as _transformers  # noqa: E402\n\n"
            f"{REMOTE_CLASS} = pruned_class(_transformers.{base_architecture})\n")


def save_pruned(model: nn.Module, tokenizer: Any, out: str | os.PathLike, report: PruneReport | dict | None,
                force: bool = False) -> Path:
    """Save as safetensors + config (+ tokenizer, + ``report.json`` and ``recipe.yaml``);
    returns the path. ``report.export`` records how the checkpoint was written; a plain
    dict is read as a report (schema 1 is upgraded)."""
    import yaml

    from ..models import get_adapter
    from ..models.loading import strip_quantization
    from ..prune_report import PruneReport

    if isinstance(report, dict):
        report = PruneReport.from_dict(report)

    check_output_dir(Path(out), force)  # before any change to the model's config
    check_finite_model(model, f"save to {out}")
    strip_quantization(model)
    plan = plan_export(model, get_adapter(model))
    hf: Any = model  # a transformers model: config, save_pretrained
    config = hf.config
    for key in (LAYOUT_KEY, "auto_map"):
        if hasattr(config, key):
            delattr(config, key)
    for key, value in plan.config_updates.items():
        setattr(config, key, value)
    if plan.kind == "layout":
        config.auto_map = {"AutoModelForCausalLM": f"{REMOTE_FILE[:-3]}.{REMOTE_CLASS}"}
    export = {"kind": plan.kind, "remote_code": plan.kind == "layout",
              "note": {"dense": "same shapes as the original config",
                       "stock": "uniform widths in a stock config (no remote code)",
                       "layout": "per-block widths in config.llmprune_layout; load with "
                                 "llmprune.load or trust_remote_code=True"}[plan.kind]}
    if report is not None:
        report.export = export
    with atomic_directory(Path(out), force=force, need_bytes=model_bytes(model) + (8 << 20)) as tmp:
        hf.save_pretrained(tmp)
        if plan.kind == "layout":
            base = plan.config_updates[LAYOUT_KEY]["base_architecture"]
            (tmp / REMOTE_FILE).write_text(remote_code_source(base))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if report is not None:
            (tmp / "report.json").write_text(report.to_json())
            (tmp / "recipe.yaml").write_text(yaml.safe_dump(report.to_recipe(), sort_keys=False))
    return Path(out)
