"""SoBP: Structured Optimal Brain Pruning (Wei et al., EMNLP 2024), our reconstruction
(no official code exists; the abstract names the three stages).

Units are KV groups (a KV head with its query heads) and MLP channels; ``units`` can add
or swap in whole attention and MLP modules (``units=servable``: channels, attention and
MLP, the per-layer widths vLLM serves; :mod:`llmprune.methods.units`).

1. **Global selection** (``global_selection``): scalar masks ``m_g = 1`` on each KV
   group's head outputs (``o_proj`` input) and each channel (``down_proj`` input);
   importance ``I_g = |Σ_x ∂L/∂m_g|`` (first-order Taylor of the LM loss, gradients with
   respect to the masks only), units of all layers ranked and removed lowest-first until
   the budget is met (``normalize="params"``: ``I_g`` per parameter). Off: the same
   counts in every layer.
2. **Local greedy refinement** (``refine``): per layer, the layer's count of units is
   removed one at a time by the structured OBS cost with the optimal update of the
   remaining columns (:func:`~llmprune.solvers.group_obs.greedy_group_obs`), on the
   Hessian of the pruned model's own activations.
3. **Module-wise reconstruction** (``reconstruct``): ``o_proj`` then ``down_proj`` are
   refit by ridge least squares, ``W' = (Y Zᵀ + λW₀)(Z Zᵀ + λI)⁻¹`` (``refit_prior``:
   towards the stage-2 weights or zero), to the dense module's outputs on the dense
   stream (``refit_target="module"``) or to the dense residual stream
   (``"stream"``: ``o_proj`` to ``y + h_dense_in − h_pruned_in``, ``down_proj`` to
   ``h_dense_out − h_pruned_out + y_current``; refused under post-norms; ``"auto"`` picks
   it where allowed). ``refit_damp="heldout"`` chooses the dampening per module by
   two-fold cross-validation; ``refit_weight="rms"`` weights tokens by ``1/rms(h_t)²``.

Stage 1 can be handed in (``PruneContext.reuse["first_order_scores"]``, the output of
:func:`first_order_scores`) to share it between runs. ``llmprune.prune_streamed`` runs the
same stages on a model that is never in memory as a whole (:mod:`llmprune.streamed_sobp`:
stage 1 by a block-by-block backward pass, :func:`mask_gradients` per
block; the selection :meth:`SoBP.choose`; stages 2-3 :meth:`SoBP.prune_block` on two
streams). Measurements and the choice of defaults: docs/methods/sobp.md.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..engine.masks import MaskFn, MaskHooks
from ..errors import LlmpruneError
from ..models.base import LinearGroup, ModelAdapter
from ..solvers.group_obs import greedy_group_obs, heldout_refit, least_squares_refit
from ..surgery import structural
from .base import PruneContext, PruneResult
from .gradients import backward_windows
from .registry import register
from .units import (
    BlockInfo,
    StructuredMethod,
    Unit,
    UnitsConfig,
    block_infos,
    module_units,
    removed_counts,
    select_global,
    select_uniform,
)


def _constant(t: torch.Tensor) -> MaskFn:
    return lambda: t


def block_masks(hooks: MaskHooks, adapter: ModelAdapter, block: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Ones-masks (requiring grad) on ``block``'s o_proj input (one per KV group) and
    down_proj input (one per channel), put in by ``hooks``; ``(group_mask | None, channel_mask)``."""
    att, mlp = adapter.attention(block), adapter.mlp(block)
    gm = None
    if att is not None:
        gm = torch.ones(att.num_kv_heads, device=att.o.weight.device, requires_grad=True)
        hooks.input_mask(att.o, _constant(gm), repeat=att.group_size * att.head_dim)
    cm = torch.ones(mlp.channels, device=mlp.down.weight.device, requires_grad=True)
    hooks.input_mask(mlp.down, _constant(cm))
    return gm, cm


def mask_scores(gm: torch.Tensor | None, cm: torch.Tensor) -> tuple[list[float], list[float]]:
    """One block's ``(Σ_x ∂L/∂m_g per KV group, per channel)`` from its masks' gradients."""
    return ([] if gm is None else _grad(gm).tolist(), _grad(cm).tolist())


