"""PG: structural pruning by policy gradient over Bernoulli masks, forward passes only.

Gao et al., 2024, "Bypass Back-propagation: Optimization-based Structural Pruning for
LLMs via Policy Gradient" (arXiv 2406.10576); the official code is
ethanygao/backprop-free_LLM_pruning. Every prunable unit ``u`` gets a keep probability
``s_u``; masks ``m ~ Bern(s)`` are sampled afresh for every forward and applied by hooks on
the *unmodified* transformers model:

- **KV groups** (a KV head with its query heads): the group's head outputs are
  multiplied by ``m`` before ``o_proj`` (pre-hook on ``o_proj``'s input);
- **MLP channels**: ``act(gate)·up`` is multiplied by ``m`` before ``down_proj``;
- **whole blocks** (our addition; the paper mentions layers, the code has none): a
  block whose mask is 0 returns its input (forward hook on the decoder layer).

The problem (paper Eq. 3) ``min_s E_m[L(x; m)]  s.t.  budget, 0 ≤ s ≤ 1`` is solved with
forward passes only (``torch.inference_mode``, no autograd graph):

1. ``K`` (``samples_per_step``, default 2) masks per batch, one forward each, loss ``L_k``;
2. baseline ``b`` = moving average of the step losses (window 5, updated before use);
3. ``g = 1/(K − α) Σ_k (L_k − b)(m_k − s) / sqrt(s(1 − s) + ε)`` (paper Eq. 8 with the
   official code's variance normalisation; ``α`` is the current batch's weight in ``b``,
   which makes the estimate exactly unbiased; the official code uses ``K − 1``), see
   :func:`llmprune.solvers.policy_gradient.policy_gradient`;
4. plain SGD step ``s ← s − η_t g`` with a cosine schedule ``η_t``;
5. projection onto the budget by bisection on a common shift ``v``:
   ``s ← clamp(s − v, 0, 1)`` with the expected kept size exactly on the budget.

**Budget** (``budget``): ``"family"`` (the official code's behaviour) keeps the expected
number of KV groups and of channels each at ``(1 − ratio)`` of their count (whole blocks
are not allowed here); ``"params"`` keeps one global expected parameter count,
``E[P(m)] = Σ_u c_u s_u s_block(u) = (1 − ratio)·P``, so the method decides how much of
each family to cut (whole blocks included by default). ``ratio`` is the fraction of
decoder-block linear weights removed, as for every structured method.

**Initialisation** (``init``): ``"wanda-sp"`` (official): the Wanda-sp metric
``Σ_i |W_ij|·‖X_j‖`` of each unit's ``o_proj``/``down_proj`` columns on the calibration
data, turned into ``s = sigmoid(z + t)`` with ``z`` its within-layer z-score and ``t`` the
shift that puts the expected kept size on the budget; ``"constant"`` (``z = 0``);
``"random"`` (``z`` = logit of a uniform draw). Blocks start at ``block_init``
(default ``(1 + keep)/2``).

**Final masks**: deterministic, top-k by probability under the budget. ``"family"``: the
``round(ratio·G)`` least probable KV groups, then the least probable channels until
``ratio`` of the block weights is removed (the official code keeps the global top-ρ per
family; filling with channels makes the achieved ratio exact to one channel).
``"params"``: units are removed least probable first (a block costs what is left of
it), skipping any that would overshoot, until the removal is within half an MLP channel
of the parameter target. Every block keeps one KV group and one channel unless
``allow_empty``. The selection is removed physically (:mod:`llmprune.surgery`); the
masked model and the pruned one compute the same function (tested).

**Keeping the best mask** (``keep_best=N``, our option, default ``N = 10``; ``0`` turns it
off, as in the paper): every ``N``
steps, at step 0 and after the last step, the top-k mask of the current probabilities is
scored on the first ``select_samples`` calibration windows, and the best-scored
probabilities are the ones selected (see :class:`_BestMask`). Training is unchanged.

**Execution**: the model runs whole (no layer-wise calibration) on ``device``; with
``offload=True`` only the current block is on the device during each forward (pre/post
forward hooks move it), so models larger than device memory still train. Under
``torchrun`` (``WORLD_SIZE > 1``; gloo on CPU, NCCL on CUDA, ``--device cuda`` maps to
``cuda:LOCAL_RANK``) every rank samples its own masks on its own batch; the gradients of
``s`` are averaged with ``all_reduce`` so every rank keeps identical probabilities
(checked at the end and recorded as ``ranks_identical``).

**Defaults** (scaled down from the paper's 15,000 steps of batch 8 x 128 tokens with
η = 2e-3 for LLaMA-2-7B; chosen for SmolLM2-135M on calibration windows of a few hundred
to 2048 tokens): ``steps=200``, ``batch_size=1`` (windows per forward), ``lr=0.01``,
``samples_per_step=2``, ``init="wanda-sp"`` on ``init_samples=32`` windows,
``budget="family"``, ``keep_best=10`` on ``select_samples=4`` windows. A run is
``steps·K`` forwards of ``batch_size`` windows, plus ``select_samples`` forwards every
``keep_best`` steps. On SmolLM2-135M (100 steps of 512-token windows, 32 calibration
windows) η = 0.05 moved the top-k mask away from a good initialisation at 20 % and never
back (its loss on the selection windows rose from 4.62 to 4.9), while η = 0.01 lowered it
to 4.36 and gave lower perplexity than η = 0.05 at 20, 30 and 40 %
(``benchmarks/results/pg_seqlen512*.json``). With many more steps, lower ``lr`` further
(the per-unit random walk grows like ``η·sqrt(steps)``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..engine.offload import placed
from ..errors import LlmpruneError
from ..models.base import ModelAdapter
from ..solvers.policy_gradient import (MovingBaseline, bisect_decreasing, cosine_lr, expected_kept,
                                       policy_gradient, project_budget)
from .structured import BlockInfo, StructuredMethod, Unit, WandaSP, _costs, _group_columns, apply_selection

FAMILIES = ("groups", "channels", "blocks")
BUDGETS = ("family", "params")
INITS = ("wanda-sp", "constant", "random")


# -- the flat layout of all units --------------------------------------------------
@dataclass
class Layout:
    """Flat indexing of every unit: groups (block-major), then channels, then blocks.

    ``cost`` is each entry's parameters (a block entry: its weights that belong to no
    masked unit); ``owner`` the index of each unit's block entry (``-1`` for block
    entries; ``None`` without the blocks family); ``fixed`` the weights that are always
    kept (families not masked, blocks not masked)."""

    families: tuple[str, ...]
    groups: list[slice]
    channels: list[slice]
    blocks: list[int]
    widths: list[int]  # o_proj input columns per KV group, per block
    info: list[BlockInfo]
    cost: torch.Tensor
    owner: torch.Tensor | None
    fixed: float
    family_slice: dict[str, slice] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.cost.numel()

    @property
    def block_costs(self) -> list[int]:
        return [bi.groups * bi.group_cost + bi.channels * bi.channel_cost for bi in self.info]

    @property
    def total(self) -> int:
        return sum(self.block_costs)

    def kept_fraction(self, s: torch.Tensor) -> float:
        """Expected fraction of block linear weights kept."""
        return (float(expected_kept(s.double(), self.cost, self.owner)) + self.fixed) / self.total

    def units(self, s: torch.Tensor) -> list[Unit]:
        out: list[Unit] = []
        vals = s.tolist()
        for b, bi in enumerate(self.info):
            out += [Unit(b, "group", g, bi.group_cost, vals[self.groups[b].start + g])
                    for g in range(self.groups[b].stop - self.groups[b].start)]
            out += [Unit(b, "channel", c, bi.channel_cost, vals[self.channels[b].start + c])
                    for c in range(self.channels[b].stop - self.channels[b].start)]
        costs = self.block_costs
        out += [Unit(b, "block", b, costs[b], vals[p]) for b, p in enumerate(self.blocks)]
        return out

    def hard_mask(self, chosen: list[Unit]) -> torch.Tensor:
        """The 0/1 keep vector of a removal selection."""
        m = torch.ones(self.n, dtype=torch.float64)
        for u in chosen:
            if u.kind == "group":
                m[self.groups[u.block].start + u.index] = 0
            elif u.kind == "channel":
                m[self.channels[u.block].start + u.index] = 0
            else:
                m[self.blocks[u.block]] = 0
        return m


def build_layout(adapter: ModelAdapter, families: tuple[str, ...]) -> Layout:
    info, widths = [], []
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        info.append(BlockInfo(*_costs(att, mlp)))
        widths.append(att.group_size * att.head_dim if att is not None else 0)
    nb = len(info)
    n_groups = sum(bi.groups for bi in info) if "groups" in families else 0
    n_chans = sum(bi.channels for bi in info) if "channels" in families else 0
    block_start = n_groups + n_chans
    costs: list[float] = []
    owners: list[int] = []
    groups: list[slice] = []
    channels: list[slice] = []
    fam: dict[str, slice] = {}
    pos = 0
    for kind, slices in (("groups", groups), ("channels", channels)):
        start = pos
        for b, bi in enumerate(info):
            count = (bi.groups if kind == "groups" else bi.channels) if kind in families else 0
            slices.append(slice(pos, pos + count))
            costs += [float(bi.group_cost if kind == "groups" else bi.channel_cost)] * count
            owners += [block_start + b] * count
            pos += count
        if kind in families:
            fam[kind] = slice(start, pos)
    unmasked = [(bi.groups * bi.group_cost if "groups" not in families else 0)
                + (bi.channels * bi.channel_cost if "channels" not in families else 0) for bi in info]
    blocks: list[int] = []
    fixed = float(sum(unmasked))
    if "blocks" in families:
        blocks = list(range(block_start, block_start + nb))
        costs += [float(u) for u in unmasked]
        owners += [-1] * nb
        fam["blocks"] = slice(block_start, block_start + nb)
        fixed = 0.0
    owner = torch.tensor(owners, dtype=torch.long) if "blocks" in families else None
    return Layout(families, groups, channels, blocks, widths, info, torch.tensor(costs, dtype=torch.float64),
                  owner, fixed, fam)


# -- masks and offloading through hooks --------------------------------------------
class MaskHooks:
    """Forward hooks that multiply KV-group outputs (``o_proj`` input) and MLP channels
    (``down_proj`` input) by the current mask and skip blocks whose mask is 0. The model
    itself is never modified; ``set(None)`` turns masking off."""

    def __init__(self, adapter: ModelAdapter, layout: Layout, device: torch.device | str,
                 dtype: torch.dtype) -> None:
        self.layout = layout
        self.device = torch.device(device)
        self.dtype = dtype
        self.current: torch.Tensor | None = None
        self.block_keep: list[bool] = [True] * len(layout.info)
        self.handles = []
        for b, block in enumerate(adapter.blocks()):
            att, mlp = adapter.attention(block), adapter.mlp(block)
            if att is not None and layout.groups[b].stop > layout.groups[b].start:
                self.handles.append(att.o.register_forward_pre_hook(self._pre(layout.groups[b], layout.widths[b])))
            if layout.channels[b].stop > layout.channels[b].start:
                self.handles.append(mlp.down.register_forward_pre_hook(self._pre(layout.channels[b], 1)))
            if layout.blocks:
                self.handles.append(block.register_forward_hook(self._block(b), with_kwargs=True))

    def _pre(self, sl: slice, width: int):
        def hook(module, args):
            if self.current is None:
                return None
            m = self.current[sl]
            if width > 1:
                m = m.repeat_interleave(width)
            return (args[0] * m,) + tuple(args[1:])

        return hook

    def _block(self, b: int):
        def hook(module, args, kwargs, output):
            if self.current is None or self.block_keep[b]:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def set(self, mask: torch.Tensor | None) -> None:
        if mask is None:
            self.current = None
            return
        self.current = mask.to(device=self.device, dtype=self.dtype)
        if self.layout.blocks:
            vals = mask.tolist()
            self.block_keep = [vals[p] > 0.5 for p in self.layout.blocks]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# -- distributed --------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast(t, src=0)
        return t

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)


def _dist_setup(device: str) -> tuple[_Dist, str]:
    """Join the process group torchrun describes (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    import torch.distributed as dist

    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size()), device


