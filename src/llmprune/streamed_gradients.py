"""A streamed backward pass: gradients of the LM loss (summed over the calibration windows)
taken block by block without the model in memory, only the embeddings/final norm/LM head and
one decoder block at a time. Two methods use it (:class:`GradientTarget` says what each block
gives):

- SoBP's stage 1 (Wei et al., EMNLP 2024, "Structured Optimal Brain Pruning"): the
  first-order mask scores ``Σ_x ∂L/∂m_g`` (in memory:
  :func:`llmprune.methods.sobp.first_order_scores`), :mod:`llmprune.streamed_sobp`;
- LLM-Pruner's importance (Ma et al., NeurIPS 2023, Eq. 4/5): ``∂L/∂w`` of every linear
  weight of a block, reduced to its group scores before the block is released (in memory:
  :meth:`llmprune.methods.llm_pruner.LLMPruner.run`), :mod:`llmprune.streamed_llm_pruner`.

1. **Forward.** Every calibration window runs through block ``0, 1, …, n − 1``, each read
   from the checkpoint (as the streamed capture does), and the input of every block
   ``x_lo … x_{n−1}`` and the last block's output ``x_n`` are kept (``lo``: the lowest
   block the backward pass reaches, 0 for SoBP): in memory, or with ``--activations disk``
   in memory-mapped files ``state/forward-NNNNN.bin``.
2. **Top.** Per window, the LM loss of ``x_n`` (the model's own final norm and the chunked
   LM-head loss of :func:`~llmprune.methods.gradients.lm_loss_backward`, the blocks
   replaced by a pass-through that returns ``x_n``) is back-propagated to ``∂L/∂x_n``.
3. **Backward**, from block ``n − 1`` down to block ``lo``: the block is read again, the
   target is attached (masks, or ``requires_grad`` on the weights), its forward is
   recomputed from the stored ``x_i`` with ``x_i`` requiring grad (block ``lo``: not), the
   gradient at its output is back-propagated window by window (the target's gradients
   accumulate over the windows in order, as in memory), the block's scores are read and
   ``∂L/∂x_i`` is handed to the block below.

The arithmetic is that of the whole-model backward pass, one block at a time, so the
scores equal the in-memory ones (``tests/test_streamed_sobp.py``, ``tests/test_streamed_llm_pruner.py``).

**Resume.** Each block's scores (``state/scores-NNNNN.pt``) and the gradient at its inputs
(``grad-NNNNN.safetensors``, or the flushed ``grad-a/b.bin`` map) are written before
``progress.json`` counts the step in ``scored`` (from the last block down). A resumed run
needs the forward inputs of the blocks not yet reached: in memory they are recomputed (one
more forward pass up to the lowest block done); with disk activations each forward step is
committed too (``forward``), so only the missing ones are recomputed.

**Memory.** One block (with the target's gradients: LLM-Pruner's are the size of the block's
linear weights), the outer tensors, at most ``n + 1`` boundary activations (N × L × d each;
on disk with ``--activations disk``; each freed once its block is done) and two copies of
the gradient (N × L × d, memory-mapped with disk), plus one window's autograd graph of one block.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

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


def _forward(
    run: StreamRun, bounds: Boundaries, start: int, stop: int, kwargs_list: list[dict], lowest: int, desc: str
) -> None:
    """Compute ``x_{j+1}`` from ``x_j`` for ``j`` in ``start … stop − 1`` (disk: each step
    committed); the inputs of the blocks below ``lowest`` are dropped once used."""
    from .engine.streaming import StreamRunner
    from .streamed_structured import release_block

    prog = run.prog
    for j in run.bar(start, stop, f"{desc}: forward)"):
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
        if j < lowest:  # after the commit: a resumed forward pass starts from x_{j+1}
            bounds.drop(j)


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


def capture(run: StreamRun) -> tuple[torch.Tensor, list[dict]]:
    """Block 0's calibration inputs and every block's arguments, as the in-memory engine captures them."""
    from .engine.layerwise import LayerwiseEngine

    assert run.calib is not None
    return LayerwiseEngine(run.model, run.adapter, device=run.dev, progress=False).capture(run.calib)


#: a block's scores, ``(per KV group, per MLP channel)``
Scores = tuple[list[float], list[float]]


@dataclass
class GradientTarget:
    """What the backward pass takes from the blocks it scores.

    ``attach(adapter, block)`` is entered around block ``i``'s recomputed forward and
    backward over every window (for ``i`` in ``scored``) and yields the function that reads
    its scores from the gradients accumulated meanwhile (SoBP: ones-masks on the
    ``o_proj``/``down_proj`` inputs; LLM-Pruner: ``requires_grad`` on the linear weights).
    The pass goes down to block ``scored.start`` (the blocks below it are read in the
    forward pass only; their inputs get no gradient); the blocks at and above
    ``scored.stop`` only hand the gradient down."""

    desc: str  # progress-bar prefix, e.g. "sobp (streamed, stage 1"
    attach: Callable[[Any, nn.Module], AbstractContextManager[Callable[[], Scores]]]
    scored: range

    def steps(self, n: int) -> int:
        """Blocks the backward pass runs through: ``n − 1`` down to ``scored.start``."""
        return n - self.scored.start


def block_backward(
    run: StreamRun,
    i: int,
    inputs: torch.Tensor,
    grad_out: torch.Tensor,
    grad_in: torch.Tensor | None,
    kwargs: dict,
    attach: Callable[[Any, nn.Module], AbstractContextManager[Callable[[], Scores]]] | None,
) -> Scores | None:
    """Block ``i``'s forward recomputed from ``inputs`` window by window, ``grad_out``
    back-propagated; ``∂L/∂inputs`` goes into ``grad_in`` (None: the lowest block of the
    pass). Returns the scores ``attach`` reads (None without ``attach``)."""
    from .streamed_structured import release_block

    block = run.read_block(i)
    kwargs = _clone_tensors(kwargs)
    hooked = attach(run.adapter, block) if attach is not None else nullcontext(None)
    with torch.enable_grad(), hooked as read:
        for w in range(inputs.shape[0]):
            x = inputs[w : w + 1].to(run.dev, copy=True).requires_grad_(grad_in is not None)
            out = block(x, **kwargs)
            out = out[0] if isinstance(out, tuple) else out
            out.backward(grad_out[w : w + 1].to(run.dev))
            if grad_in is not None:
                assert x.grad is not None
                grad_in[w : w + 1] = x.grad.to(grad_in.device)
        scores = read() if read is not None else None
    release_block(run, i)
    return scores


def backward_pass(run: StreamRun, first: torch.Tensor, kwargs_list: list[dict], target: GradientTarget) -> None:
    """Score every block of ``target.scored`` not yet scored (module docstring), committing
    each to the state folder (``scores-NNNNN.pt`` with ``{"groups": [...], "channels": [...]}``)
    and reporting the ``k``-th step of the backward pass (block ``n − 1 − k``) to
    ``run.on_block_done(k)``. ``prog.scored`` counts the steps committed, from the last block down."""
    from .engine.streams import ActivationStream

    prog, n = run.prog, run.n_blocks
    steps, lowest = target.steps(n), target.scored.start
    if prog.scored >= steps:
        return
    disk = run.activations == "disk"
    shape = tuple(first.shape)
    bounds = Boundaries(run, shape, disk)
    grads = ActivationStream(run.state, "grad", disk, shape, run.dtype)
    t = time.perf_counter()
    # forward: the inputs of the blocks still to run through (and x_n for the top when none has)
    need = n if prog.scored == 0 else n - prog.scored - 1
    start = prog.forward if disk else 0
    if start == 0:
        x0 = bounds.new(0)
        if x0 is not None:
            x0.copy_(first)
        bounds.put(0, first if x0 is None else x0)
    _forward(run, bounds, start, need, kwargs_list, lowest, target.desc)
    if prog.scored == 0:
        top = grads.buffer()
        _top_gradient(run, bounds.get(n), top)
        grads.advance(n, top)
    else:
        assert prog.grad is not None, "a resumed backward pass records its gradient file"
        grads.restore(prog.grad)
    for k in run.bar(prog.scored, steps, f"{target.desc}: backward)"):
        i = n - 1 - k
        assert grads.tensor is not None
        grad_in = grads.buffer() if i > lowest else None
        attach = target.attach if i in target.scored else None
        scores = block_backward(run, i, bounds.get(i), grads.tensor, grad_in, kwargs_list[i], attach)
        if scores is not None:
            run.state.save_scores(i, {"groups": scores[0], "channels": scores[1]})
        if grad_in is not None:
            grads.advance(i, grad_in)
        prog.grad = grads.name if grad_in is not None else None
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