@contextmanager
def mask_gradients(adapter: ModelAdapter, block: nn.Module) -> Iterator[Callable[[], tuple[list[float], list[float]]]]:
    """:func:`block_masks` on ``block`` while the context is open; yields the function
    returning their :func:`mask_scores` (the streamed stage 1's per-block target,
    :class:`llmprune.streamed_gradients.GradientTarget`)."""
    with MaskHooks() as hooks:
        gm, cm = block_masks(hooks, adapter, block)
        yield lambda: mask_scores(gm, cm)


@contextmanager
def _masks(adapter: ModelAdapter) -> Iterator[list[tuple[torch.Tensor | None, torch.Tensor]]]:
    """Ones-masks on every block (:func:`block_masks`); yields ``[(group_mask | None, channel_mask)]``."""
    with MaskHooks() as hooks:
        yield [block_masks(hooks, adapter, block) for block in adapter.blocks()]


def first_order_scores(
    model: nn.Module,
    adapter: ModelAdapter,
    calib: torch.Tensor,
    device: str = "cpu",
    checkpointing: bool = False,
    progress: bool = True,
    offload: bool = False,
) -> list[tuple[list[float], list[float]]]:
    """``Σ_x ∂L/∂m_g`` (signed) for every KV group and channel of every block (stage 1).

    A unit's importance is the absolute value; a whole attention's (MLP's) is the
    absolute value of the sum over its groups (channels): one mask on the whole module
    has the sum of their gradients."""
    with _masks(adapter) as masks:
        backward_windows(
            model,
            calib,
            device,
            checkpointing=checkpointing,
            progress=progress,
            desc="sobp: first-order scores",
            offload_blocks=list(adapter.blocks()) if offload else None,
        )
        return [mask_scores(gm, cm) for gm, cm in masks]


def _grad(t: torch.Tensor) -> torch.Tensor:
    assert t.grad is not None
    return t.grad