# -- initialisation ------------------------------------------------------------------
def wanda_sp_scores(model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, device: str,
                    progress: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Wanda-sp scores of every KV group and channel (one layer-wise pass, dense model)."""
    metric = WandaSP(0.0)
    out: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_block(i: int, block: nn.Module, runner: BlockRunner) -> None:
        att, mlp = adapter.attention(block), adapter.mlp(block)
        wanted = [g for g in adapter.linear_groups(block)
                  if any(l is mlp.down or (att is not None and l is att.o) for l in g.linears)]
        named = runner.collect(wanted, hessian=False)
        by_id = {id(lin): named[name] for g in wanted for name, lin in zip(g.names, g.linears)}
        gs = torch.zeros(0)
        if att is not None:
            gs = _group_columns(att, metric.column_scores(att.o, by_id[id(att.o)]), "sum").double().cpu()
        out.append((gs, metric.column_scores(mlp.down, by_id[id(mlp.down)]).double().cpu()))

    LayerwiseEngine(model, adapter, device=device, progress=progress).run(calib, on_block, desc="pg: wanda-sp init")
    if device != "cpu":
        model.to("cpu")
    return out


def _zscore(x: torch.Tensor) -> torch.Tensor:
    if x.numel() < 2:
        return torch.zeros_like(x)
    sd = x.std(unbiased=False)
    return torch.zeros_like(x) if sd <= 0 else (x - x.mean()) / sd


def shift_to_budget(z: torch.Tensor, layout: Layout, budget: str, keep: float,
                    fixed: torch.Tensor | None = None) -> torch.Tensor:
    """``s = sigmoid(z + t)`` with ``t`` per family (``"family"``: mean ``s`` = keep) or
    global (``"params"``: expected kept parameters = keep·P); entries where ``fixed`` is
    not NaN keep that value (the block probabilities)."""
    z = z.double()
    span = float(z.abs().max()) + 40.0 if z.numel() else 40.0
    free = torch.ones_like(z, dtype=torch.bool) if fixed is None else torch.isnan(fixed)

    def probs(t: float) -> torch.Tensor:
        s = torch.sigmoid(z + t)
        if fixed is not None:
            s = torch.where(free, s, fixed)
        return s

    s = probs(0.0)
    if budget == "family":
        for name, sl in layout.family_slice.items():
            zf = z[sl]
            t = -bisect_decreasing(lambda v: float(torch.sigmoid(zf - v).mean()), keep, -span, span)
            s[sl] = torch.sigmoid(zf + t)
        return s
    target = keep * layout.total
    t = -bisect_decreasing(lambda v: layout.kept_fraction(probs(-v)) * layout.total, target, -span, span)
    return probs(t)


# -- final selection ----------------------------------------------------------------
def select_family(layout: Layout, s: torch.Tensor, ratio: float, allow_empty: bool) -> list[Unit]:
    """The ``round(ratio·G)`` least probable KV groups, then the least probable channels
    until ``ratio`` of the block weights is removed (within half a channel), so the
    achieved ratio is exact up to one channel; floors as in :func:`select_params`."""
    units = layout.units(s)
    target = ratio * layout.total
    chosen: list[Unit] = []
    removed = 0.0
    for kind in ("group", "channel"):
        ks = sorted((u for u in units if u.kind == kind), key=lambda u: (u.score, u.block, u.index))
        left = [bi.groups if kind == "group" else bi.channels for bi in layout.info]
        k = round(ratio * len(ks)) if kind == "group" else len(ks)
        for u in ks:
            if k <= 0 or (kind == "channel" and removed + u.cost / 2 > target):
                break
            if not allow_empty and left[u.block] <= 1:
                continue
            left[u.block] -= 1
            chosen.append(u)
            removed += u.cost
            k -= 1
    return chosen


def select_params(layout: Layout, s: torch.Tensor, ratio: float, allow_empty: bool) -> list[Unit]:
    """Least probable units first (a block costs what is left of it) until ``ratio`` of
    the block weights is removed, within half an MLP channel; floors as in
    :func:`select_family`, and at least one block stays."""
    info = layout.info
    target = ratio * layout.total
    slack = min((bi.channel_cost for bi in info if bi.channel_cost), default=0) / 2
    remaining = list(layout.block_costs)
    left = {(b, k): (bi.groups if k == "group" else bi.channels) for b, bi in enumerate(info) for k in ("group", "channel")}
    dropped: set[int] = set()
    removed, chosen = 0.0, []
    order = {"block": 0, "group": 1, "channel": 2}
    for u in sorted(layout.units(s), key=lambda u: (u.score, order[u.kind], u.block, u.index)):
        if removed >= target - slack:
            break
        if u.block in dropped:
            continue
        if u.kind == "block":
            if len(dropped) == len(info) - 1:
                continue
            cost = remaining[u.block]
        else:
            if not allow_empty and left[(u.block, u.kind)] <= 1:
                continue
            cost = u.cost
        if removed + cost > target + slack:
            continue
        if u.kind == "block":
            dropped.add(u.block)
        else:
            left[(u.block, u.kind)] -= 1
        remaining[u.block] -= cost
        removed += cost
        chosen.append(u)
    return [u for u in chosen if u.kind == "block" or u.block not in dropped]


# -- the method ------------------------------------------------------------------------
class PG(StructuredMethod):
    """Policy-gradient structural pruning (see the module docstring)."""

    name = "pg"

    def __init__(self, ratio: float, steps: int = 200, batch_size: int = 1, lr: float = 0.01,
                 samples_per_step: int = 2, budget: str = "family", init: str = "wanda-sp",
                 units: str | tuple[str, ...] | None = None, offload: bool = False, baseline_window: int = 5,
                 eps: float = 1e-6, init_samples: int = 32, block_init: float | None = None,
                 allow_empty: bool = False, seed: int | None = None, keep_best: int = 10,
                 select_samples: int = 4) -> None:
        super().__init__(ratio, allow_empty=allow_empty)
        if budget not in BUDGETS:
            raise LlmpruneError(f"pg: unknown --budget {budget!r}: use family or params")
        if init not in INITS:
            raise LlmpruneError(f"pg: unknown --pg-init {init!r}: use wanda-sp, constant or random")
        if units is None:
            units = ("groups", "channels", "blocks") if budget == "params" else ("groups", "channels")
        if isinstance(units, str):
            units = tuple(u.strip() for u in units.split(",") if u.strip())
        bad = [u for u in units if u not in FAMILIES]
        if bad or not units:
            raise LlmpruneError(f"pg: unknown unit family {bad[0] if bad else '(none)'!r}: "
                                "use a comma list of groups, channels, blocks")
        if budget == "family" and set(units) != {"groups", "channels"}:
            raise LlmpruneError("pg: --budget family prunes groups and channels at the same ratio each; "
                                "for other unit families (e.g. blocks) use --budget params")
        for what, value, low in (("--steps", steps, 0), ("--batch-size", batch_size, 1),
                                 ("--samples-per-step", samples_per_step, 2), ("baseline_window", baseline_window, 1),
                                 ("init_samples", init_samples, 1), ("--pg-keep-best", keep_best, 0),
                                 ("--pg-select-samples", select_samples, 1)):
            if int(value) != value or value < low:
                raise LlmpruneError(f"pg: {what} {value} must be an integer of at least {low}")
        if not lr >= 0 or not math.isfinite(lr):
            raise LlmpruneError(f"pg: --lr {lr} must be a non-negative number")
        if not eps > 0:
            raise LlmpruneError(f"pg: eps {eps} must be positive")
        keep = 1.0 - ratio
        if block_init is not None and not keep < block_init <= 1.0:
            raise LlmpruneError(f"pg: block_init {block_init} must lie in (keep ratio {keep:g}, 1]")
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.samples_per_step, self.budget, self.init = int(samples_per_step), budget, init
        self.units = tuple(f for f in FAMILIES if f in units)
        self.offload, self.baseline_window, self.eps = bool(offload), int(baseline_window), float(eps)
        self.init_samples = int(init_samples)
        self.keep_best, self.select_samples = int(keep_best), int(select_samples)
        self.seed = None if seed is None else int(seed)  # None: the run's seed (torch.initial_seed())
        self.block_init = block_init if block_init is not None else (1.0 + keep) / 2

    def options(self) -> dict:
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "lr_schedule": "cosine",
                "samples_per_step": self.samples_per_step, "budget": self.budget, "init": self.init,
                "units": list(self.units), "offload": self.offload, "baseline_window": self.baseline_window,
                "eps": self.eps, "init_samples": self.init_samples,
                "block_init": self.block_init if "blocks" in self.units else None,
                "allow_empty": self.allow_empty, "seed": self.seed,
                "keep_best": self.keep_best, "select_samples": self.select_samples if self.keep_best else None}

    # -- pieces -------------------------------------------------------------------
    def initial_probabilities(self, model: nn.Module, adapter: ModelAdapter, layout: Layout, calib: torch.Tensor,
                              device: str, progress: bool, seed: int = 0) -> torch.Tensor:
        z = torch.zeros(layout.n, dtype=torch.float64)
        if self.init == "wanda-sp":
            scores = wanda_sp_scores(model, adapter, calib[: self.init_samples], device, progress)
            for b, (gs, cs) in enumerate(scores):
                if "groups" in self.units:
                    z[layout.groups[b]] = _zscore(gs)
                if "channels" in self.units:
                    z[layout.channels[b]] = _zscore(cs)
        elif self.init == "random":
            u = torch.rand(layout.n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            z = torch.logit(u.clamp(1e-6, 1 - 1e-6))
        fixed = None
        if layout.blocks:
            fixed = torch.full((layout.n,), float("nan"), dtype=torch.float64)
            fixed[layout.family_slice["blocks"]] = self.block_init
        return shift_to_budget(z, layout, self.budget, 1.0 - self.ratio, fixed)

    def project(self, s: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Onto ``{0 ≤ s ≤ 1}`` and the budget (per family, or one parameter budget)."""
        keep = 1.0 - self.ratio
        if self.budget == "family":
            out = s.clone()
            for sl in layout.family_slice.values():
                part = s[sl]
                out[sl] = project_budget(part, torch.ones_like(part), keep * part.numel())
            return out
        return project_budget(s, layout.cost, keep * layout.total - layout.fixed, layout.owner)

    def select(self, layout: Layout, s: torch.Tensor) -> list[Unit]:  # type: ignore[override]
        fn = select_family if self.budget == "family" else select_params
        return fn(layout, s, self.ratio, self.allow_empty)

    # -- the whole pipeline ------------------------------------------------------------
    def run(self, model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, device: str = "cpu",
            progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        dist, device = _dist_setup(device)  # the group stays up: the CLI saves on rank 0 only
        return self._run(model, adapter, calib, device, progress and dist.rank == 0, dist, t0, tqdm)

    def _run(self, model, adapter, calib, device, progress, dist: _Dist, t0: float, tqdm) -> dict:
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        model.eval()
        seed = self.seed if self.seed is not None else torch.initial_seed() % 2**62
        layout = build_layout(adapter, self.units)
        if self.budget == "params" and not layout.blocks:
            floors = 0 if self.allow_empty else sum(
                (bi.group_cost if "groups" in self.units else 0) + (bi.channel_cost if "channels" in self.units else 0)
                for bi in layout.info)
            removable = float(layout.cost.sum()) - floors
            if self.ratio * layout.total > removable:
                raise LlmpruneError(f"pg: units {','.join(self.units)} hold only {removable / layout.total:.1%} of the "
                                    "block weights: use a smaller --ratio or add unit families (--pg-units)")
        s = self.initial_probabilities(model, adapter, layout, calib, device, progress, seed)
        s = dist.broadcast(s)
        s_init = s.clone()
        t_init = time.perf_counter()
        dtype = next(model.parameters()).dtype
        hooks = MaskHooks(adapter, layout, dev, dtype)
        baseline = MovingBaseline(self.baseline_window)
        gen = torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (dist.rank + 1)) % 2**63)
        batches = _batches(calib.shape[0], self.batch_size, dist.world, dist.rank, seed)
        history: list[dict] = []
        log_every = max(1, self.steps // 200)
        K = self.samples_per_step
        tracker = _BestMask(self, layout, hooks, calib, dev, dist) if self.keep_best else None
        try:
            with placed(model, adapter.blocks(), dev, self.offload), torch.inference_mode():
                bar = tqdm(range(self.steps), desc="pg: policy gradient", disable=not progress, file=sys.stderr)
                for step in bar:
                    if tracker is not None and step % self.keep_best == 0:
                        tracker.check(model, s, step)
                    ids = calib[next(batches)].to(dev)
                    masks = torch.bernoulli(s.expand(K, -1), generator=gen)
                    losses = torch.empty(K, dtype=torch.float64)
                    for k in range(K):
                        hooks.set(masks[k])
                        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                        losses[k] = float(loss)
                    if not torch.isfinite(losses).all():
                        raise LlmpruneError("pg: the loss of a masked model is NaN/inf: load the model in float32 "
                                            "(--dtype float32)")
                    b, alpha = baseline.update(float(losses.mean()))
                    g = policy_gradient(losses, masks, s, b, alpha, self.eps)
                    g = dist.all_mean(g)
                    lr = cosine_lr(self.lr, step, self.steps)
                    s = self.project(s - lr * g, layout)
                    if step % log_every == 0 or step == self.steps - 1:
                        keep = layout.kept_fraction(s)
                        history.append({"step": step, "loss": round(float(losses.mean()), 5),
                                        "baseline": round(b, 5), "expected_keep": round(keep, 5),
                                        "lr": lr})
                        bar.set_postfix(loss=f"{float(losses.mean()):.3f}", baseline=f"{b:.3f}",
                                        keep=f"{keep:.3f}")
                if tracker is not None:
                    tracker.check(model, s, self.steps)
        finally:
            hooks.remove()
        train_seconds = time.perf_counter() - t_init
        peak_device = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        ref = dist.broadcast(s.clone())
        spread = dist.max(float((s - ref).abs().max()) if s.numel() else 0.0)
        s = ref  # every rank selects from rank 0's probabilities
        s_last = s
        if tracker is not None:
            s = tracker.best_s  # identical on every rank: the losses are all-reduced
            if tracker.best_step == 0 and self.steps > 0 and dist.rank == 0:
                print(f"pg: no trained mask scored better than the initial ({self.init}) one on the "
                      f"{tracker.n} selection windows, so the initial mask is kept (report: pg.keep_best); "
                      "try a lower --lr or more --steps", file=sys.stderr)
        chosen = self.select(layout, s)
        apply_selection(adapter, chosen, layout.info, compensate=False)
        return {
            "seconds": time.perf_counter() - t0,
            "peak_rss_mb": peak_rss_mb(),
            "peak_device_mb": peak_device,
            "removed": {"groups": sum(u.kind == "group" for u in chosen),
                        "channels": sum(u.kind == "channel" for u in chosen),
                        "blocks": sorted(u.block for u in chosen if u.kind == "block")},
            "block_influence": None,
            "train_seconds": train_seconds,
            "pg": {
                "init_seconds": t_init - t0, "train_seconds": train_seconds, "world_size": dist.world, "seed": seed,
                "ranks_identical": spread == 0.0, "rank_max_abs_diff": spread,
                "expected_keep_init": layout.kept_fraction(s_init), "expected_keep_final": layout.kept_fraction(s),
                "history": history,
                "keep_best": None if tracker is None else tracker.summary(),
                "probabilities": _by_block(layout, s),
                "last_probabilities": None if tracker is None else _by_block(layout, s_last),
                "initial_probabilities": _by_block(layout, s_init),
            },
        }


class _BestMask:
    """``keep_best=N`` (our option, not in the paper or its code): every ``N`` steps, at
    step 0 (the initialisation) and after the last step, the *deterministic* final mask
    of the current probabilities (:meth:`PG.select`) is scored by its mean loss on the
    first ``select_samples`` calibration windows (split over ranks, losses all-reduced),
    and the probabilities whose mask scored lowest are the ones selected at the end.

    Why: the estimator optimises the *expected* loss of sampled masks, but what is kept is
    the top-k mask; on SmolLM2-135M at 20 % the sampled-mask loss fell during training
    while the top-k mask got worse than the initialisation's. Scoring the top-k mask
    along the way makes the final choice on the quantity that is shipped. It costs
    ``select_samples / world`` forwards per check per rank."""

    def __init__(self, method: "PG", layout: Layout, hooks: MaskHooks, calib: torch.Tensor, dev: torch.device,
                 dist: _Dist) -> None:
        self.method, self.layout, self.hooks, self.dev, self.dist = method, layout, hooks, dev, dist
        n = min(method.select_samples, calib.shape[0])
        self.windows = calib[:n][dist.rank::dist.world]
        self.n = n
        self.best_s: torch.Tensor | None = None
        self.best_loss = math.inf
        self.best_step = -1
        self.trace: list[dict] = []

    def check(self, model: nn.Module, s: torch.Tensor, step: int) -> float:
        self.hooks.set(self.layout.hard_mask(self.method.select(self.layout, s)))
        total = torch.zeros(1, dtype=torch.float64)
        for i in range(self.windows.shape[0]):
            ids = self.windows[i:i + 1].to(self.dev)
            total += float(model(input_ids=ids, labels=ids, use_cache=False).loss)
        loss = float(self.dist.all_mean(total * self.dist.world)) / self.n
        if not math.isfinite(loss):
            raise LlmpruneError("pg: the loss of the top-k mask is NaN/inf: load the model in float32 "
                                "(--dtype float32)")
        self.trace.append({"step": step, "topk_loss": round(loss, 5)})
        if loss < self.best_loss:
            self.best_loss, self.best_step, self.best_s = loss, step, s.clone()
        return loss

    def summary(self) -> dict:
        return {"every": self.method.keep_best, "select_samples": self.n, "best_step": self.best_step,
                "best_topk_loss": round(self.best_loss, 5), "trace": self.trace}


def _batches(n: int, batch: int, world: int, rank: int, seed: int) -> Iterator[list[int]]:
    """This rank's window indices per step: one shared shuffle per epoch (same seed on
    every rank), each step's ``batch·world`` windows split by rank."""
    gen = torch.Generator().manual_seed(seed)
    buf: list[int] = []
    while True:
        while len(buf) < batch * world:
            buf += torch.randperm(n, generator=gen).tolist()
        take, buf = buf[: batch * world], buf[batch * world:]
        yield take[rank * batch:(rank + 1) * batch]


def _by_block(layout: Layout, s: torch.Tensor) -> dict[str, Any]:
    vals = [round(v, 5) for v in s.tolist()]
    out: dict[str, Any] = {}
    if "groups" in layout.families:
        out["groups"] = [vals[sl] for sl in layout.groups]
    if "channels" in layout.families:
        out["channels"] = [vals[sl] for sl in layout.channels]
    if "blocks" in layout.families:
        out["blocks"] = [vals[p] for p in layout.blocks]
    return out
