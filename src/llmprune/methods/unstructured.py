"""Run an unstructured / N:M method over a whole model on the layer-wise engine."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..models.base import ModelAdapter
from .base import UnstructuredMethod


def _set_weight(linear: nn.Linear, new: torch.Tensor) -> None:
    with torch.no_grad():
        linear.weight.copy_(new.to(linear.weight.dtype))


def prune_unstructured(model: nn.Module, adapter: ModelAdapter, method: UnstructuredMethod,
                       calib_ids: torch.Tensor | None, device: str = "cpu",
                       progress: bool = True) -> dict:
    """Prune every block linear of ``model`` in place; return per-layer results.

    Calibration-free methods visit the blocks directly; the others run on the
    :class:`LayerwiseEngine`, each block calibrated on the outputs of the already
    pruned blocks before it.
    """
    layers: list[dict] = []

    def on_block(i: int, block: nn.Module, runner: BlockRunner | None) -> None:
        linears = adapter.prunable_linears(block)
        stats = None
        if runner is not None:
            stats = runner.collect(adapter.linear_groups(block), hessian=method.needs_hessian)
        for name, lin in linears.items():
            new = method.prune_weight(lin.weight.data.to(runner.device if runner else lin.weight.device),
                                      stats[name] if stats else None)
            _set_weight(lin, new)
            zeros = int((lin.weight == 0).sum())
            layers.append({"block": i, "linear": name, "shape": list(lin.weight.shape),
                           "sparsity": zeros / lin.weight.numel()})

    t0 = time.perf_counter()
    result: dict = {}
    if method.needs_calibration:
        if calib_ids is None:
            raise ValueError(f"{method.name} needs calibration data")
        engine = LayerwiseEngine(model, adapter, device=device, progress=progress)
        stats = engine.run(calib_ids, on_block, desc=method.name)
        result["peak_device_mb"] = stats.peak_device_mb
    else:
        from tqdm.auto import tqdm
        import sys

        for i, block in enumerate(tqdm(adapter.blocks(), desc=method.name, disable=not progress, file=sys.stderr)):
            on_block(i, block, None)
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss_mb"] = peak_rss_mb()
    result["layers"] = layers
    pruned = sum(l["sparsity"] * l["shape"][0] * l["shape"][1] for l in layers)
    total = sum(l["shape"][0] * l["shape"][1] for l in layers)
    result["block_sparsity"] = pruned / total if total else 0.0
    return result
