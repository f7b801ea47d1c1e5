"""Loss gradients over calibration windows, one window per backward (SoBP stage 1,
LLM-Pruner): only the tensors asked for get gradients, the rest of the model is frozen.

The LM loss is the mean next-token cross-entropy of each window. Its LM head runs
``loss_chunk`` tokens at a time (:func:`lm_loss_backward`): the model is run up to the
LM head's input ``h``; each chunk's logits, loss and backward into a detached copy of
``h`` follow, so at most ``loss_chunk × vocab`` logits exist at once (a 262k-token
vocabulary at 2048 tokens would otherwise hold 2 GiB of logits and as much again for
their softmax and gradient); ``h`` then back-propagates the summed gradient through the
model once. The gradients equal those of the unchunked loss up to rounding.

``offload_blocks`` (gradients of hook-inserted tensors only, e.g. SoBP's masks) keeps
only the running decoder block on the device: every block runs under non-reentrant
activation checkpointing and is streamed in for its forward and for its recomputation
(:func:`~llmprune.engine.offload.checkpointed_blocks`), the rest of the model stays
there throughout (:func:`~llmprune.engine.offload.move_except_blocks`).
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LlmpruneError

#: tokens per LM-head chunk of the calibration loss
LOSS_CHUNK = 256


def _output_embeddings(model: nn.Module) -> nn.Module:
    hf: Any = model  # a transformers causal LM
    head: nn.Module = hf.get_output_embeddings()
    return head


class _HeadInput(Exception):
    """Raised by the LM head's pre-hook to stop the forward before the full logits."""


def _head_input(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The LM head's input for ``ids`` (batch × T × d), with its autograd graph."""
    head = _output_embeddings(model)
    seen: list[torch.Tensor] = []

    def pre(module: nn.Module, args: tuple) -> None:
        seen.append(args[0])
        raise _HeadInput

    handle = head.register_forward_pre_hook(pre)
    try:
        model(input_ids=ids, use_cache=False)
    except _HeadInput:
        pass
    finally:
        handle.remove()
    if not seen:
        raise LlmpruneError(f"{type(model).__name__} never called its LM head: the calibration loss needs a causal LM")
    return seen[0]


def lm_loss_backward(model: nn.Module, ids: torch.Tensor, chunk: int = LOSS_CHUNK) -> float:
    """Back-propagate the mean next-token cross-entropy of ``ids`` (batch × T); return it.

    Same loss as Hugging Face's ``model(input_ids=ids, labels=ids).loss`` (logit
    soft-capping ``config.final_logit_softcapping`` included), with the LM head applied
    ``chunk`` tokens at a time (module docstring).
    """
    h = _head_input(model, ids)
    head = _output_embeddings(model)
    cap = getattr(model.config, "final_logit_softcapping", None)
    hd = h.detach().requires_grad_(True)
    positions = ids.shape[1] - 1
    count = positions * ids.shape[0]
    total = 0.0
    for t0 in range(0, positions, chunk):
        t1 = min(t0 + chunk, positions)
        logits = head(hd[:, t0:t1])
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        loss = (
            F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), ids[:, t0 + 1 : t1 + 1].reshape(-1), reduction="sum"
            )
            / count
        )
        loss.backward()
        total += float(loss.detach())
    if h.requires_grad and hd.grad is not None:
        h.backward(hd.grad)
    return total


def check_loss(loss: float) -> None:
    """Refuse a NaN/inf calibration loss (its gradients are meaningless)."""
    if not math.isfinite(loss):
        raise LlmpruneError("the calibration loss is NaN/inf: load the model in float32 (--dtype float32)")


def backward_windows(
    model: nn.Module,
    calib: torch.Tensor,
    device: str,
    trainable: Iterable[torch.Tensor] = (),
    checkpointing: bool = False,
    progress: bool = True,
    desc: str = "gradients",
    loss_chunk: int = LOSS_CHUNK,
    offload_blocks: Sequence[nn.Module] | None = None,
) -> None:
    """Accumulate ``∂L/∂t`` (LM loss, summed over the windows of ``calib``) into ``.grad``
    of every tensor in ``trainable`` and of any leaf tensor hooks put in the graph.

    Every model parameter outside ``trainable`` has ``requires_grad=False`` meanwhile;
    the flags, the training mode and gradient checkpointing are restored afterwards.
    ``offload_blocks`` (the decoder blocks) streams one block at a time to ``device``
    (module docstring); the model is back on the CPU afterwards. It takes no weight
    gradients (``trainable`` must be empty): a streamed block's weights leave the device
    before their gradients would be accumulated.
    """
    from tqdm.auto import tqdm

    from ..engine.offload import checkpointed_blocks, move_except_blocks

    trainable = list(trainable)
    if offload_blocks is not None and trainable:
        raise LlmpruneError("offloaded backward passes take gradients of masks only, not of weights")
    hf: Any = model  # a transformers causal LM
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for t in trainable:
        t.requires_grad_(True)
        t.grad = None
    was_training = model.training
    checkpointing = checkpointing and offload_blocks is None  # offloading checkpoints every block itself
    if checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    if offload_blocks is not None:
        move_except_blocks(model, offload_blocks, torch.device(device))
        streamed: Any = checkpointed_blocks(offload_blocks, torch.device(device))
    else:
        model.to(device)
        streamed = nullcontext()
    try:
        with torch.enable_grad(), streamed:
            for i in tqdm(range(calib.shape[0]), desc=desc, disable=not progress, file=sys.stderr):
                ids = calib[i : i + 1].to(device)
                check_loss(lm_loss_backward(model, ids, loss_chunk))
    finally:
        if offload_blocks is not None:
            model.to("cpu")
        if checkpointing:
            hf.gradient_checkpointing_disable()
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
