"""Data parallelism under ``torchrun``: the whole-model methods (PG, DISP) and the
layer-wise ones (magnitude, Wanda, SparseGPT, MRP: each rank calibrates on its share of
the samples, the input statistics are summed over the ranks, and each linear is solved
on one rank and broadcast).

One rule for every method: with ``WORLD_SIZE > 1`` (or a process group already
initialised with more than one rank), the process group is joined (NCCL on CUDA, gloo
on CPU) and a CUDA device becomes ``cuda:LOCAL_RANK`` (one GPU per process); a CPU
device stays ``cpu``. The group stays up after the method ran, so that only rank 0
saves (:func:`is_main_process`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch


@dataclass
class Dist:
    """This process's rank and the world size, with the few collectives the methods use
    (no-ops for a single process)."""

    rank: int = 0
    world: int = 1

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of ``t`` over the ranks (``t`` is summed in place)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``t`` on every rank (in place)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(t, src=0)
        return t

    def merge_stats(self, stats: dict[str, Any]) -> None:
        """Make every :class:`~llmprune.engine.stats.InputStats` of ``stats`` (running means
        over this rank's tokens) the running mean over all ranks' tokens, in place: each mean
        is weighted by its token count, summed over the ranks and divided by the total."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for acc in {id(a): a for a in stats.values()}.values():
            tokens = torch.tensor([float(acc.tokens)], dtype=torch.float64)
            dist.all_reduce(tokens)
            total = float(tokens)
            parts = [acc.sq_norms, acc.mean] + ([acc.hessian] if acc.hessian is not None else [])
            for t in parts:
                t.mul_(acc.tokens)
                dist.all_reduce(t)
                t.div_(total)
            acc.tokens = int(total)

    def broadcast_from(self, t: torch.Tensor, src: int) -> torch.Tensor:
        """Rank ``src``'s ``t`` on every rank (in place)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(t, src=src)
        return t

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace every ``p.grad`` by its mean over the ranks (one flat all-reduce;
        a missing gradient counts as zeros)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in params if p.grad is not None])
        dist.all_reduce(flat)
        flat.div_(self.world)
        pos = 0
        for p in params:
            assert p.grad is not None
            p.grad.copy_(flat[pos : pos + p.numel()].view_as(p))
            pos += p.numel()


def setup(device: str) -> tuple[Dist, str]:
    """Join the process group ``torchrun`` describes; return it and this rank's device."""
    import torch.distributed as dist

    if not dist.is_available():
        return Dist(), device
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Dist(), device
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    world = dist.get_world_size()
    if world <= 1:
        return Dist(), device
    if device.startswith("cuda"):  # one GPU per process
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(torch.cuda.device_count(), 1)))
        device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    return Dist(dist.get_rank(), world), device


def is_main_process() -> bool:
    """False on the non-zero ranks of an initialised process group (they skip saving)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
