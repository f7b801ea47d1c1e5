"""Unstructured / N:M methods: each block linear's weight is pruned in place, given the
statistics of its inputs, on the layer-wise engine (:mod:`llmprune.engine.layerwise`)."""

from __future__ import annotations

import sys
import time
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..engine.stats import InputStats
from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from ..solvers.sparsity import Sparsity
from .base import Method, PruneContext, PruneResult


class LayerwiseMethod(Method):
    """Prunes one linear's weight matrix given its input statistics.

    ``needs_calibration``: whether the engine must run calibration data (magnitude
    does not). ``needs_hessian``: whether ``stats.hessian`` must be accumulated.
    """

    kind = "unstructured"
    needs_hessian: ClassVar[bool] = False

    def __init__(self, sparsity: Sparsity, /, **options: object) -> None:
        self.sparsity = sparsity
        super().__init__(sparsity, **options)

    @abstractmethod
    def prune_weight(self, weight: torch.Tensor, stats: InputStats | None) -> torch.Tensor:
        """Return the pruned (and possibly updated) weight, same shape, float32."""

    def options(self) -> dict:
        return self.config.model_dump()

    def run(self, ctx: PruneContext) -> PruneResult:
        calib = ctx.require_calib(self.name) if self.needs_calibration else None
        return prune_unstructured(ctx.model, ctx.adapter, self, calib, device=ctx.device, progress=ctx.progress)


def _set_weight(linear: nn.Linear, new: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(new.to(linear.weight.dtype))


def prune_unstructured(
    model: nn.Module,
    adapter: ModelAdapter,
    method: LayerwiseMethod,
    calib_ids: torch.Tensor | None,
    device: str = "cpu",
    progress: bool = True,
) -> PruneResult:
    """Prune every block linear of ``model`` in place; per-layer results in ``layers``.

    Calibration-free methods visit the blocks directly; the others run on the
    :class:`LayerwiseEngine`, each block calibrated on the outputs of the already
    pruned blocks before it. Under ``torchrun`` (:mod:`llmprune.engine.distributed`)
    each rank runs its share of the calibration samples, the input statistics are
    merged over the ranks, and linear ``j`` of a block is solved on rank ``j % world``
    and broadcast, so every rank ends with the same model.
    """
    from ..engine.distributed import Dist, setup

    layers: list[dict] = []
    dist = Dist()
    if method.needs_calibration:
        dist, device = setup(device)
        if calib_ids is not None and dist.world > 1:
            if calib_ids.shape[0] < dist.world:
                raise LlmpruneError(
                    f"{calib_ids.shape[0]} calibration samples for {dist.world} processes: "
                    "use at least one sample per process (--calib-samples)"
                )
            calib_ids = calib_ids[dist.rank :: dist.world]

    def on_block(i: int, block: nn.Module, runner: BlockRunner | None) -> None:
        linears = adapter.prunable_linears(block)
        stats = None
        if runner is not None:
            stats = runner.collect(adapter.linear_groups(block), hessian=method.needs_hessian)
            dist.merge_stats(stats)
        for j, (name, lin) in enumerate(linears.items()):
            owner = j % dist.world
            if owner == dist.rank:
                new = method.prune_weight(
                    lin.weight.data.to(runner.device if runner else lin.weight.device), stats[name] if stats else None
                )
                _set_weight(lin, new)
            with torch.no_grad():
                dist.broadcast_from(lin.weight.data, owner)
            zeros = int((lin.weight == 0).sum())
            layers.append(
                {"block": i, "linear": name, "shape": list(lin.weight.shape), "sparsity": zeros / lin.weight.numel()}
            )

    t0 = time.perf_counter()
    peak_device = None
    if method.needs_calibration:
        if calib_ids is None:
            raise ValueError(f"{method.name} needs calibration data")
        engine = LayerwiseEngine(model, adapter, device=device, progress=progress)
        peak_device = engine.run(calib_ids, on_block, desc=method.name).peak_device_mb
    else:
        from tqdm.auto import tqdm

        for i, block in enumerate(tqdm(adapter.blocks(), desc=method.name, disable=not progress, file=sys.stderr)):
            on_block(i, block, None)
    return PruneResult(
        seconds=time.perf_counter() - t0,
        peak_rss_mb=peak_rss_mb(),
        peak_device_mb=peak_device,
        layers=layers,
        details={"world_size": dist.world} if dist.world > 1 else None,
    )


def block_sparsity(layers: list[dict]) -> float:
    """Fraction of zero weights over all pruned linears of ``layers``."""
    pruned = sum(entry["sparsity"] * entry["shape"][0] * entry["shape"][1] for entry in layers)
    total = sum(entry["shape"][0] * entry["shape"][1] for entry in layers)
    return pruned / total if total else 0.0
