"""PG's training helpers: the keep-best tracker of the top-k mask, the per-rank window
batches of each policy-gradient step, and the per-block view of the probabilities."""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import nn

from ...engine.distributed import Dist
from ...errors import LlmpruneError
from .layout import Layout, UnitMasks


class BestMask:
    """``keep_best=N`` (our option, not in the paper or its code): every ``N`` steps, at
    step 0 (the initialisation) and after the last step, the *deterministic* final mask
    of the current probabilities (:meth:`PG.select`) is scored by its mean loss on the
    first ``select_samples`` calibration windows (split over ranks, losses all-reduced),
    and the probabilities whose mask scored lowest are the ones selected at the end.

    Why: the estimator optimises the *expected* loss of sampled masks, but what is kept is
    the top-k mask; scoring it along the way makes the final choice on the quantity that
    is shipped. It costs ``select_samples / world`` forwards per check per rank."""

    def __init__(
        self, method: Any, layout: Layout, hooks: UnitMasks, calib: torch.Tensor, dev: torch.device, dist: Dist
    ) -> None:
        self.method, self.layout, self.hooks, self.dev, self.dist = method, layout, hooks, dev, dist
        n = min(method.config.select_samples, calib.shape[0])
        self.windows = calib[:n][dist.rank :: dist.world]
        self.n = n
        self.best_s: torch.Tensor | None = None
        self.best_loss = math.inf
        self.best_step = -1
        self.trace: list[dict] = []

    def check(self, model: nn.Module, s: torch.Tensor, step: int) -> float:
        self.hooks.set(self.layout.hard_mask(self.method.select(self.layout, s)))
        total = torch.zeros(1, dtype=torch.float64)
        for i in range(self.windows.shape[0]):
            ids = self.windows[i : i + 1].to(self.dev)
            total += float(model(input_ids=ids, labels=ids, use_cache=False).loss)
        loss = float(self.dist.all_mean(total * self.dist.world)) / self.n
        if not math.isfinite(loss):
            raise LlmpruneError(
                "pg: the loss of the top-k mask is NaN/inf: load the model in float32 (--dtype float32)"
            )
        self.trace.append({"step": step, "topk_loss": round(loss, 5)})
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.best_s = loss, step, s.clone()
        return loss

    def summary(self) -> dict:
        return {
            "every": self.method.config.keep_best,
            "select_samples": self.n,
            "best_step": self.best_step,
            "best_topk_loss": round(self.best_loss, 5),
            "trace": self.trace,
        }


def window_batches(n: int, batch: int, world: int, rank: int, seed: int) -> Iterator[list[int]]:
    """This rank's window indices per step: one shared shuffle per epoch (same seed on
    every rank), each step's ``batch·world`` windows split by rank."""
    gen = torch.Generator().manual_seed(seed)
    buf: list[int] = []
    while True:
        while len(buf) < batch * world:
            buf += torch.randperm(n, generator=gen).tolist()
        take, buf = buf[: batch * world], buf[batch * world :]
        yield take[rank * batch : (rank + 1) * batch]


def by_block(layout: Layout, s: torch.Tensor) -> dict[str, Any]:
    vals = [round(v, 5) for v in s.tolist()]
    out: dict[str, Any] = {}
    if "groups" in layout.families:
        out["groups"] = [vals[sl] for sl in layout.groups]
    if "channels" in layout.families:
        out["channels"] = [vals[sl] for sl in layout.channels]
    if "blocks" in layout.families:
        out["blocks"] = [vals[p] for p in layout.blocks]
    return out
