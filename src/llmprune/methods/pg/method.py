"""The PG method: options, the training loop and keep-best (see the package docstring)."""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from ...engine.distributed import Dist
from ...engine.distributed import setup as dist_setup
from ...engine.layerwise import peak_rss_mb
from ...engine.offload import placed
from ...errors import LlmpruneError
from ...models.base import ModelAdapter
from ...solvers.policy_gradient import MovingBaseline, cosine_lr, policy_gradient, project_budget
from ..base import MethodConfig, PruneContext, PruneResult
from ..registry import register
from ..units import SERVABLE, StructuredMethod, Unit, apply_selection, removed_counts, split_units
from .layout import FAMILIES, Layout, UnitMasks, build_layout
from .training import BestMask, by_block, window_batches
from .selection import select_family, select_params, shift_to_budget, wanda_sp_scores, zscore


class PGConfig(MethodConfig):
    steps: int = Field(200, ge=0, description="policy-gradient steps")
    batch_size: int = Field(1, ge=1, description="calibration windows per forward")
    lr: float = Field(
        0.01, ge=0, allow_inf_nan=False, description="learning rate of the keep probabilities (cosine decay)"
    )
    samples_per_step: int = Field(2, ge=2, description="masks sampled per batch (K >= 2)")
    budget: Literal["family", "params"] = Field(
        "family", description="keep ratio per unit family (official code) or one parameter budget"
    )
    init: Literal["wanda-sp", "constant", "random"] = Field("wanda-sp", description="initial keep probabilities")
    units: tuple[str, ...] | None = Field(
        None,
        description="unit families, of groups, channels, blocks, or servable (default groups,channels; "
        "all with budget=params)",
    )
    offload: bool = Field(False, description="only the running block on the device during each forward")
    baseline_window: int = Field(5, ge=1, description="moving-average window of the loss baseline")
    eps: float = Field(1e-6, gt=0, description="variance floor of the normalised gradient")
    init_samples: int = Field(32, ge=1, description="calibration windows of the wanda-sp initialisation")
    block_init: float | None = Field(
        None, description="initial keep probability of whole blocks (default (1 + keep)/2)"
    )
    allow_empty: bool = Field(False, description="a layer may lose all its KV groups or channels")
    seed: int | None = Field(None, description="mask sampling seed (default: the run's seed)")
    keep_best: int = Field(
        10, ge=0, description="every N steps score the top-k mask and ship the best (0 = off, the paper)"
    )
    select_samples: int = Field(4, ge=1, description="calibration windows that score the top-k mask for keep_best")

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: Any) -> Any:
        value = split_units(value)
        if value is not None:
            if "servable" in value:  # the families of vLLM's per-layer format that PG searches
                value = tuple(u for u in value if u != "servable") + tuple(f for f in FAMILIES if f in SERVABLE)
            bad = [u for u in value if u not in FAMILIES]
            if bad:
                raise ValueError(
                    f"pg cannot search unit family {bad[0]!r}: use a comma list of groups, channels, blocks "
                    "(servable: channels,blocks)"
                )
        return value

    @model_validator(mode="after")
    def _families(self) -> "PGConfig":
        units = self.units
        if units is None:
            units = ("groups", "channels", "blocks") if self.budget == "params" else ("groups", "channels")
        units = tuple(f for f in FAMILIES if f in units)
        if self.budget == "family" and set(units) != {"groups", "channels"}:
            raise ValueError(
                "budget=family prunes groups and channels at the same ratio each; "
                "for other unit families (e.g. blocks) use budget=params"
            )
        object.__setattr__(self, "units", units)
        return self


