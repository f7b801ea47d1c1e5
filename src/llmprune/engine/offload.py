"""Offloaded execution for the whole-model methods (PG, DISP): only the decoder block
that is running sits on the device; every other block stays in CPU memory.

The layer-wise engine (:mod:`.layerwise`) already streams blocks for the calibration
methods. PG and DISP need forwards (and, for DISP, a backward) through the *whole* model,
so they stream blocks on the fly instead:

- :func:`move_except_blocks` puts embeddings, final norm, LM head and model-level
  buffers (e.g. rotary tables) on the device once (tied weights stay tied: the same
  ``Parameter`` objects get new data);
- :class:`BlockStream` swaps a block's parameters and buffers between their CPU master
  tensors and device copies (``enter``/``exit``). Leaving the device is a pointer swap,
  never a device-to-host copy: the frozen weights never change;
- :func:`placed` (forward-only, PG) streams each block through forward pre-/post-hooks;
- :func:`checkpointed_blocks` (DISP) runs each block under non-reentrant
  ``torch.utils.checkpoint`` and, with ``stream_to``, streams the block *inside* the
  checkpointed function, so the recomputation in the backward pass brings the block back
  to the device too. Autograd keeps references to the device copies that a block's
  recomputed graph saved, so they live until that block's backward is done and are freed
  after: at most about one block of weights is on the device at a time besides the
  resident parts. Without checkpointing every block's device copy would be saved for the
  backward pass, so streaming requires it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn


def move_except_blocks(model: nn.Module, blocks: Iterable[nn.Module], device: torch.device) -> None:
    """Every parameter and buffer outside the decoder blocks to ``device``."""
    inside = {id(m) for block in blocks for m in block.modules()}
    for module in model.modules():
        if id(module) in inside:
            continue
        for p in module.parameters(recurse=False):
            p.data = p.data.to(device)
        for name, buf in list(module.named_buffers(recurse=False)):
            module._buffers[name] = buf.to(device)


class BlockStream:
    """A block's parameters and buffers on ``device`` between :meth:`enter` and :meth:`exit`,
    on their CPU master tensors otherwise. The block is moved to the CPU once, here."""

    def __init__(self, block: nn.Module, device: torch.device | str) -> None:
        self.block, self.device = block, torch.device(device)
        block.to("cpu")
        self.params = [(p, p.data) for p in block.parameters()]
        self.buffers = [(m, name, buf) for m in block.modules() for name, buf in m.named_buffers(recurse=False)]

    def enter(self) -> None:
        for p, host in self.params:
            p.data = host.to(self.device, non_blocking=True)
        for m, name, host in self.buffers:
            m._buffers[name] = host.to(self.device, non_blocking=True)

    def exit(self) -> None:
        for p, host in self.params:
            p.data = host
        for m, name, host in self.buffers:
            m._buffers[name] = host


@contextmanager
def placed(model: nn.Module, blocks: Iterable[nn.Module], device: torch.device, offload: bool) -> Iterator[None]:
    """Put the model on ``device`` for forward passes; with ``offload`` only the block
    being run is on the device (streamed in by a forward pre-hook, out by a forward hook).
    Everything is back on the CPU afterwards."""
    if device.type == "cpu" and not offload:
        yield
        return
    handles = []
    try:
        if offload:
            move_except_blocks(model, blocks, device)
            for block in blocks:
                stream = BlockStream(block, device)
                handles.append(block.register_forward_pre_hook(lambda mod, args, s=stream: s.enter()))
                handles.append(block.register_forward_hook(lambda mod, args, out, s=stream: s.exit()))
        else:
            model.to(device)
        yield
    finally:
        for h in handles:
            h.remove()
        model.to("cpu")


@contextmanager
def checkpointed_blocks(blocks: Sequence[nn.Module], stream_to: torch.device | None = None) -> Iterator[None]:
    """Run every block's forward under ``torch.utils.checkpoint`` (non-reentrant, so
    gradients reach masks that hooks read from outside the block's arguments). With
    ``stream_to``, each block is on that device only while its forward or its
    recomputation runs (see the module docstring)."""
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        original = block.forward
        if stream_to is not None:
            stream = BlockStream(block, stream_to)

            def run(*args: Any, _original: Any = original, _stream: BlockStream = stream, **kwargs: Any) -> Any:
                _stream.enter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    _stream.exit()
        else:
            run = original

        def forward(*args: Any, _run: Any = run, **kwargs: Any) -> Any:
            return checkpoint(_run, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    try:
        yield
    finally:
        for block in blocks:
            if "forward" in block.__dict__:
                del block.forward


__all__ = ["BlockStream", "checkpointed_blocks", "move_except_blocks", "placed"]
