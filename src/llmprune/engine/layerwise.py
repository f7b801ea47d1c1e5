"""Layer-wise (sequential) execution: the engine every calibration-based method runs on.

1. Capture the inputs of block 0 with *all* the positional and keyword arguments the
   installed transformers passes a decoder layer (position embeddings, masks, position
   ids, cache flags), by a forward pre-hook on block 0.
2. For each block: move only that block to the compute device, let the method gather
   statistics (hooks) and modify the block, then run the modified block to produce the
   inputs of the next block (so each block is calibrated on its pruned predecessors'
   outputs, as in SparseGPT/Wanda), and move the block back.

Only one block plus the calibration activations live on the compute device at a time.
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.base import LinearGroup, ModelAdapter
from .stats import InputStats, collect_inputs


class _Captured(Exception):
    """Raised by the block-0 pre-hook once its inputs are stored."""


class _StopForward(Exception):
    """Raised by :meth:`BlockRunner.forward`'s ``stop_after`` hook to end a sample's forward."""


def to_device(obj: Any, device: torch.device | str, memo: dict[int, Any] | None = None) -> Any:
    """Move every tensor inside ``obj`` (tuples, lists, dicts nested) to ``device``;
    ``memo`` makes a tensor shared by several containers move once."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device)
        return memo[id(obj)]
    if isinstance(obj, tuple):
        return tuple(to_device(o, device, memo) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device, memo) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device, memo) for k, v in obj.items()}
    return obj


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


@dataclass
class EngineStats:
    """What the engine measured during one run."""

    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_device_mb: float | None = None
    block_seconds: list[float] = field(default_factory=list)


class BlockRunner:
    """Runs one block on the current calibration inputs; handed to a method per block."""

    def __init__(self, block: nn.Module, inputs: torch.Tensor, kwargs: dict, device: torch.device) -> None:
        self.block = block
        self.inputs = inputs
        self.kwargs = kwargs
        self.device = device
        #: the dense copy of this block on the dense stream (``LayerwiseEngine.run(reference=True)``)
        self.reference: BlockRunner | None = None
        #: the outputs of the last :meth:`forward` that kept them
        self.last_outputs: torch.Tensor | None = None

    def forward(self, keep_outputs: bool = True, stop_after: nn.Module | None = None) -> torch.Tensor | None:
        """Run every calibration sample through the block (batch 1, no grad).

        ``stop_after``: end each sample's forward as soon as that submodule has run (for
        hooks that only need what reaches it, e.g. ``o_proj``'s inputs: the MLP is skipped);
        no outputs are kept then."""
        if stop_after is not None and keep_outputs:
            raise ValueError("stop_after ends the forward early: there are no block outputs to keep")
        outs = torch.empty_like(self.inputs) if keep_outputs else None
        handle = None
        if stop_after is not None:

            def stop(module: nn.Module, args: Any, output: Any) -> None:
                raise _StopForward

            handle = stop_after.register_forward_hook(stop)
        try:
            with torch.inference_mode():
                for i in range(self.inputs.shape[0]):
                    try:
                        out = self.block(self.inputs[i : i + 1].to(self.device), **self.kwargs)
                    except _StopForward:
                        continue
                    out = out[0] if isinstance(out, tuple) else out
                    if outs is not None:
                        outs[i : i + 1] = out.to(outs.device)
        finally:
            if handle is not None:
                handle.remove()
        if outs is not None:
            self.last_outputs = outs
        return outs

    def collect(
        self,
        groups: list[LinearGroup],
        hessian: bool,
        dtype: torch.dtype = torch.float32,
        stop_after: nn.Module | None = None,
    ) -> dict[str, InputStats]:
        """Statistics of the inputs of ``groups`` over all calibration samples (``stop_after``:
        see :meth:`forward`)."""
        with collect_inputs(groups, hessian=hessian, dtype=dtype) as stats:
            self.forward(keep_outputs=False, stop_after=stop_after)
        for name, acc in stats.items():
            acc.check_finite(name)
        return stats


BlockFn = Callable[[int, nn.Module, BlockRunner], None]


