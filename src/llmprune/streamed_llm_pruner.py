"""Streamed LLM-Pruner without recovery (Ma et al., NeurIPS 2023, "LLM-Pruner: On the
Structural Pruning of Large Language Models"; :mod:`llmprune.methods.llm_pruner`): the
checkpoint ``llmprune.prune(..., "llm-pruner")`` + ``llmprune.save`` write, from a model
that is never in memory as a whole.

1. **Pass 1 (importance).** The streamed backward pass of :mod:`llmprune.streamed_gradients`
   (the LM loss summed over the calibration windows): while block ``i`` of the pruned range
   is re-read, its linear weights and biases get ``requires_grad``
   (:func:`~llmprune.methods.llm_pruner.weight_gradients`), ``∂L/∂w`` accumulates over every
   window, the Taylor importance of each KV group and MLP channel is taken
   (:func:`~llmprune.methods.llm_pruner.group_scores`, its Eq. 4/5: ``param_first``
   ``Σ |w·∂L/∂w|`` or ``vectorize`` ``|Σ w·∂L/∂w|``) and committed, and the block is released
   with its gradients. The blocks above the range only hand the gradient down; the pass
   stops at the range's first block (the blocks below it are read in the forward pass only).
2. **Selection** by :meth:`LLMPruner.choose <llmprune.methods.llm_pruner.LLMPruner.choose>`,
   the code :meth:`~llmprune.methods.llm_pruner.LLMPruner.run` runs: the same fraction of
   every pruned block, the first and last blocks dense; applied to a copy of the ``meta``
   skeleton for the export plan (:func:`llmprune.streamed_structured.plan_output`).
3. **Pass 2 (removal)** (:func:`llmprune.streamed_structured.removal_pass`): each block is
   read again, its units are removed (no bias compensation) and it is written under its
   final name in the format ``llmprune.save`` chooses.

``checkpointing`` has no effect here: the backward pass holds one window's graph of one block.

**Memory.** Host: outer tensors + one block with the gradients of its linear weights + the
calibration activations: pass 1 stores the ``n + 1`` block-boundary activations of its
forward pass (N × L × d each; on disk with ``--activations disk``) and two copies of the
gradient at a block boundary. Pass 2 holds one block.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .methods.llm_pruner import LLMPruner

#: :class:`llmprune.streamed.StreamRun` (not imported: that module imports this one)
StreamRun = Any


def prune_llm_pruner(run: StreamRun, method: LLMPruner) -> dict:
    """Run pass 1, the selection and pass 2 (module docstring) on ``run`` and publish the
    checkpoint; return the report (a :class:`~llmprune.prune_report.PruneReport` as a dict,
    with the streamed record under ``details["streamed"]``). ``on_block_done(k)``: pass 1's
    ``k``-th step (block ``n − 1 − k``), then pass 2's written block ``j`` as ``n + j``."""
    from .engine.layerwise import peak_rss_mb
    from .methods.llm_pruner import weight_gradients
    from .methods.units import block_infos
    from .models import count_parameters
    from .streamed_gradients import GradientTarget, backward_pass, capture
    from .streamed_structured import plan_output, publish, removal_pass

    prog, dev, n = run.prog, run.dev, run.n_blocks
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    dense_block_params = sum(count_parameters(b) for b in run.blocks)
    block_before = run.adapter.block_linear_params()
    info = block_infos(run.adapter)
    method.allocation(info)  # an unreachable ratio is refused before any work
    assert method.layers is not None
    attach = functools.partial(weight_gradients, taylor=method.config.taylor)
    target = GradientTarget("llm-pruner (streamed, pass 1", attach, range(*method.layers))
    steps = target.steps(n)

    # -- pass 1: the streamed backward pass, scores per block -------------------------
    if prog.scored < steps:
        first, kwargs_list = capture(run)
        backward_pass(run, first, kwargs_list, target)
        del first, kwargs_list
    pass1_rss = peak_rss_mb()
    run.release_outer()

    # -- selection (LLMPruner.run's code), applied to a shape-only copy: the export plan -
    scores = {i: _scores(run.state.load_scores(i)) for i in target.scored}
    chosen = method.choose(info, scores)
    out = plan_output(run, chosen, info, compensate=False)

    # -- pass 2: remove each block's units, write it under its final name --------------
    removal_pass(run, method.name, out, chosen, info, compensate=False)

    streamed = {
        "blocks": n,
        "kept_blocks": len(out.kept),
        "passes": "pass 1 forward and backward, pass 2 removal",
        "resumed_from_block": run.resumed_from,
        "activations": run.activations,
        "dtype": run.dtype_name,
        "score_seconds": prog.block_seconds[:steps],
        "write_seconds": prog.block_seconds[steps:],
    }
    stages = {"stage1_seconds": sum(prog.block_seconds[:steps]), "stage1_peak_rss_mb": pass1_rss}
    return publish(run, method, out, chosen, block_before, dense_block_params, streamed, stages=stages)


def _scores(record: dict) -> tuple[list[float], list[float]]:
    """A committed ``scores-NNNNN.pt`` record as ``(per KV group, per MLP channel)``."""
    return record["groups"], record["channels"]
