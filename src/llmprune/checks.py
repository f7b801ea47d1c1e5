"""Input and result checks shared by the API, the CLI and the exporters.

Every check raises :class:`~llmprune.errors.LlmpruneError` with one line naming the
problem and the fix, so that the Python API refuses bad arguments exactly as the CLI
does, and no number or checkpoint that is not finite leaves llmprune.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import torch
from torch import nn

from .errors import LlmpruneError

# what running out of host or device memory raises (the CLI reports them in one line)
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError)

# config attributes that bound the sequence length a model was built for
_POSITION_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx")


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` must be an int (not a bool, not a float) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LlmpruneError(f"{name}={value!r} must be an integer")
    if minimum is not None and value < minimum:
        raise LlmpruneError(f"{name}={value!r} must be at least {minimum}")
    return int(value)


def check_positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise LlmpruneError(f"{name}={value!r} must be a positive number")
    return float(value)


def check_device(device: Any) -> str:
    """``cpu`` or ``cuda[:N]`` with CUDA present (a ``torch.device`` is accepted)."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise LlmpruneError(f"device={device!r} must be a string such as 'cpu' or 'cuda:0'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LlmpruneError(f"device {device} requested but CUDA is not available: use device='cpu'")
        return device
    if device != "cpu":
        raise LlmpruneError(f"unknown device {device!r}: use cpu or cuda[:N]")
    return device


def check_model_spec(spec: Any) -> None:
    """``llmprune.load``'s model argument: None, a name/path string or an ``os.PathLike``."""
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        raise LlmpruneError(f"model={spec!r} must be None (the default model), a directory path or a hub id string")


def check_tokenizer(tokenizer: Any, what: str) -> None:
    if tokenizer is None or not callable(tokenizer):
        raise LlmpruneError(f"tokenizer={tokenizer!r}: {what} needs the tokenizer returned by llmprune.load")


def check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise LlmpruneError(f"model={type(model).__name__}: pass the model returned by llmprune.load")


def check_prune_args(
    model: Any, method: Any, ratio: Any, pattern: Any, calib_samples: Any, seqlen: Any, seed: Any, device: Any
) -> None:
    """Types and ranges of :func:`llmprune.prune`'s general arguments (before any work);
    the method's own options are checked by its configuration."""
    check_model(model)
    if not (isinstance(method, str) and method.strip()) and not callable(getattr(method, "run", None)):
        raise LlmpruneError(f"method={method!r} must be a method name such as 'wanda' or 'sobp'")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (numbers.Real, str))):
        raise LlmpruneError(f"ratio={ratio!r} must be a number in [0, 0.99] such as 0.5")
    if pattern is not None and not isinstance(pattern, str):
        raise LlmpruneError(f"pattern={pattern!r} must be an N:M string such as '2:4'")
    check_int("calib_samples", calib_samples, 1)
    check_int("seqlen", seqlen, 2)
    check_int("seed", seed)
    check_device(device)


def check_eval_args(model: Any, tokenizer: Any, seqlen: Any, max_windows: Any, device: Any) -> None:
    check_model(model)
    check_tokenizer(tokenizer, "evaluation")
    check_int("seqlen", seqlen, 2)
    if max_windows is not None:
        check_int("max_windows", max_windows, 1)
    check_device(device)


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's position embeddings / rotary tables were built for."""
    config = getattr(model, "config", None)
    for attr in _POSITION_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_seqlen(model: nn.Module, seqlen: int, what: str = "--seqlen") -> None:
    """A window longer than the model's positions is an error (the model was never trained there:
    results are meaningless and calibration runs for hours)."""
    limit = max_positions(model)
    if limit is not None and seqlen > limit:
        raise LlmpruneError(f"{what} {seqlen} exceeds the model's {limit} positions: use {what} {limit} or less")


def first_nonfinite(model: nn.Module) -> str | None:
    """Name of the first parameter or buffer holding NaN/inf (``None`` if all finite)."""
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def check_finite_model(model: nn.Module, action: str) -> None:
    """Refuse to ``action`` (save, evaluate) a model with non-finite weights, naming the first."""
    bad = first_nonfinite(model)
    if bad is not None:
        raise LlmpruneError(
            f"cannot {action}: tensor {bad} holds NaN/inf values; the model is broken "
            "(re-run the pruning in float32, or check the input checkpoint)"
        )


def check_finite_logits(logits: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(logits).all()):
        raise LlmpruneError(
            f"{what}: the model produced NaN/inf logits; evaluate in float32 (--dtype float32) or check the checkpoint"
        )