class LayerwiseEngine:
    """Sequential block-by-block execution with offloading (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        device: str | torch.device = "cpu",
        offload: bool = True,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.adapter = adapter
        self.device = torch.device(device)
        self.offload = offload and self.device.type != "cpu"
        self.progress = progress

    def _non_block_modules_to(self, device: torch.device) -> None:
        blocks = self.adapter.blocks()
        for child in self.adapter.decoder().children():
            if child is not blocks:
                child.to(device)

    def capture(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Inputs of block 0 for every sample ([n, L, d], on the storage device) and, per
        block, every keyword argument the decoder passes it.

        During capture each block's ``forward`` is replaced by an identity that records
        its arguments, so the decoder's own loop computes whatever it passes each layer
        (per-layer masks and rotary tables of sliding/global layers included) at the cost
        of the embedding only. Arguments are identical for samples of one length, so
        they are recorded from the first sample.
        """
        blocks = self.adapter.blocks()
        storage = "cpu" if self.offload else self.device
        self._non_block_modules_to(self.device)
        hidden: list[torch.Tensor] = []
        per_block: list[dict | None] = [None] * len(blocks)

        def recorder(index: int) -> Callable[..., torch.Tensor]:
            def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
                h: torch.Tensor = args[0] if args else kwargs.pop("hidden_states")
                if len(args) > 1:
                    raise RuntimeError(
                        "decoder layers called with extra positional arguments; the adapter must name them"
                    )
                if index == 0:
                    hidden.append(h.detach().to(storage))
                if per_block[index] is None:
                    per_block[index] = dict(kwargs)
                elif index == 0:
                    raise _Captured  # later samples: only block-0 inputs are needed
                return h

            return forward

        for i, block in enumerate(blocks):
            block.forward = recorder(i)
        try:
            with torch.inference_mode():
                for i in range(input_ids.shape[0]):
                    try:
                        self.adapter.decoder()(input_ids=input_ids[i : i + 1].to(self.device), use_cache=False)
                    except _Captured:
                        pass
        finally:
            for block in blocks:
                del block.forward
        memo: dict[int, Any] = {}
        kwargs_list = []
        for kwargs in per_block:
            kwargs = dict(kwargs or {})
            kwargs["use_cache"] = False
            kwargs.pop("cache", None)  # transformers >= 5.24
            kwargs.pop("past_key_values", None)
            kwargs.pop("past_key_value", None)
            kwargs_list.append(to_device(kwargs, self.device, memo))
        return torch.cat(hidden, 0), kwargs_list

    def run(
        self,
        input_ids: torch.Tensor,
        on_block: BlockFn,
        desc: str = "blocks",
        on_output: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        reference: bool = False,
    ) -> EngineStats:
        """Calibrate and modify every block in order; return time and memory used.

        ``on_output(i, inputs, outputs)`` (optional) sees each block's calibration inputs
        and outputs after it ran (e.g. ShortGPT's block influence).

        ``reference``: also carry the *dense* model's stream. Each block is copied before
        ``on_block`` changes it and ``runner.reference`` runs that copy on the dense stream
        (e.g. SoBP's reconstruction targets); its outputs (from the method's own
        ``forward(keep_outputs=True)``, else one more pass) are the next block's dense
        inputs. Costs one extra block on the device and one stream of activations."""
        stats = EngineStats()
        t0 = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        hidden, kwargs_list = self.capture(input_ids)
        dense_hidden = hidden.clone() if reference else None
        blocks = self.adapter.blocks()
        bar = tqdm(range(len(blocks)), desc=desc, disable=not self.progress, file=sys.stderr)
        for i in bar:
            tb = time.perf_counter()
            block = blocks[i]
            if self.offload:
                block.to(self.device)
            runner = BlockRunner(block, hidden, kwargs_list[i], self.device)
            if dense_hidden is not None:
                runner.reference = BlockRunner(copy.deepcopy(block), dense_hidden, kwargs_list[i], self.device)
            on_block(i, block, runner)
            outputs = runner.forward(keep_outputs=True)
            assert outputs is not None
            if runner.reference is not None:
                ref = runner.reference
                dense_hidden = ref.last_outputs if ref.last_outputs is not None else ref.forward(keep_outputs=True)
                runner.reference = None  # the dense copy of the block is dropped here
            if on_output is not None:
                on_output(i, hidden, outputs)
            hidden = outputs
            if self.offload:
                block.to("cpu")
            stats.block_seconds.append(time.perf_counter() - tb)
        stats.seconds = time.perf_counter() - t0
        stats.peak_rss_mb = peak_rss_mb()
        if self.device.type == "cuda":
            stats.peak_device_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.final_hidden = hidden
        return stats
