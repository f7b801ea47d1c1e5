"""Write a pruned model, its tokenizer and ``report.json`` atomically.

Structured models are saved so that they reload with their pruned shapes (see
:mod:`llmprune.export.layout`): a stock config when the family can express the widths;
the DeciLM / Nemotron-NAS ``block_configs`` format that vLLM serves when every block
differs only in MLP width or removed attention/MLP/blocks (:mod:`llmprune.export.decilm`);
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
from ..modeling.modeling_llmprune import LAYOUT_KEY
from .atomic import atomic_directory, check_output_dir, model_bytes
from .layout import ExportPlan, plan_export

if TYPE_CHECKING:
    from ..prune_report import PruneReport

REMOTE_FILE = "modeling_llmprune.py"
REMOTE_CLASS = "LlmprunePrunedForCausalLM"


def remote_code_source(base_architecture: str) -> str:
    """The modeling file written into heterogeneous checkpoints."""
    source = inspect.getsource(modeling_llmprune)
    return (
        source.rstrip() + "\n\n\nimport transformers as _transformers  # noqa: E402\n\n"
        f"{REMOTE_CLASS} = pruned_class(_transformers.{base_architecture})\n"
    )


_NOTES = {
    "dense": "same shapes as the model's own config",
    "stock": "uniform widths in a stock config (no remote code)",
    "block_configs": "per-block widths in the DeciLM / Nemotron-NAS block_configs format: serves in vLLM; "
    "load with llmprune.load or trust_remote_code=True",
    "layout": "per-block widths in config.llmprune_layout; load with llmprune.load or trust_remote_code=True",
}


def export_record(plan: ExportPlan) -> dict[str, Any]:
    """The ``export`` entry of ``report.json``: the format written and whether vLLM serves it."""
    record: dict[str, Any] = {
        "kind": plan.kind,
        "remote_code": plan.kind in ("block_configs", "layout"),
        "vllm": plan.kind != "layout" and plan.vllm_obstacle is None,
        "note": _NOTES[plan.kind],
    }
    if plan.kind == "stock" and plan.vllm_obstacle:
        record["vllm_obstacle"] = plan.vllm_obstacle
    if plan.kind == "layout":
        record["vllm_obstacle"] = plan.vllm_obstacle or (
            "the llmprune layout was asked for; `llmprune export DIR --format vllm --out NEW` writes a servable copy"
        )
    return record


def describe_export(record: dict[str, Any]) -> str:
    """One line for stdout: which format was written and, if vLLM cannot serve it, why."""
    if record.get("kind") == "gguf":
        from .gguf import describe

        return describe(record)
    names = {
        "dense": "the family's own config (every block as config.json says)",
        "stock": "stock config (uniform widths)",
        "block_configs": "DeciLM block_configs (per-block widths, servable by vLLM with trust_remote_code=True)",
        "layout": "llmprune layout (per-block widths, transformers with trust_remote_code=True)",
    }
    line = f"format: {names[record['kind']]}"
    if not record.get("vllm", True):
        line += f"; not servable by vLLM: {record['vllm_obstacle']}"
    return line


def apply_plan_config(config: Any, plan: ExportPlan) -> None:
    """Set the family config of a ``dense``/``stock``/``layout`` plan: its updates, and for
    ``layout`` the ``auto_map`` of the remote-code class (earlier layout keys are dropped)."""
    for key in (LAYOUT_KEY, "auto_map"):
        if hasattr(config, key):
            delattr(config, key)
    for key, value in plan.config_updates.items():
        setattr(config, key, value)
    if plan.kind == "layout":
        config.auto_map = {"AutoModelForCausalLM": f"{REMOTE_FILE[:-3]}.{REMOTE_CLASS}"}


def save_pruned(
    model: nn.Module,
    tokenizer: Any,
    out: str | os.PathLike,
    report: PruneReport | dict | None,
    force: bool = False,
    fmt: str = "auto",
) -> Path:
    """Save as safetensors + config (+ tokenizer, + ``report.json`` and ``recipe.yaml``); returns
    the path. See :func:`write_model`."""
    write_model(model, tokenizer, out, report, force=force, fmt=fmt)
    return Path(out)


def write_model(
    model: nn.Module,
    tokenizer: Any,
    out: str | os.PathLike,
    report: PruneReport | dict | None,
    force: bool = False,
    fmt: str = "auto",
) -> dict[str, Any]:
    """Save as safetensors + config (+ tokenizer, + ``report.json`` and ``recipe.yaml``);
    returns the ``export`` record of the format written.

    ``fmt`` is ``auto`` (the simplest format that holds the model) or one of ``vllm``,
    ``stock``, ``layout`` (refused, before anything is written, when the model does not
    fit). ``report.export`` records the format written; a plain dict is read as a report
    (schema 1 is upgraded) and gets the ``export`` entry too."""
    import yaml

    from ..models import get_adapter
    from ..models.loading import strip_quantization
    from ..prune_report import PruneReport
    from .decilm import write_decilm

    given = report if isinstance(report, dict) else None
    if isinstance(report, dict):
        report = PruneReport.from_dict(report)

    check_output_dir(Path(out), force)  # before any change to the model's config
    check_finite_model(model, f"save to {out}")
    strip_quantization(model)
    adapter = get_adapter(model)
    plan = plan_export(model, adapter, fmt)
    record = export_record(plan)
    if report is not None:
        report.export = record
    if given is not None:  # a caller's dict sees the format written, as a PruneReport would
        given["export"] = record
    hf: Any = model  # a transformers model: config, save_pretrained
    if plan.kind != "block_configs":
        apply_plan_config(hf.config, plan)
    with atomic_directory(Path(out), force=force, need_bytes=model_bytes(model) + (8 << 20)) as tmp:
        if plan.kind == "block_configs":
            write_decilm(model, adapter, tmp)
        else:
            hf.save_pretrained(tmp)
        if plan.kind == "layout":
            base = plan.config_updates[LAYOUT_KEY]["base_architecture"]
            (tmp / REMOTE_FILE).write_text(remote_code_source(base))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if report is not None:
            (tmp / "report.json").write_text(report.to_json())
            (tmp / "recipe.yaml").write_text(yaml.safe_dump(report.to_recipe(), sort_keys=False))
    return record