@register
class PG(StructuredMethod):
    """Policy-gradient structural pruning (see the module docstring)."""

    name = "pg"
    summary = "policy gradient over Bernoulli masks, forward passes only (Gao et al. 2024)"
    whole_model = "forward passes of the whole model under sampled masks"
    Config = PGConfig
    config: PGConfig
    supported_units = FAMILIES

    def __init__(self, ratio: float, /, **options: object) -> None:
        super().__init__(ratio, **options)
        keep = 1.0 - ratio
        block_init = self.config.block_init
        if block_init is not None and not keep < block_init <= 1.0:
            raise LlmpruneError(f"pg: block_init {block_init} must lie in (keep ratio {keep:g}, 1]")
        self.block_init = block_init if block_init is not None else (1.0 + keep) / 2

    @property
    def units(self) -> tuple[str, ...]:
        assert self.config.units is not None
        return self.config.units

    def options(self) -> dict:
        return {
            "steps": self.config.steps,
            "batch_size": self.config.batch_size,
            "lr": self.config.lr,
            "lr_schedule": "cosine",
            "samples_per_step": self.config.samples_per_step,
            "budget": self.config.budget,
            "init": self.config.init,
            "units": list(self.units),
            "offload": self.config.offload,
            "baseline_window": self.config.baseline_window,
            "eps": self.config.eps,
            "init_samples": self.config.init_samples,
            "block_init": self.block_init if "blocks" in self.units else None,
            "allow_empty": self.allow_empty,
            "seed": self.config.seed,
            "keep_best": self.config.keep_best,
            "select_samples": self.config.select_samples if self.config.keep_best else None,
        }

    # -- pieces -------------------------------------------------------------------
    def initial_probabilities(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        layout: Layout,
        calib: torch.Tensor,
        device: str,
        progress: bool,
        seed: int = 0,
    ) -> torch.Tensor:
        z = torch.zeros(layout.n, dtype=torch.float64)
        if self.config.init == "wanda-sp":
            scores = wanda_sp_scores(model, adapter, calib[: self.config.init_samples], device, progress)
            for b, (gs, cs) in enumerate(scores):
                if "groups" in self.units:
                    z[layout.groups[b]] = zscore(gs)
                if "channels" in self.units:
                    z[layout.channels[b]] = zscore(cs)
        elif self.config.init == "random":
            u = torch.rand(layout.n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            z = torch.logit(u.clamp(1e-6, 1 - 1e-6))
        fixed = None
        if layout.blocks:
            fixed = torch.full((layout.n,), float("nan"), dtype=torch.float64)
            fixed[layout.family_slice["blocks"]] = self.block_init
        return shift_to_budget(z, layout, self.config.budget, 1.0 - self.ratio, fixed)

    def project(self, s: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Onto ``{0 ≤ s ≤ 1}`` and the budget (per family, or one parameter budget)."""
        keep = 1.0 - self.ratio
        if self.config.budget == "family":
            out = s.clone()
            for sl in layout.family_slice.values():
                part = s[sl]
                out[sl] = project_budget(part, torch.ones_like(part), keep * part.numel())
            return out
        return project_budget(s, layout.cost, keep * layout.total - layout.fixed, layout.owner)

    def select(self, layout: Layout, s: torch.Tensor) -> list[Unit]:
        fn = select_family if self.config.budget == "family" else select_params
        return fn(layout, s, self.ratio, self.allow_empty)

    # -- the whole pipeline ------------------------------------------------------------
    def run(self, ctx: PruneContext) -> PruneResult:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        dist, device = dist_setup(ctx.device)  # the group stays up: the CLI saves on rank 0 only
        return self._run(
            ctx.model,
            ctx.adapter,
            ctx.require_calib(self.name),
            device,
            ctx.progress and dist.rank == 0,
            dist,
            t0,
            tqdm,
        )

    def _run(
        self,
        model: nn.Module,
        adapter: ModelAdapter,
        calib: torch.Tensor,
        device: str,
        progress: bool,
        dist: Dist,
        t0: float,
        tqdm: Any,
    ) -> PruneResult:
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        model.eval()
        seed = self.config.seed if self.config.seed is not None else torch.initial_seed() % 2**62
        layout = build_layout(adapter, self.units)
        if self.config.budget == "params" and not layout.blocks:
            floors = (
                0
                if self.allow_empty
                else sum(
                    (bi.group_cost if "groups" in self.units else 0)
                    + (bi.channel_cost if "channels" in self.units else 0)
                    for bi in layout.info
                )
            )
            removable = float(layout.cost.sum()) - floors
            if self.ratio * layout.total > removable:
                raise LlmpruneError(
                    f"pg: units {','.join(self.units)} hold only {removable / layout.total:.1%} of the "
                    "block weights: use a smaller --ratio or add unit families (--pg-units)"
                )
        s = self.initial_probabilities(model, adapter, layout, calib, device, progress, seed)
        s = dist.broadcast(s)
        s_init = s.clone()
        t_init = time.perf_counter()
        dtype = next(model.parameters()).dtype
        hooks = UnitMasks(adapter, layout, dev, dtype)
        baseline = MovingBaseline(self.config.baseline_window)
        gen = torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (dist.rank + 1)) % 2**63)
        batches = window_batches(calib.shape[0], self.config.batch_size, dist.world, dist.rank, seed)
        history: list[dict] = []
        log_every = max(1, self.config.steps // 200)
        K = self.config.samples_per_step
        tracker = BestMask(self, layout, hooks, calib, dev, dist) if self.config.keep_best else None
        try:
            with placed(model, adapter.blocks(), dev, self.config.offload), torch.inference_mode():
                bar = tqdm(range(self.config.steps), desc="pg: policy gradient", disable=not progress, file=sys.stderr)
                for step in bar:
                    if tracker is not None and step % self.config.keep_best == 0:
                        tracker.check(model, s, step)
                    ids = calib[next(batches)].to(dev)
                    masks = torch.bernoulli(s.expand(K, -1), generator=gen)
                    losses = torch.empty(K, dtype=torch.float64)
                    for k in range(K):
                        hooks.set(masks[k])
                        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                        losses[k] = float(loss)
                    if not torch.isfinite(losses).all():
                        raise LlmpruneError(
                            "pg: the loss of a masked model is NaN/inf: load the model in float32 (--dtype float32)"
                        )
                    b, alpha = baseline.update(float(losses.mean()))
                    g = policy_gradient(losses, masks, s, b, alpha, self.config.eps)
                    g = dist.all_mean(g)
                    lr = cosine_lr(self.config.lr, step, self.config.steps)
                    s = self.project(s - lr * g, layout)
                    if step % log_every == 0 or step == self.config.steps - 1:
                        keep = layout.kept_fraction(s)
                        history.append(
                            {
                                "step": step,
                                "loss": round(float(losses.mean()), 5),
                                "baseline": round(b, 5),
                                "expected_keep": round(keep, 5),
                                "lr": lr,
                            }
                        )
                        bar.set_postfix(loss=f"{float(losses.mean()):.3f}", baseline=f"{b:.3f}", keep=f"{keep:.3f}")
                if tracker is not None:
                    tracker.check(model, s, self.config.steps)
        finally:
            hooks.remove()
        train_seconds = time.perf_counter() - t_init
        peak_device = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        ref = dist.broadcast(s.clone())
        spread = dist.max(float((s - ref).abs().max()) if s.numel() else 0.0)
        s = ref  # every rank selects from rank 0's probabilities
        s_last = s
        if tracker is not None:
            assert tracker.best_s is not None  # step 0 is always scored
            s = tracker.best_s  # identical on every rank: the losses are all-reduced
            if tracker.best_step == 0 and self.config.steps > 0 and dist.rank == 0:
                print(
                    f"pg: no trained mask scored better than the initial ({self.config.init}) one on the "
                    f"{tracker.n} selection windows, so the initial mask is kept (report: pg.keep_best); "
                    "try a lower --lr or more --steps",
                    file=sys.stderr,
                )
        chosen = self.select(layout, s)
        apply_selection(adapter, chosen, layout.info, compensate=False)
        return PruneResult(
            seconds=time.perf_counter() - t0,
            peak_rss_mb=peak_rss_mb(),
            peak_device_mb=peak_device,
            removed=removed_counts(chosen),
            stages={"train_seconds": train_seconds},
            details={
                "init_seconds": t_init - t0,
                "train_seconds": train_seconds,
                "world_size": dist.world,
                "seed": seed,
                "ranks_identical": spread == 0.0,
                "rank_max_abs_diff": spread,
                "expected_keep_init": layout.kept_fraction(s_init),
                "expected_keep_final": layout.kept_fraction(s),
                "history": history,
                "keep_best": None if tracker is None else tracker.summary(),
                "probabilities": by_block(layout, s),
                "last_probabilities": None if tracker is None else by_block(layout, s_last),
                "initial_probabilities": by_block(layout, s_init),
            },
        )
