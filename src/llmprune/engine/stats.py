"""Per-linear calibration statistics gathered by forward hooks.

For a linear ``y = W x`` seeing inputs ``X`` (n × N tokens) we keep the running mean
``H = 2/N · X Xᵀ`` (SparseGPT's convention, Frantar & Alistarh 2023, §3) and the
squared input column norms ``‖X_j‖²/N`` that Wanda's metric ``|W_ij|·‖X_j‖₂`` uses
(Sun et al. 2024, Eq. 1), and the column means, which give FLAP's per-channel variance
(An et al. 2024, Eq. 3) and its bias compensation. Both use running means so the scale does not grow with N.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import LlmpruneError
from ..models.base import LinearGroup


class InputStats:
    """Running input statistics of one linear layer."""

    def __init__(
        self, in_features: int, hessian: bool, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> None:
        self.tokens = 0
        self.sq_norms = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.mean = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.hessian = torch.zeros(in_features, in_features, dtype=dtype, device=device) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of inputs (any leading shape, last dim = in_features)."""
        x = x.detach().reshape(-1, x.shape[-1])
        n = x.shape[0]
        if n == 0:
            return
        total = self.tokens + n
        xd = x.double()
        self.sq_norms.mul_(self.tokens / total).add_(xd.pow(2).sum(0) / total)
        self.mean.mul_(self.tokens / total).add_(xd.sum(0) / total)
        if self.hessian is not None:
            xs = x.to(self.hessian.dtype) * (2.0 / total) ** 0.5
            self.hessian.mul_(self.tokens / total).addmm_(xs.T, xs)
        self.tokens = total

    def column_norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input column (up to a global scale), float32."""
        return self.sq_norms.sqrt().float()

    def variance(self) -> torch.Tensor:
        """Per-column variance of the inputs over tokens (FLAP's fluctuation), float32."""
        return (self.sq_norms - self.mean.pow(2)).clamp_min(0).float()

    def check_finite(self, name: str) -> None:
        bad = not torch.isfinite(self.sq_norms).all()
        if self.hessian is not None:
            bad = bad or not torch.isfinite(self.hessian).all()
        if bad:
            raise LlmpruneError(
                f"calibration statistics of {name} contain NaN/inf: the model's activations "
                "overflow; load it in float32 (--dtype float32) or check the checkpoint"
            )


@contextmanager
def collect_inputs(
    groups: list[LinearGroup], hessian: bool, dtype: torch.dtype = torch.float32
) -> Iterator[dict[str, InputStats]]:
    """Hook one block's linears while it runs; yield ``{name: InputStats}``.

    Linears of one :class:`LinearGroup` read the same tensor (q/k/v, gate/up), so the
    group shares one accumulator, fed by a hook on its first member only: each Hessian
    is computed once per group. A group with an ``input_tap = (module, select)`` (a
    linear applied through its weight, e.g. Mamba's ``dt_proj``) is fed
    ``select(args, output)`` of ``module``'s forward instead.
    """
    stats: dict[str, InputStats] = {}
    handles = []

    def hook(acc: InputStats) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            acc.add(args[0])

        return fn

    def tapped(
        acc: InputStats, select: Callable[[tuple, torch.Tensor], torch.Tensor]
    ) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            acc.add(select(args, output))

        return fn

    for group in groups:
        first = group.linears[0]
        acc = InputStats(first.in_features, hessian, dtype=dtype, device=first.weight.device)
        stats.update({name: acc for name in group.names})
        tap = getattr(group, "input_tap", None)
        if tap is None:
            handles.append(first.register_forward_hook(hook(acc)))
        else:
            handles.append(tap[0].register_forward_hook(tapped(acc, tap[1])))
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()