def _dense_targets(dense: BlockRunner, lins: list[nn.Linear]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """One pass of the dense block over the dense stream: every sample's output of each
    of ``lins`` (kept on the inputs' storage device) and the block's outputs."""
    ys: list[list[torch.Tensor]] = [[] for _ in lins]
    store = dense.inputs.device

    def hook(k: int):
        return lambda module, args, output: ys[k].append(output.detach().to(store))

    handles = [lin.register_forward_hook(hook(k)) for k, lin in enumerate(lins)]
    try:
        outs = dense.forward(keep_outputs=True)
    finally:
        for h in handles:
            h.remove()
    assert outs is not None
    return ys, outs


def _stream_targets(
    runner: BlockRunner,
    lin: nn.Linear,
    module_targets: list[torch.Tensor],
    dense_in: torch.Tensor,
    dense_out: torch.Tensor,
    first: bool,
) -> list[torch.Tensor]:
    """``refit_target="stream"``: targets that reproduce the dense residual stream.

    ``first`` (``o_proj``): ``y_dense + (h_dense_in − h_pruned_in)``, the module output that
    puts the pruned stream back on the dense one. Otherwise (``down_proj``, the block's
    last write): ``h_dense_out − h_pruned_out + y_current`` from one pass of the pruned
    block with its current weights, the output ``lin`` must give for the block to
    reproduce the dense block's output."""
    store = runner.inputs.device
    if first:
        return [y + (dense_in[i : i + 1] - runner.inputs[i : i + 1]).to(y.dtype) for i, y in enumerate(module_targets)]
    current: list[torch.Tensor] = []
    handle = lin.register_forward_hook(lambda module, args, output: current.append(output.detach().to(store)))
    try:
        outs = runner.forward(keep_outputs=True)
    finally:
        handle.remove()
    assert outs is not None
    return [dense_out[i : i + 1] - outs[i : i + 1] + y for i, y in enumerate(current)]


def _post_norms(block: nn.Module) -> list[str]:
    """Norms applied to a module's output before the residual add (Gemma 2/3 style)."""
    return [n for n, _ in block.named_children() if n.startswith("post_feedforward") or n == "post_attention_norm"]


def _require_two_folds(samples: int) -> None:
    if samples < 2:
        raise LlmpruneError(
            "sobp refit_damp='heldout' needs at least 2 calibration samples (one per fold): "
            "raise --calib-samples or give a fixed dampening"
        )


#: calibration tokens from which stage 3 (stream target) measured better than no stage 3
STAGE3_MIN_TOKENS = 65536

#: dampenings tried by ``refit_damp="heldout"`` (relative to mean(diag Z Zᵀ), as ``damp``)
HELDOUT_DAMPS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def _rms_weights(stream: torch.Tensor) -> list[torch.Tensor]:
    """``refit_weight="rms"``: per-token weights ``1 / mean_d(h_t²)`` from a residual stream
    (samples × tokens × d). The next block reads the stream through RMSNorm, so an error
    ``e_t`` added to token ``t`` reaches it as ``e_t / rms(h_t)``; weighting the squared
    error by ``1 / rms(h_t)²`` makes stage 3's least squares measure that, instead of letting
    tokens with a large stream (the attention-sink position) dominate ``Z Zᵀ``."""
    ms = stream.float().pow(2).mean(-1)
    return [1.0 / ms[i].clamp_min(1e-12) for i in range(stream.shape[0])]


def _refit(
    runner: BlockRunner,
    lin: nn.Linear,
    targets: list[torch.Tensor],
    damp: float | str,
    prior: str,
    weights: list[torch.Tensor] | None = None,
) -> dict:
    """Least-squares refit of ``lin`` (weight and bias) so that, fed the pruned stream, it
    reproduces ``targets`` (the dense module's outputs on the dense stream): accumulates
    ``Y Zᵀ`` and ``Z Zᵀ`` over one pass of the pruned block (float32 sums, solved in float64).

    ``damp="heldout"``: the sums are kept per fold (even / odd calibration samples) and the
    dampening is chosen from :data:`HELDOUT_DAMPS` by two-fold cross-validation, keeping
    the current weights when no refit predicts the held-out fold better
    (:func:`~llmprune.solvers.group_obs.heldout_refit`). ``weights`` (one per sample, a
    weight per token) weight each token's squared error (:func:`_rms_weights`). Returns what
    was chosen."""
    bias = lin.bias is not None
    folds: list[dict[str, Any]] = [{"YZ": None, "ZZ": None, "YY": 0.0, "n": 0} for _ in range(2)]
    state = {"i": 0}

    def pre(module, args):
        z = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        y = targets[state["i"]].to(z.device).reshape(-1, lin.out_features).float()
        if bias:
            z = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], 1)
        if weights is not None:  # after the bias column: it is weighted like the rest of the row
            w = weights[state["i"]].to(z.device).reshape(-1, 1).sqrt()
            z, y = z * w, y * w
        f = folds[state["i"] % 2]
        state["i"] += 1
        if f["YZ"] is None:
            f["YZ"] = torch.zeros(y.shape[1], z.shape[1], dtype=torch.float32, device=z.device)
            f["ZZ"] = torch.zeros(z.shape[1], z.shape[1], dtype=torch.float32, device=z.device)
        f["YZ"] += y.T @ z
        f["ZZ"] += z.T @ z
        f["YY"] += float(y.double().pow(2).sum())
        f["n"] += z.shape[0]

    handle = lin.register_forward_pre_hook(pre)
    try:
        runner.forward(keep_outputs=False, stop_after=lin)  # nothing after lin is needed
    finally:
        handle.remove()
    used = [f for f in folds if f["YZ"] is not None]
    if not used:
        return {"damp": None}
    W_cur = lin.weight.detach().float()
    W_cur = torch.cat([W_cur, lin.bias.detach().float()[:, None]], 1) if bias else W_cur
    W0 = W_cur if prior == "current" else None
    chosen: dict = {"damp": damp}
    if damp == "heldout":
        _require_two_folds(len(used))
        best, rel = heldout_refit(folds, HELDOUT_DAMPS, W_cur, W0)
        chosen = {"damp": best, "heldout_error_vs_keep": rel}
        if best is None:
            return chosen
        damp = best
    n = sum(f["n"] for f in used)
    YZ = sum(f["YZ"] for f in used) / n
    ZZ = sum(f["ZZ"] for f in used) / n
    W = least_squares_refit(YZ, ZZ, float(damp), prior=W0)
    with torch.no_grad():
        if bias:
            lin.weight.copy_(W[:, :-1].to(lin.weight.dtype))
            lin.bias.copy_(W[:, -1].to(lin.bias.dtype))
        else:
            lin.weight.copy_(W.to(lin.weight.dtype))
    return chosen


