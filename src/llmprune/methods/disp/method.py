"""The DISP method: options, hypernetwork training and export (see the package docstring)."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from typing import Iterator, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ...engine.distributed import setup as dist_setup
from ...engine.layerwise import peak_rss_mb
from ...engine.offload import checkpointed_blocks, move_except_blocks
from ...errors import LlmpruneError
from ...models.base import ModelAdapter
from ..base import MethodConfig, PruneContext, PruneResult
from ..registry import register
from ..units import StructuredMethod
from .hypernet import DispHypernet, deterministic_keep, gumbel_noise, hard_mask, logistic_noise, soft_mask
from .selection import ParamCount, SelectionMasks, apply_disp_masks, match_budget


class DISPConfig(MethodConfig):
    steps: int = Field(200, ge=1, description="hypernetwork training steps")
    lr: float = Field(1e-2, gt=0, description="AdamW learning rate of the hypernetwork")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    lam: float = Field(16.0, gt=0, description="weight lambda of the parameter loss")
    target: Literal["total", "block"] = Field(
        "total", description="ratio is a fraction of all parameters (total, the paper's) or of block linear weights"
    )
    estimator: Literal["st", "reinmax"] = Field("st", description="hard-mask gradient: straight-through or ReinMax")
    ce_masks: Literal["soft", "hard"] = Field("soft", description="masks fed to the cross-entropy")
    temperature: float = Field(0.4, gt=0, description="Gumbel-sigmoid temperature")
    offset: float = Field(3.0, description="logit offset b (every dimension starts kept)")
    batch_size: int = Field(1, ge=1, description="calibration windows per step")
    checkpointing: bool = Field(True, description="per-block gradient checkpointing")
    autocast: bool | None = Field(
        None, description="bf16 autocast of the frozen model (default: on for CUDA with bf16)"
    )
    match_target: bool = Field(True, description="shift the final logits so the kept parameters meet the target")
    input_dim: int = Field(32, ge=1, description="hypernetwork input size")
    hidden: int = Field(64, ge=1, description="hypernetwork GRU units per direction")
    log_every: int = Field(10, ge=1, description="history entry every N steps")
    seed: int = Field(0, description="hypernetwork and noise seed")
    offload: bool = Field(False, description="only the running block on the device (needs checkpointing)")
    allow_empty: bool = Field(False, description="not supported: DISP keeps one dimension per selection vector")

    @model_validator(mode="after")
    def _check(self) -> "DISPConfig":
        if self.allow_empty:
            raise ValueError("disp keeps at least one dimension per selection vector: drop allow_empty")
        if self.offload and not self.checkpointing:
            raise ValueError("offload streams blocks inside the checkpointed forward: drop checkpointing=false")
        return self


@register
class DISP(StructuredMethod):
    """``--method disp``: see the module docstring. ``ratio`` is the fraction of the
    parameters removed under ``target`` accounting (``"total"`` or ``"block"``)."""

    name = "disp"
    whole_model = "a hypernetwork trained by forward and backward passes through the whole model"
    summary = "dimension-independent residual selection by a trained hypernetwork (Gao et al. 2024)"
    Config = DISPConfig
    config: DISPConfig

    def __init__(self, ratio: float, /, **options: object) -> None:
        super().__init__(ratio, **options)
        if not 0.0 < ratio < 1.0:
            raise LlmpruneError(f"disp ratio {ratio} must be in (0, 1): pass e.g. --ratio 0.3")
        self.hypernet: DispHypernet | None = None  # kept after run() (tests, inspection)

    def options(self) -> dict:
        return {
            "steps": self.config.steps,
            "lr": self.config.lr,
            "weight_decay": self.config.weight_decay,
            "lambda": self.config.lam,
            "target": self.config.target,
            "estimator": self.config.estimator,
            "ce_masks": self.config.ce_masks,
            "temperature": self.config.temperature,
            "offset": self.config.offset,
            "batch_size": self.config.batch_size,
            "checkpointing": self.config.checkpointing,
            "offload": self.config.offload,
            "autocast": self.config.autocast,
            "match_target": self.config.match_target,
            "hypernet": {"input_dim": self.config.input_dim, "hidden": self.config.hidden},
            "seed": self.config.seed,
        }

    # -- training -------------------------------------------------------------------
    def _batches(self, n: int, rank: int, world: int) -> Iterator[list[int]]:
        """Window indices of each step for this rank (all ranks share the permutation)."""
        gen = torch.Generator().manual_seed(self.config.seed)
        order: list[int] = []
        per_step = self.config.batch_size * world
        while True:
            while len(order) < per_step:
                order += torch.randperm(n, generator=gen).tolist()
            step, order = order[:per_step], order[per_step:]
            yield step[rank * self.config.batch_size : (rank + 1) * self.config.batch_size]

    def train_hypernet(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        count: ParamCount,
        device: str = "cpu",
        progress: bool = True,
    ) -> tuple[DispHypernet, dict]:
        """Train the hypernetwork (LLM frozen); returns it and a summary dict."""
        from tqdm.auto import tqdm

        dist, device = dist_setup(device)
        rank, world = dist.rank, dist.world
        dev = torch.device(device)
        sizes = [s.size for s in count.specs]
        hn = DispHypernet(sizes, self.config.input_dim, self.config.hidden, seed=self.config.seed).to(dev)
        for p in list(hn.parameters()) + list(hn.buffers()):
            dist.broadcast(p.data)
        full = count.full(self.config.target)
        target_kept = (1.0 - self.ratio) * full
        use_amp = self.config.autocast
        if use_amp is None:
            use_amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if use_amp else nullcontext()
        noise_gen = torch.Generator().manual_seed(1_000_003 * (self.config.seed + 1) + rank)
        opt = torch.optim.AdamW(hn.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        was_training = model.training
        model.eval()  # no dropout: the frozen model is only differentiated through
        blocks = list(adapter.blocks())
        if self.config.offload:
            move_except_blocks(model, blocks, dev)  # the blocks are streamed by checkpointed_blocks
        else:
            model.to(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        history: list[dict] = []
        batches = self._batches(calib.shape[0], rank, world)
        t0 = time.perf_counter()
        try:
            with (
                SelectionMasks(adapter, count.specs) as hooks,
                (
                    checkpointed_blocks(blocks, dev if self.config.offload else None)
                    if self.config.checkpointing
                    else nullcontext()
                ),
                torch.enable_grad(),
            ):
                bar = tqdm(
                    range(self.config.steps),
                    desc="disp: hypernetwork",
                    disable=not progress or rank != 0,
                    file=sys.stderr,
                )
                for step in bar:
                    hn.train()
                    logits = hn()
                    hard_noise = logistic_noise if self.config.estimator == "reinmax" else gumbel_noise
                    hard = [
                        hard_mask(
                            a,
                            hard_noise(a, noise_gen),
                            self.config.temperature,
                            self.config.offset,
                            self.config.estimator,
                        )
                        for a in logits
                    ]
                    if self.config.ce_masks == "soft":
                        masks = [
                            soft_mask(a, gumbel_noise(a, noise_gen), self.config.temperature, self.config.offset)
                            for a in logits
                        ]
                    else:
                        masks = hard
                    hooks.masks[:] = masks
                    ids = calib[next(batches)].to(dev)
                    with amp:
                        ce = model(input_ids=ids, labels=ids, use_cache=False).loss.float()
                    if not torch.isfinite(ce):
                        raise LlmpruneError("the DISP loss is NaN/inf: load the model in float32 (--dtype float32)")
                    kept = count.kept([m.sum() for m in hard], self.config.target)
                    assert isinstance(kept, torch.Tensor)  # sizes are tensors: differentiable
                    reg = self.config.lam * torch.log(torch.clamp(kept, min=1.0) / target_kept).abs()
                    loss = ce + reg
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    hooks.masks[:] = [None] * len(masks)
                    dist.average_gradients(hn.parameters())  # data parallel: mean of the ranks' gradients
                    opt.step()
                    if step % self.config.log_every == 0 or step == self.config.steps - 1:
                        frac = float(kept.detach()) / full
                        history.append(
                            {
                                "step": step,
                                "ce": round(float(ce.detach()), 4),
                                "reg": round(float(reg.detach()), 4),
                                "kept_fraction": round(frac, 4),
                            }
                        )
                        bar.set_postfix(ce=f"{float(ce.detach()):.3f}", kept=f"{frac:.3f}")
        finally:
            model.train(was_training)
            for p, flag in flags:
                p.requires_grad_(flag)
        seconds = time.perf_counter() - t0
        summary = {
            "train_seconds": seconds,
            "world_size": world,
            "rank": rank,
            "device": str(dev),
            "autocast_bf16": bool(use_amp),
            "history": history,
            "peak_device_mb": (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None,
        }
        return hn, summary

    # -- the whole method --------------------------------------------------------------
    def run(self, ctx: PruneContext) -> PruneResult:
        model, adapter, device, progress = ctx.model, ctx.adapter, ctx.device, ctx.progress
        calib = ctx.require_calib(self.name)
        t0 = time.perf_counter()
        count = ParamCount(model, adapter)
        full = count.full(self.config.target)
        minimum = int(count.kept([1] * len(count.specs), self.config.target))
        if (1.0 - self.ratio) * full < minimum:
            raise LlmpruneError(
                f"--ratio {self.ratio} removes more than DISP can ({1 - minimum / full:.4f} of the "
                f"{self.config.target} parameters with one dimension per vector): use a smaller --ratio"
            )
        hn, summary = self.train_hypernet(model, adapter, calib, count, device=device, progress=progress)
        self.hypernet = hn
        hn.eval()
        with torch.no_grad():
            logits = [a.float().cpu() for a in hn()]
        raw = [deterministic_keep(a, self.config.offset) for a in logits]
        raw_kept = int(count.kept([int(k.sum()) for k in raw], self.config.target))
        keeps, shift = match_budget(
            logits, count, self.config.target, (1.0 - self.ratio) * full, self.config.offset, self.config.match_target
        )
        sizes = [int(k.sum()) for k in keeps]
        if device != "cpu":
            model.to("cpu")
        apply_disp_masks(adapter, count.specs, keeps)
        per_block: dict[int, dict[str, int]] = {}
        for s, n in zip(count.specs, sizes):
            per_block.setdefault(s.block, {})[s.kind] = n
        total_after, block_after = int(count.total(sizes)), int(count.block(sizes))
        details = {
            "target_accounting": self.config.target,
            "target_ratio": self.ratio,
            "achieved_total_fraction_removed": 1.0 - total_after / count.full_total,
            "achieved_block_fraction_removed": 1.0 - block_after / count.full_block,
            "hypernet_masks_fraction_removed": 1.0 - raw_kept / full,
            "logit_shift": shift,
            "params_total_before": count.full_total,
            "params_total_after": total_after,
            "block_linear_params_after": block_after,
            "selection": [per_block[b] for b in sorted(per_block)],
            **{k: v for k, v in summary.items() if k != "peak_device_mb"},
        }
        removed = {
            "groups": 0,
            "channels": sum(s.size - n for s, n in zip(count.specs, sizes) if s.kind == "mlp_int"),
            "residual_dims": sum(s.size - n for s, n in zip(count.specs, sizes) if s.kind != "mlp_int"),
            "blocks": [],
        }
        return PruneResult(
            seconds=time.perf_counter() - t0,
            peak_rss_mb=peak_rss_mb(),
            peak_device_mb=summary["peak_device_mb"],
            removed=removed,
            stages={"train_seconds": summary["train_seconds"]},
            details=details,
        )
