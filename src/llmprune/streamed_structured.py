"""Streamed structured pruning: Wanda-sp, FLAP and ShortGPT in two passes over the blocks.

These methods score units on the *dense* model, one block at a time, and select over all
blocks (:class:`~llmprune.methods.structured.ScoredMethod`), so the streamed run is:

1. **Pass 1 (scores).** Each dense block is read from the checkpoint, its unit scores are
   computed by the method's own :meth:`~llmprune.methods.structured.ScoredMethod.score`
   (the same hooks and :class:`~llmprune.engine.layerwise.BlockRunner` pass as
   :func:`llmprune.prune`; Wanda-sp: ``Σ_i |W_ij|·‖X_j‖₂``, FLAP: An et al. 2024 Eq. 3-4
   fluctuation, with the ``o_proj``/``down_proj`` input means its bias compensation needs;
   ShortGPT: block influence, Men et al. 2024 Eq. 1), the dense block runs to produce the
   next block's inputs, and the block is released. Each block's scores are committed to the
   state folder (``scores-NNNNN.pt``) before ``progress.json`` counts it, so a killed run
   does not score a block twice.
2. **Selection** over all blocks by the method's
   :meth:`~llmprune.methods.structured.ScoredMethod.choose` (uniform per block for
   Wanda-sp, global with per-kind standardisation for FLAP, lowest influence for ShortGPT),
   exactly as in memory. The selection is applied to a copy of the ``meta`` skeleton (shapes
   only), which gives the export plan (:func:`llmprune.export.layout.plan_export`), the
   config and the report before any block is written.
3. **Pass 2 (removal).** Each kept block is read again, its units are removed by
   :func:`~llmprune.methods.units.apply_block` (the surgery of
   :func:`~llmprune.methods.units.apply_selection`, with FLAP's compensation from the
   pass-1 means), and its tensors are written to their own shard under the block's final
   (renumbered, when ShortGPT drops blocks) name; a removed block is never read again.

The output holds the tensors and config ``llmprune.save`` writes for the model pruned in
memory: a stock config, the DeciLM ``block_configs`` vLLM serves (without the ``no_op``
parts) or the llmprune layout with its remote code. :func:`plan_output`, :func:`release_block`,
:func:`write_block` and :func:`publish` are shared with streamed SoBP
(:mod:`llmprune.streamed_sobp`), and :func:`removal_pass` with streamed LLM-Pruner
(:mod:`llmprune.streamed_llm_pruner`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .errors import LlmpruneError

if TYPE_CHECKING:
    from .methods.structured import ScoredMethod
    from .methods.units import BlockInfo, StructuredMethod, Unit


#: :class:`llmprune.streamed.StreamRun` (not imported: that module imports this one)
StreamRun = Any


def _score_pass(run: StreamRun, method: ScoredMethod) -> None:
    """Pass 1: score every block not yet scored, committing each."""
    prog, n = run.prog, run.n_blocks
    for i in run.bar(prog.scored, n, f"{method.name} (streamed, pass 1: scores)"):
        tb = time.perf_counter()
        block = run.read_block(i)
        # ShortGPT compares every block's outputs with its inputs, the last block's included
        keep = i + 1 < n or method.scores_blocks
        runner = run.runner(i, keep_outputs=keep)
        units, info, cost = method.score(i, block, run.adapter, runner)
        outputs = runner.forward(keep_outputs=True) if keep else None
        record: dict[str, Any] = {
            "units": [(u.kind, u.index, u.cost, u.score) for u in units],
            "info": [info.groups, info.channels, info.group_cost, info.channel_cost],
            "cost": cost,
            "influence": None,
        }
        if method.scores_blocks:
            assert run.hidden is not None and outputs is not None
            record["influence"] = method.influence(run.hidden, outputs)
        for key in ("o_mean", "down_mean"):
            mean = getattr(info, key)
            if mean is not None:
                record[key] = mean.detach().cpu()
        run.state.save_scores(i, record)
        del runner, units, info
        release_block(run, i)
        run.advance(i, outputs if i + 1 < n else None)
        prog.scored = i + 1
        prog.block_seconds.append(time.perf_counter() - tb)
        run.commit(i)
    run.hidden = run.acts = None


def release_block(run: StreamRun, i: int) -> None:
    """Put every tensor of block ``i`` (pruned or not) back on ``meta``."""
    from .engine.streaming import persistent_names, to_meta

    to_meta(run.blocks[i], persistent_names(run.blocks[i]))


def _selection(run: StreamRun, method: ScoredMethod) -> tuple[list[Unit], list[BlockInfo], list[int], list[float]]:
    """The method's selection over the committed pass-1 scores of every block."""
    from .methods.units import BlockInfo, Unit

    units: list[Unit] = []
    info: list[BlockInfo] = []
    costs: list[int] = []
    influence: list[float] = []
    for i in range(run.n_blocks):
        record = run.state.load_scores(i)
        units += [Unit(i, kind, index, cost, score) for kind, index, cost, score in record["units"]]
        groups, channels, group_cost, channel_cost = record["info"]
        info.append(
            BlockInfo(groups, channels, group_cost, channel_cost, record.get("o_mean"), record.get("down_mean"))
        )
        costs.append(record["cost"])
        if record["influence"] is not None:
            influence.append(record["influence"])
    return method.choose(units, info, costs, influence), info, costs, influence


