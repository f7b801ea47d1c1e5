"""SoBP's stage 1 streamed: the first-order mask scores ``Σ_x ∂L/∂m_g`` of every block
(SoBP, Wei et al., EMNLP 2024: "Structured Optimal Brain Pruning"; the in-memory
counterpart is :func:`llmprune.methods.sobp.first_order_scores`) without the model in
memory: only the embeddings/final norm/LM head and one decoder block at a time.

1. **Forward.** Every calibration window runs through block ``0, 1, …, n − 1``, each read
   from the checkpoint (as the streamed capture does), and the input of every block
   ``x_0 … x_{n−1}`` and the last block's output ``x_n`` are kept: in memory, or with
   ``--activations disk`` in memory-mapped files ``state/forward-NNNNN.bin``.
2. **Top.** Per window, the LM loss of ``x_n`` (the model's own final norm and the chunked
   LM-head loss of :func:`~llmprune.methods.gradients.lm_loss_backward`, the blocks
   replaced by a pass-through that returns ``x_n``) is back-propagated to ``∂L/∂x_n``.
3. **Backward**, from block ``n − 1`` down to block 0: the block is read again, SoBP's
   ones-masks are put on its ``o_proj``/``down_proj`` inputs
   (:func:`~llmprune.methods.sobp.block_masks`), its forward is recomputed from the stored
   ``x_i`` with ``x_i`` requiring grad (block 0: not), the gradient at its output is
   back-propagated, the masks' gradients (accumulated over the windows in order, as in
   memory) are the block's scores, and ``∂L/∂x_i`` is handed to the block below.

The arithmetic is that of the whole-model backward pass, one block at a time, so the
scores equal :func:`~llmprune.methods.sobp.first_order_scores`'s (``tests/test_streamed_sobp.py``).

**Resume.** Each block's scores (``state/scores-NNNNN.pt``) and the gradient at its inputs
(``grad-NNNNN.safetensors``, or the flushed ``grad-a/b.bin`` map) are written before
``progress.json`` counts the block in ``scored`` (from the last block down). A resumed run
needs the forward inputs of the blocks not yet scored: in memory they are recomputed (one
more forward pass up to the lowest scored block); with disk activations each forward step is
committed too (``forward``), so only the missing ones are recomputed.

**Memory.** One block, the outer tensors, the ``n + 1`` boundary activations (N × L × d each;
on disk with ``--activations disk``; each freed once its block is scored) and two copies of
the gradient (N × L × d, memory-mapped with disk), plus one window's autograd graph of one block.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

if TYPE_CHECKING:
    from .engine.streaming import DiskActivations

#: :class:`llmprune.streamed.StreamRun` (not imported: that module imports this one)
StreamRun = Any


class Boundaries:
    """The forward pass's block inputs ``x_0 … x_n`` (``x_n``: the last block's outputs),
    in memory or as memory-mapped files ``state/forward-NNNNN.bin``."""

    def __init__(self, run: StreamRun, shape: tuple[int, ...], disk: bool) -> None:
        from .engine.streaming import DiskActivations

        self.acts: DiskActivations | None = (
            # one file per boundary (:meth:`name`); the pair of names is not used
            DiskActivations(run.state.dir, shape, run.dtype, ("forward-a.bin", "forward-b.bin")) if disk else None
        )
        self.xs: dict[int, torch.Tensor] = {}

    @staticmethod
    def name(i: int) -> str:
        return f"forward-{i:05d}.bin"

    def get(self, i: int) -> torch.Tensor:
        """``x_i`` (disk: mapped from its file, which must be whole)."""
        if i not in self.xs:
            assert self.acts is not None, "memory boundaries are all computed in this process"
            self.xs[i] = self.acts.tensor(self.name(i))
        return self.xs[i]

    def new(self, i: int) -> torch.Tensor | None:
        """Where ``x_i`` is written: its file (disk), or None (memory: the runner allocates)."""
        return None if self.acts is None else self.acts.tensor(self.name(i), create=True)

    def put(self, i: int, x: torch.Tensor) -> None:
        """Keep ``x_i`` (disk: flushed)."""
        self.xs[i] = x
        if self.acts is not None:
            self.acts.flush(self.name(i))

    def drop(self, i: int) -> None:
        """Release ``x_i`` (disk: delete its file)."""
        self.xs.pop(i, None)
        if self.acts is not None:
            self.acts.remove(self.name(i))


def _clone_tensors(obj: Any, memo: dict[int, torch.Tensor] | None = None) -> Any:
    """``obj`` with every tensor cloned (outside inference mode, so autograd may save them:
    the captured block arguments, e.g. rotary tables, are inference tensors)."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.clone()
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone_tensors(o, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: _clone_tensors(v, memo) for k, v in obj.items()}
    return obj


