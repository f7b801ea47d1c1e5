"""Streamed SoBP (Structured Optimal Brain Pruning, Wei et al., EMNLP 2024; our
reconstruction, :mod:`llmprune.methods.sobp`): the checkpoint ``llmprune.prune(..., "sobp")``
+ ``llmprune.save`` write, from a model that is never in memory as a whole.

1. **Stage 1 (first-order scores)** by a forward and a backward pass over the blocks read
   one at a time (:mod:`llmprune.streamed_gradients`); each block's scores are committed.
2. **Selection** over all blocks by :meth:`SoBP.choose <llmprune.methods.sobp.SoBP.choose>`,
   the code :meth:`SoBP.run <llmprune.methods.sobp.SoBP.run>` runs (``units``,
   ``normalize``, ``global_selection`` included). It fixes every block's widths, so it is
   applied to a copy of the ``meta`` skeleton (shapes only) for the export plan
   (:func:`llmprune.streamed_structured.plan_output`: stock config, DeciLM
   ``block_configs`` or the llmprune layout, as ``llmprune.save`` chooses).
3. **Stages 2-3**, block by block on two activation streams, as
   :class:`~llmprune.engine.layerwise.LayerwiseEngine` runs them with ``reference=True``:
   the dense block is read, copied (the reference), refined on the pruned stream
   (:meth:`SoBP._refine`, greedy structured OBS) and reconstructed against the copy on the
   dense stream (:meth:`SoBP._reconstruct`); both copies then run to produce the next
   block's pruned and dense inputs, the pruned block is written to its shard
   (:func:`~llmprune.streamed_structured.write_block`) and both are released. Without
   ``reconstruct`` there is no dense stream. After each block both streams are committed
   (``hidden-``/``dense-NNNNN.safetensors``, or the flushed memory maps of
   ``--activations disk``) with ``progress.json``, so a killed run resumes at the next block.

**Memory.** Host: outer tensors + one block in two copies (dense reference and pruned) +
the calibration activations (the dense and the pruned stream, inputs and outputs, and
stage 3's targets; memory-mapped with disk activations), whatever the depth. Stage 1
stores the ``n + 1`` block-boundary activations of its forward pass (N × L × d each), on
disk with ``--activations disk``.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .methods.sobp import SoBP

#: :class:`llmprune.streamed.StreamRun` (not imported: that module imports this one)
StreamRun = Any


def _outputs(runner: Any) -> torch.Tensor:
    """A reference runner's block outputs: those of stage 3's dense pass, else one more pass
    (as :meth:`LayerwiseEngine.run <llmprune.engine.layerwise.LayerwiseEngine.run>` does)."""
    out = runner.last_outputs if runner.last_outputs is not None else runner.forward(keep_outputs=True)
    assert out is not None
    return out


def prune_sobp(run: StreamRun, method: SoBP) -> dict:
    """Run stage 1, the selection and stages 2-3 (module docstring) on ``run`` and publish
    the checkpoint; return the report (a :class:`~llmprune.prune_report.PruneReport` as a
    dict, with SoBP's ``details`` and the streamed record under ``details["streamed"]``).
    ``on_block_done(k)``: stage 1's ``k``-th scored block (``k < n``), then stage 2-3's
    written block ``k − n``."""
    from .engine.layerwise import peak_rss_mb
    from .engine.streaming import StreamRunner
    from .engine.streams import ActivationStream
    from .methods.units import block_infos
    from .models import count_parameters
    from .methods.sobp import mask_gradients
    from .streamed_gradients import GradientTarget, backward_pass, capture
    from .streamed_structured import plan_output, publish, release_block, write_block

    prog, dev, n = run.prog, run.dev, run.n_blocks
    assert run.calib is not None
    method.check_calibration(run.calib)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    dense_block_params = sum(count_parameters(b) for b in run.blocks)
    block_before = run.adapter.block_linear_params()
    info = block_infos(run.adapter)
    first, kwargs_list = capture(run) if prog.done < n else (None, None)

    # -- stage 1 -----------------------------------------------------------------------
    if first is not None and kwargs_list is not None:
        target = GradientTarget("sobp (streamed, stage 1", mask_gradients, range(n))
        backward_pass(run, first, kwargs_list, target)
    stage1_rss = peak_rss_mb()
    run.release_outer()

    # -- selection (SoBP.run's code), applied to a shape-only copy: the export plan ----
    t1 = time.perf_counter()
    scores = [(r["groups"], r["channels"]) for r in (run.state.load_scores(i) for i in range(n))]
    chosen = method.choose(info, scores)
    plan = method.block_plan(chosen, n)
    out = plan_output(run, chosen, info, compensate=False)
    selection_seconds = time.perf_counter() - t1

    # -- stages 2-3: refine on the pruned stream, reconstruct against the dense copy -----
    if first is not None and kwargs_list is not None and prog.done < n:
        disk = run.activations == "disk"
        shape = tuple(first.shape)
        pruned = ActivationStream(run.state, "hidden", disk, shape, run.dtype)
        dense = ActivationStream(run.state, "dense", disk, shape, run.dtype) if method.config.reconstruct else None
        if prog.done == 0:
            pruned.start(first)
            if dense is not None:
                dense.start(first.clone())  # as the engine's dense_hidden
        else:
            assert prog.hidden is not None, "a resumed run records its hidden-state file"
            pruned.restore(prog.hidden)
            if dense is not None:
                assert prog.dense is not None, "a resumed run records its dense-stream file"
                dense.restore(prog.dense)
        del first
        for i in run.bar(prog.done, n, "sobp (streamed, stages 2-3: refine + reconstruct)"):
            tb = time.perf_counter()
            block = run.read_block(i)
            assert pruned.tensor is not None
            runner = StreamRunner(block, pruned.tensor, kwargs_list[i], dev, outputs=pruned.outputs())
            if dense is not None:  # the dense copy of the block on the dense stream
                assert dense.tensor is not None
                runner.reference = StreamRunner(
                    copy.deepcopy(block), dense.tensor, kwargs_list[i], dev, outputs=dense.outputs()
                )
            refits, refine_s, reconstruct_s = method.prune_block(run.adapter, block, runner, i, plan[i])
            nxt = dense_nxt = None
            if i + 1 < n:  # the next block's pruned and dense inputs
                nxt = runner.forward(keep_outputs=True)
                if runner.reference is not None:
                    dense_nxt = _outputs(runner.reference)
            del runner  # the dense copy of the block is dropped here
            write_block(run, out, i, block)
            release_block(run, i)
            if nxt is not None:
                pruned.advance(i + 1, nxt)
            if dense is not None and dense_nxt is not None:
                dense.advance(i + 1, dense_nxt)
            prog.done = i + 1
            prog.hidden = pruned.name
            prog.dense = None if dense is None else dense.name
            prog.layers.append(
                {"block": i, "refits": refits, "refine_seconds": refine_s, "reconstruct_seconds": reconstruct_s}
            )
            prog.block_seconds.append(time.perf_counter() - tb)
            run.state.commit(prog)
            pruned.drop_stale()
            if dense is not None:
                dense.drop_stale()
            if run.on_block_done is not None:
                run.on_block_done(n + i)
        pruned.close()
        if dense is not None:
            dense.close()

    refine = sum(e["refine_seconds"] for e in prog.layers)
    reconstruct = sum(e["reconstruct_seconds"] for e in prog.layers)
    details: dict[str, Any] = {}
    if method.config.reconstruct:
        details["refits"] = [r for e in prog.layers for r in e["refits"]]
    details["stage_seconds"] = {
        "1_scores": sum(prog.block_seconds[:n]),
        "1_selection": selection_seconds,
        "2_refine": refine,
        "3_reconstruct": reconstruct,
        "other": sum(prog.block_seconds[n:]) - refine - reconstruct,
    }
    streamed = {
        "blocks": n,
        "kept_blocks": n,
        "passes": "stage 1 forward and backward, stages 2-3",
        "resumed_from_block": run.resumed_from,
        "activations": run.activations,
        "dtype": run.dtype_name,
        "stage1_seconds": prog.block_seconds[:n],
        "write_seconds": prog.block_seconds[n:],
    }
    stages = {"stage1_seconds": sum(prog.block_seconds[:n]), "stage1_peak_rss_mb": stage1_rss}
    return publish(run, method, out, chosen, block_before, dense_block_params, streamed, stages=stages, details=details)