@dataclass
class Output:
    """The selection applied to a shape-only copy of the skeleton: the export plan
    ``llmprune.save`` would choose, the kept blocks and their final tensor-name prefixes."""

    shapes: Any  # the meta skeleton with the units removed (shapes only)
    adapter: Any  # ModelAdapter of ``shapes``
    plan: Any  # ExportPlan
    kept: list[int]
    prefixes: list[str]  # per kept block, its name in the output (renumbered after dropped blocks)


def plan_output(run: StreamRun, chosen: list[Unit], info: list[BlockInfo], compensate: bool) -> Output:
    """:class:`Output` of ``chosen`` (call after ``run.release_outer()``: everything on ``meta``)."""
    from .engine.streaming import module_prefix
    from .export.layout import plan_export
    from .methods.units import apply_selection, dropped_blocks
    from .models import get_adapter

    shapes: Any = copy.deepcopy(run.model)  # every tensor on meta: shapes only
    shape_adapter = get_adapter(shapes)
    apply_selection(shape_adapter, chosen, info, compensate)
    plan = plan_export(shapes, shape_adapter, "auto")
    drop = set(dropped_blocks(chosen))
    kept = [i for i in range(run.n_blocks) if i not in drop]
    prefixes = [module_prefix(shapes, b) for b in shape_adapter.blocks()]
    return Output(shapes, shape_adapter, plan, kept, prefixes)


def write_block(run: StreamRun, out: Output, j: int, block: Any) -> None:
    """Write kept block ``j`` (block ``out.kept[j]``, its units removed) to its own shard under
    its final names (the ``block_configs`` format leaves removed modules out), after
    refusing NaN/inf values; record it in ``run.prog``."""
    from .checks import first_nonfinite
    from .export.decilm import noop_names
    from .export.shards import shard_name, write_shard

    i, prog = out.kept[j], run.prog
    bad = first_nonfinite(block)
    if bad is not None:
        raise LlmpruneError(
            f"cannot save to {run.out_path}: tensor {run.prefixes[i]}{bad} holds NaN/inf values; the model is "
            "broken (re-run the pruning in float32, or check the input checkpoint)"
        )
    skip = noop_names(run.adapter, block) if out.plan.kind == "block_configs" else ()
    tensors = {
        out.prefixes[j] + k: v.detach().to("cpu")
        for k, v in block.state_dict().items()
        if not any(k.startswith(p) for p in skip)
    }
    shard = shard_name(j + 1, len(out.kept) + 1)
    write_shard(run.partial, shard, tensors)
    prog.weight_map.update({k: shard for k in tensors})
    prog.total_size += sum(t.numel() * t.element_size() for t in tensors.values())


def removal_pass(
    run: StreamRun, name: str, out: Output, chosen: list[Unit], info: list[BlockInfo], compensate: bool
) -> None:
    """Pass 2: each kept block not yet written is read, its ``chosen`` units are removed
    (:func:`~llmprune.methods.units.apply_block`, with FLAP's compensation when
    ``compensate``), and it is written under its final name and committed; the ``j``-th
    kept block is reported as ``run.on_block_done(n + j)``."""
    from .methods.units import apply_block

    prog, n = run.prog, run.n_blocks
    by_block: dict[int, list[Unit]] = {}
    for u in chosen:
        by_block.setdefault(u.block, []).append(u)
    for j in run.bar(prog.done, len(out.kept), f"{name} (streamed, pass 2: removal)"):
        tb = time.perf_counter()
        i = out.kept[j]
        block = run.read_block(i)
        apply_block(run.adapter, block, i, by_block.get(i, []), info[i], compensate)
        write_block(run, out, j, block)
        release_block(run, i)
        prog.done = j + 1
        prog.block_seconds.append(time.perf_counter() - tb)
        run.commit(n + j)