class SoBPConfig(UnitsConfig):
    refine: bool = Field(True, description="stage 2: local greedy OBS refinement")
    reconstruct: bool = Field(True, description="stage 3: module-wise least-squares reconstruction")
    global_selection: bool = Field(True, description="stage 1 allocates globally (False: same counts per layer)")
    damp: float = Field(0.01, description="dampening of stage 2 (and of stage 3 unless refit_damp)")
    checkpointing: bool = Field(False, description="activation checkpointing in stage 1")
    offload: bool = Field(False, description="stage 1 with one block on the device at a time (checkpointed per block)")
    normalize: Literal["none", "params"] = Field("none", description="rank stage-1 scores as is or per parameter")
    refit_prior: Literal["current", "zero"] = Field(
        "current", description="stage 3 ridge towards the stage-2 weights or zero"
    )
    refit_damp: float | Literal["heldout"] | None = Field(
        None, description="stage 3 dampening (default: damp), or 'heldout' (two-fold cross-validation per module)"
    )
    refit_target: Literal["auto", "module", "stream"] = Field(
        "auto", description="stage 3 reproduces the dense residual stream or the dense module outputs"
    )
    refit_weight: Literal["none", "rms"] = Field("none", description="stage 3 token weights 1/rms(h)^2 (rms)")

    @field_validator("refit_damp", mode="before")
    @classmethod
    def _refit_damp(cls, value: object) -> object:
        if value is None or value == "heldout":
            return value
        try:
            damp = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            damp = -1.0
        if not damp > 0:
            raise ValueError(f"refit_damp {value!r}: use 'heldout' or a positive number such as 0.01")
        return damp