@contextmanager
def _blocks_return(blocks: list[nn.Module], top: torch.Tensor) -> Iterator[None]:
    """Every block passes its input through, the last one returns ``top``: the model's
    forward then computes only the embeddings (discarded) and what follows the blocks."""

    def through(*args: Any, **kwargs: Any) -> torch.Tensor:
        h: torch.Tensor = args[0] if args else kwargs["hidden_states"]
        return h

    for block in blocks[:-1]:
        block.forward = through
    blocks[-1].forward = lambda *args, **kwargs: top
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def _forward(run: StreamRun, bounds: Boundaries, start: int, stop: int, kwargs_list: list[dict]) -> None:
    """Compute ``x_{j+1}`` from ``x_j`` for ``j`` in ``start … stop − 1`` (disk: each step committed)."""
    from .engine.streaming import StreamRunner
    from .streamed_structured import release_block

    prog = run.prog
    for j in run.bar(start, stop, "sobp (streamed, stage 1: forward)"):
        block = run.read_block(j)
        runner = StreamRunner(block, bounds.get(j), kwargs_list[j], run.dev, outputs=bounds.new(j + 1))
        outputs = runner.forward(keep_outputs=True)
        assert outputs is not None
        bounds.put(j + 1, outputs)
        del runner
        release_block(run, j)
        if bounds.acts is not None:
            prog.forward = j + 1
            run.state.commit(prog)


def _top_gradient(run: StreamRun, x_top: torch.Tensor, out: torch.Tensor) -> None:
    """``∂L/∂x_n`` of every window into ``out``: the LM loss of the last block's outputs
    through the model's final norm and chunked LM head."""
    from .engine.offload import move_except_blocks
    from .methods.gradients import LOSS_CHUNK, check_loss, lm_loss_backward

    assert run.calib is not None
    move_except_blocks(run.model, run.blocks, run.dev)
    for w in range(x_top.shape[0]):
        x = x_top[w : w + 1].to(run.dev, copy=True).requires_grad_(True)
        with _blocks_return(run.blocks, x), torch.enable_grad():
            check_loss(lm_loss_backward(run.model, run.calib[w : w + 1].to(run.dev), LOSS_CHUNK))
        assert x.grad is not None
        out[w : w + 1] = x.grad.to(out.device)


def block_backward(
    run: StreamRun,
    i: int,
    inputs: torch.Tensor,
    grad_out: torch.Tensor,
    grad_in: torch.Tensor | None,
    kwargs: dict,
) -> tuple[list[float], list[float]]:
    """Block ``i``'s first-order scores: its forward recomputed from ``inputs`` window by
    window with SoBP's masks, ``grad_out`` back-propagated; ``∂L/∂inputs`` goes into
    ``grad_in`` (None for block 0)."""
    from .engine.masks import MaskHooks
    from .methods.sobp import block_masks, mask_scores
    from .streamed_structured import release_block

    block = run.read_block(i)
    kwargs = _clone_tensors(kwargs)
    with MaskHooks() as hooks, torch.enable_grad():
        gm, cm = block_masks(hooks, run.adapter, block)
        for w in range(inputs.shape[0]):
            x = inputs[w : w + 1].to(run.dev, copy=True).requires_grad_(grad_in is not None)
            out = block(x, **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            out.backward(grad_out[w : w + 1].to(run.dev))
            if grad_in is not None:
                assert x.grad is not None
                grad_in[w : w + 1] = x.grad.to(grad_in.device)
        scores = mask_scores(gm, cm)
    release_block(run, i)
    return scores


def stage1(run: StreamRun, first: torch.Tensor, kwargs_list: list[dict]) -> None:
    """Score every block not yet scored (module docstring), committing each to the state
    folder (``scores-NNNNN.pt`` with ``{"groups": [...], "channels": [...]}``, signed sums)
    and reporting it to ``run.on_block_done(k)`` for the ``k``-th block scored (block ``n − 1 − k``)."""
    from .engine.streams import ActivationStream

    prog, n = run.prog, run.n_blocks
    if prog.scored >= n:
        return
    disk = run.activations == "disk"
    shape = tuple(first.shape)
    bounds = Boundaries(run, shape, disk)
    grads = ActivationStream(run.state, "grad", disk, shape, run.dtype)
    t = time.perf_counter()
    # forward: the inputs of the blocks still to score (and x_n for the top when none is)
    need = n if prog.scored == 0 else n - prog.scored - 1
    start = prog.forward if disk else 0
    if start == 0:
        x0 = bounds.new(0)
        if x0 is not None:
            x0.copy_(first)
        bounds.put(0, first if x0 is None else x0)
    _forward(run, bounds, start, need, kwargs_list)
    if prog.scored == 0:
        top = grads.buffer()
        _top_gradient(run, bounds.get(n), top)
        grads.advance(n, top)
    else:
        assert prog.grad is not None, "a resumed stage 1 records its gradient file"
        grads.restore(prog.grad)
    for k in run.bar(prog.scored, n, "sobp (streamed, stage 1: backward)"):
        i = n - 1 - k
        assert grads.tensor is not None
        grad_in = grads.buffer() if i > 0 else None
        gs, cs = block_backward(run, i, bounds.get(i), grads.tensor, grad_in, kwargs_list[i])
        run.state.save_scores(i, {"groups": gs, "channels": cs})
        if grad_in is not None:
            grads.advance(i, grad_in)
        prog.grad = grads.name if i > 0 else None
        prog.scored = k + 1
        prog.block_seconds.append(time.perf_counter() - t)  # since the last commit (the forward in the first)
        run.state.commit(prog)
        t = time.perf_counter()
        grads.drop_stale()
        for j in range(i, n + 1):
            bounds.drop(j)
        if run.on_block_done is not None:
            run.on_block_done(k)
    grads.close()