def prune_structured(run: StreamRun, method: ScoredMethod) -> dict:
    """Run the two passes (module docstring) on ``run`` and publish the checkpoint; return
    the report (a :class:`~llmprune.prune_report.PruneReport` as a dict, with the streamed
    run's record under ``details["streamed"]``)."""
    from .models import count_parameters

    prog, dev, n = run.prog, run.dev, run.n_blocks
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    dense_block_params = sum(count_parameters(b) for b in run.blocks)
    run.start_stream(prog.scored)
    run.release_outer()
    _score_pass(run, method)

    # -- selection, applied to a shape-only copy: the export plan ---------------------
    chosen, info, costs, influence = _selection(run, method)
    out = plan_output(run, chosen, info, method.compensate_bias)
    removal_pass(run, method.name, out, chosen, info, method.compensate_bias)

    streamed = {
        "blocks": n,
        "kept_blocks": len(out.kept),
        "resumed_from_block": run.resumed_from,
        "activations": run.activations,
        "dtype": run.dtype_name,
        "score_seconds": prog.block_seconds[:n],
        "write_seconds": prog.block_seconds[n:],
    }
    return publish(run, method, out, chosen, sum(costs), dense_block_params, streamed, influence=influence)


def publish(
    run: StreamRun,
    method: StructuredMethod,
    out: Output,
    chosen: list[Unit],
    block_before: int,
    dense_block_params: int,
    streamed: dict,
    influence: list[float] | None = None,
    stages: dict[str, float] | None = None,
    details: dict | None = None,
) -> dict:
    """Write the tensors outside the blocks, the config (and code) of ``out.plan``, the
    tokenizer, ``report.json`` and ``recipe.yaml``, and publish the checkpoint; return the
    report as a dict. ``streamed`` (the run's record, ``shard_bytes`` added here) goes to
    ``details["streamed"]`` next to the method's own ``details``; ``stages`` to ``stages``."""
    import yaml

    from . import api
    from .engine.layerwise import peak_rss_mb
    from .export.decilm import write_decilm_files
    from .export.save import REMOTE_FILE, apply_plan_config, export_record, remote_code_source
    from .export.shards import shard_name
    from .methods.units import removed_counts
    from .modeling.modeling_llmprune import LAYOUT_KEY
    from .models import count_parameters
    from .prune_report import Calibration, PruneReport, StructuredSection
    from .surgery import block_widths

    dev, total = run.dev, len(out.kept) + 1
    _, total_size = run.finish_files(shard_name(total, total))
    config: Any = out.shapes.config
    if out.plan.kind == "block_configs":
        write_decilm_files(out.shapes, out.adapter, run.partial)
    else:
        apply_plan_config(config, out.plan)
        config.dtype = run.dtype_name  # what save_pretrained records
        config.architectures = [type(out.shapes).__name__]
        config.save_pretrained(str(run.partial))
        if out.plan.kind == "layout":
            base = out.plan.config_updates[LAYOUT_KEY]["base_architecture"]
            (run.partial / REMOTE_FILE).write_text(remote_code_source(base))
    block_after = out.adapter.block_linear_params()
    achieved = 1.0 - block_after / block_before if block_before else 0.0
    ratio, _ = method.reported_target()
    seconds = time.perf_counter() - run.t0
    calibration = run.calibration
    report = PruneReport(
        method=method.name,
        kind="structured",
        ratio=achieved if ratio is None else ratio,
        pattern=None,
        options=method.options(),
        method_args=method.method_args(),
        model_type=str(run.config.model_type),
        calibration=None if calibration is None else Calibration(**calibration),
        params_before=run.params_total,
        params_after=run.params_total - dense_block_params + sum(count_parameters(b) for b in out.adapter.blocks()),
        params_note="stored parameters (tied embeddings counted once); structured pruning removes them",
        block_linear_params=block_after,
        seconds=seconds,
        prune_seconds=seconds,
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        device=run.device,
        environment=api.environment(),
        structured=StructuredSection(
            achieved_ratio=achieved,
            block_linear_params_before=block_before,
            layers_structured=block_widths(out.adapter),
            removed=removed_counts(chosen),
            block_influence=influence or None,
        ),
        stages=dict(stages or {}),
        details={**(details or {}), "streamed": {**streamed, "shard_bytes": total_size}},
        export=export_record(out.plan),
    )
    (run.partial / "report.json").write_text(report.to_json())
    (run.partial / "recipe.yaml").write_text(yaml.safe_dump(report.to_recipe(), sort_keys=False))
    run.publish()
    return report.to_dict()