@register
class SoBP(StructuredMethod):
    name = "sobp"
    summary = "global first-order selection, OBS refinement, least-squares reconstruction (Wei et al. 2024)"
    Config = SoBPConfig
    config: SoBPConfig
    supported_units = ("groups", "attention", "channels", "mlp")

    def __init__(self, ratio: float, /, **options: object) -> None:
        super().__init__(ratio, **options)
        if not self.config.global_selection and {"attention", "mlp"} & set(self.units):
            raise LlmpruneError(
                "sobp global_selection=false removes the same counts in every layer: it cannot remove "
                "whole attention or MLP modules (use units=groups,channels or global_selection=true)"
            )

    def options(self) -> dict:
        return {
            "refine": self.config.refine,
            "reconstruct": self.config.reconstruct,
            "global_selection": self.config.global_selection,
            "damp": self.config.damp,
            "checkpointing": self.config.checkpointing,
            "offload": self.config.offload,
            "allow_empty": self.allow_empty,
            "units": list(self.units),
            "normalize": self.config.normalize,
            "refit_prior": self.config.refit_prior,
            "refit_damp": self._refit_damp(),
            "refit_target": self.config.refit_target,
            "refit_weight": self.config.refit_weight,
            "score": "|sum_x dL/dm_g|" + (" per parameter removed" if self.config.normalize == "params" else ""),
        }

    def _block_target(self, block: nn.Module, b: int) -> str:
        """Stage 3's target in block ``b``: ``auto`` is ``module`` under post-norms, else
        ``stream``; ``stream`` asked for explicitly is refused under post-norms."""
        post = _post_norms(block)
        if self.config.refit_target == "auto":
            return "module" if post else "stream"
        if self.config.refit_target == "stream" and post:
            raise LlmpruneError(
                f"sobp refit_target='stream': block {b} normalises module outputs before the "
                f"residual add ({', '.join(post)}); use refit_target='module'"
            )
        return self.config.refit_target

    def _refit_damp(self) -> float | str:
        """Stage 3's dampening: ``refit_damp`` when given, else stage 2's ``damp``."""
        return self.config.damp if self.config.refit_damp is None else self.config.refit_damp

    def _refine(
        self,
        adapter: ModelAdapter,
        block: nn.Module,
        runner: BlockRunner,
        b: int,
        groups_out: set[int],
        chans_out: set[int],
        whole: set[str],
    ) -> None:
        """Stage 2 in block ``b``: remove the stage-1 counts of KV groups and channels one at
        a time by the structured OBS cost, updating the rest (or the stage-1 units as is);
        a whole attention or MLP chosen in stage 1 is removed as is (nothing is left to update)."""
        if "attention" in whole:
            structural.remove_attention(adapter, block, keep_bias=False, layer=b)
        if "mlp" in whole:
            structural.remove_mlp(adapter, block, layer=b)
        att = adapter.attention(block)
        if att is not None and groups_out:
            if self.config.refine:
                H = runner.collect([LinearGroup(("o",), (att.o,))], hessian=True, stop_after=att.o)["o"].hessian
                assert H is not None
                width = att.group_size * att.head_dim
                cols = [list(range(g * width, (g + 1) * width)) for g in range(att.num_kv_heads)]
                removed, W = greedy_group_obs(att.o.weight, H, cols, len(groups_out), self.config.damp)
                with torch.no_grad():
                    att.o.weight.copy_(W.to(att.o.weight.dtype))
                groups_out = set(removed)
            keep = [g for g in range(att.num_kv_heads) if g not in groups_out]
            structural.prune_heads(adapter, block, keep, layer=b)
        mlp = adapter.mlp(block)
        if chans_out:
            if self.config.refine:
                H = runner.collect([LinearGroup(("down",), (mlp.down,))], hessian=True)["down"].hessian
                assert H is not None
                removed, W = greedy_group_obs(
                    mlp.down.weight, H, [[c] for c in range(mlp.channels)], len(chans_out), self.config.damp
                )
                with torch.no_grad():
                    mlp.down.weight.copy_(W.to(mlp.down.weight.dtype))
                chans_out = set(removed)
            structural.prune_channels(adapter, block, [c for c in range(mlp.channels) if c not in chans_out], layer=b)

    def _reconstruct(
        self, adapter: ModelAdapter, block: nn.Module, runner: BlockRunner, dense: BlockRunner, b: int
    ) -> list[dict]:
        """Stage 3 in block ``b``: refit ``o_proj`` then ``down_proj`` against the dense
        block (``dense``: the engine's reference runner, the dense copy on the dense stream)."""
        d_att, d_mlp = adapter.attention(dense.block), adapter.mlp(dense.block)
        att, mlp = adapter.attention(block), adapter.mlp(block)
        pairs = ([("o", d_att.o, att.o)] if att is not None and d_att is not None else []) + (
            [("down", d_mlp.down, mlp.down)] if mlp.channels else []
        )
        dense_in = dense.inputs
        targets, dense_out = _dense_targets(dense, [d for _, d, _ in pairs])
        target = self._block_target(block, b)
        refits = []
        for (name, _, lin), ys in zip(pairs, targets):  # o_proj first: the MLP refit sees it
            if target == "stream":
                ys = _stream_targets(runner, lin, ys, dense_in, dense_out, first=name == "o")
            # o_proj's error meets the MLP's norm on about the block's input stream, down_proj's on its output
            weights = (
                None if self.config.refit_weight == "none" else _rms_weights(dense_in if name == "o" else dense_out)
            )
            refits.append(
                {
                    "block": b,
                    "module": name,
                    "target": target,
                    **_refit(runner, lin, ys, self._refit_damp(), self.config.refit_prior, weights),
                }
            )
        return refits

    def check_calibration(self, calib: torch.Tensor) -> None:
        """Refuse calibration stage 3 cannot use (``refit_damp="heldout"`` with one sample)
        before any work; warn when stage 3 has fewer tokens than it measured helpful with."""
        if self.config.reconstruct and self.config.refit_damp == "heldout":
            _require_two_folds(calib.shape[0])
        if self.config.reconstruct and calib.numel() < STAGE3_MIN_TOKENS:
            print(
                f"sobp: stage 3 (reconstruction) with {calib.numel():,} calibration tokens; on SmolLM2-135M it "
                f"helped only from about {STAGE3_MIN_TOKENS:,} and hurt with fewer: consider --method-args reconstruct=false "
                "or more --calib-samples",
                file=sys.stderr,
            )

    def choose(self, info: list[BlockInfo], scores: list[tuple[list[float], list[float]]]) -> list[Unit]:
        """Stage 1's selection: the units to remove, from every block's :class:`BlockInfo`
        and its signed first-order scores (:func:`first_order_scores`), globally (or the same
        counts per block with ``global_selection=false``) until ``ratio`` of the block linear
        weights is met. Shared by :meth:`run` and the streamed pipeline."""
        families = self.units
        per_param = self.config.normalize == "params"
        units: list[Unit] = []
        for b, bi in enumerate(info):
            gs, cs = scores[b]
            gn, cn = (bi.group_cost, bi.channel_cost) if per_param else (1, 1)
            if "groups" in families:
                units += [Unit(b, "group", g, bi.group_cost, abs(s) / gn) for g, s in enumerate(gs)]
            if "channels" in families:
                units += [Unit(b, "channel", c, bi.channel_cost, abs(s) / cn) for c, s in enumerate(cs)]
            for u in module_units(b, families, bi, abs(sum(gs)), abs(sum(cs))):
                u.score /= u.cost if per_param else 1
                units.append(u)
        total = sum(bi.cost for bi in info)
        select = select_global if self.config.global_selection else select_uniform
        return select(units, info, self.ratio, self.ratio * total, self.allow_empty)

    @staticmethod
    def block_plan(chosen: list[Unit], n_blocks: int) -> list[tuple[set[int], set[int], set[str]]]:
        """Per block, what stage 2 removes: ``(KV groups, channels, whole modules)`` of ``chosen``."""
        return [
            (
                {u.index for u in chosen if u.block == b and u.kind == "group"},
                {u.index for u in chosen if u.block == b and u.kind == "channel"},
                {u.kind for u in chosen if u.block == b and u.kind in ("attention", "mlp")},
            )
            for b in range(n_blocks)
        ]

    def prune_block(
        self,
        adapter: ModelAdapter,
        block: nn.Module,
        runner: BlockRunner,
        b: int,
        plan: tuple[set[int], set[int], set[str]],
    ) -> tuple[list[dict], float, float]:
        """Stages 2 and 3 in block ``b`` (the engine's ``on_block``): :meth:`_refine` on the
        pruned stream, then :meth:`_reconstruct` against ``runner.reference`` when there is
        one; returns the refits and the seconds of each stage."""
        t_b = time.perf_counter()
        self._refine(adapter, block, runner, b, *plan)
        t_r = time.perf_counter()
        refits = [] if runner.reference is None else self._reconstruct(adapter, block, runner, runner.reference, b)
        return refits, t_r - t_b, time.perf_counter() - t_r

    def run(self, ctx: PruneContext) -> PruneResult:
        model, adapter, device, progress = ctx.model, ctx.adapter, ctx.device, ctx.progress
        calib = ctx.require_calib(self.name)
        self.check_calibration(calib)
        t0 = time.perf_counter()
        scores = ctx.reuse.get("first_order_scores")
        if scores is None:
            scores = first_order_scores(
                model, adapter, calib, device, self.config.checkpointing, progress, self.config.offload
            )
        if device != "cpu":
            model.to("cpu")
        stage1_rss = peak_rss_mb()
        t1 = time.perf_counter()
        chosen = self.choose(block_infos(adapter), scores)
        plan = self.block_plan(chosen, len(adapter.blocks()))

        refits: list[dict] = []
        t_sel = time.perf_counter()
        spent = {"refine": 0.0, "reconstruct": 0.0}

        def on_block(b: int, block: nn.Module, runner: BlockRunner) -> None:
            mine, refine_s, reconstruct_s = self.prune_block(adapter, block, runner, b, plan[b])
            refits.extend(mine)
            spent["refine"] += refine_s
            spent["reconstruct"] += reconstruct_s

        engine = LayerwiseEngine(model, adapter, device=device, progress=progress)
        engine.run(calib, on_block, desc="sobp: refine + reconstruct", reference=self.config.reconstruct)
        removed = removed_counts(chosen)
        stage_seconds = {
            "1_scores": t1 - t0,
            "1_selection": t_sel - t1,
            "2_refine": spent["refine"],
            "3_reconstruct": spent["reconstruct"],
            "other": time.perf_counter() - t_sel - spent["refine"] - spent["reconstruct"],
        }
        return PruneResult(
            seconds=time.perf_counter() - t0,
            peak_rss_mb=peak_rss_mb(),
            removed=removed,
            stages={"stage1_seconds": t1 - t0, "stage1_peak_rss_mb": stage1_rss},
            details={**({"refits": refits} if self.config.reconstruct else {}), "stage_seconds": stage_seconds},
        )
