"""Loss gradients over calibration windows, one window per backward (SoBP stage 1,
LLM-Pruner): only the tensors asked for get gradients, the rest of the model is frozen."""

from __future__ import annotations

import sys
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import LlmpruneError


def backward_windows(model: nn.Module, calib: torch.Tensor, device: str, trainable: Iterable[torch.Tensor] = (),
                     checkpointing: bool = False, progress: bool = True, desc: str = "gradients") -> None:
    """Accumulate ``∂L/∂t`` (LM loss, summed over the windows of ``calib``) into ``.grad``
    of every tensor in ``trainable`` and of any leaf tensor hooks put in the graph.

    Every model parameter outside ``trainable`` has ``requires_grad=False`` meanwhile;
    the flags, the training mode and gradient checkpointing are restored afterwards.
    """
    from tqdm.auto import tqdm

    trainable = list(trainable)
    hf: Any = model  # a transformers causal LM
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for t in trainable:
        t.requires_grad_(True)
        t.grad = None
    was_training = model.training
    if checkpointing:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    model.to(device)
    try:
        with torch.enable_grad():
            for i in tqdm(range(calib.shape[0]), desc=desc, disable=not progress, file=sys.stderr):
                ids = calib[i : i + 1].to(device)
                loss = hf(input_ids=ids, labels=ids, use_cache=False).loss
                if not torch.isfinite(loss):
                    raise LlmpruneError("the calibration loss is NaN/inf: load the model in float32 (--dtype float32)")
                loss.backward()
    finally:
        if checkpointing:
            hf.gradient_checkpointing_disable()
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)
