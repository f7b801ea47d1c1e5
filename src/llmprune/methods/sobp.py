"""SoBP: Structured Optimal Brain Pruning (Wei et al., EMNLP 2024), our reconstruction.

No official code exists; only the abstract is verified: (1) global first-order
information selects the structures, (2) a local greedy approach refines them, (3)
module-wise reconstruction reduces the loss. Units are KV groups (a KV head with its
query heads; one head without GQA) and MLP channels. Our choices (options, documented):

1. **Global selection** (``global_selection``): scalar masks ``m_g = 1`` multiply each
   KV group's head outputs (the ``o_proj`` input) and each MLP channel (the
   ``down_proj`` input). ``I_g = |Σ_x ∂L/∂m_g|`` (first-order Taylor of the LM loss)
   over the calibration windows, one window per backward, gradients with respect to
   the masks only: every model parameter has ``requires_grad=False``, so no weight
   gradient is ever held (``checkpointing=True`` adds activation checkpointing for
   large models). Units of all layers are ranked by ``I_g`` and removed lowest-first
   until the budget is met, giving non-uniform per-layer counts (each block keeps at
   least one KV group and one channel unless ``allow_empty``).
   ``normalize="params"`` ranks by ``I_g`` per parameter removed instead (the greedy
   knapsack ratio). It is not the default because first-order scores underestimate
   what a whole KV group is worth: on SmolLM2-135M at 20 % it removed 43 of the 90 KV
   groups (two of three in most blocks) and the selection alone (no stages 2-3) gave
   WikiText-2 perplexity 341 at seqlen 512 (16 windows, dense 36.6) against 98.6 for
   the unnormalised score, which there removes MLP channels only.
   Off: the same counts in every layer (uniform), chosen by the same scores.
2. **Local greedy refinement** (``refine``): inside each layer, with the Hessian of the
   output projection's input computed on the pruned model's own activations
   (sequential, layer by layer), the layer's count of groups/channels is removed one
   at a time by the structured OBS cost, each removal followed by the optimal update of
   the remaining columns and a downdate of ``H⁻¹`` (:mod:`llmprune.solvers.group_obs`).
   Off: remove the stage-1 units of that layer, no update.
3. **Module-wise reconstruction** (``reconstruct``): refit each module's output
   projection (``o_proj``, then ``down_proj``) by least squares so that the pruned
   module, fed the pruned model's activations, reproduces the dense module fed the
   dense model's activations: ``W' = (Y Zᵀ + λW₀)(Z Zᵀ + λI)⁻¹``, ridge towards the
   stage-2 weights ``W₀`` (``refit_prior="current"``; ``"zero"`` is plain ridge,
   ``W' = Y Zᵀ (Z Zᵀ + λI)⁻¹``), bias refit too when present. A dense copy of only
   the current block is kept alongside; one pass of it per block stores the dense
   targets of both projections (6 block passes per block in stages 2-3, not 8).
   Ridge towards zero shrinks weakly excited input directions to zero; towards the
   stage-2 weights measured better on SmolLM2-135M, hence the prior's default.
   ``refit_damp`` sets the refit's dampening apart from stage 2's ``damp``;
   ``refit_damp="heldout"`` chooses it per module by two-fold cross-validation over the
   calibration samples (even / odd), from ``HELDOUT_DAMPS`` or "keep the stage-2 weights",
   by the held-out reconstruction error (:func:`~llmprune.solvers.group_obs.heldout_refit`);
   the choices are returned as ``report["sobp"]["refits"]``.
   ``refit_target="stream"`` (our choice, not in the paper) changes what is
   reproduced: the dense *residual stream* instead of the dense module output, so the
   refit also cancels the error the pruned stream carries into the block. ``o_proj``
   is fit to ``y_dense + (h_dense_in − h_pruned_in)``; ``down_proj``, after it, to
   ``h_dense_out − h_pruned_out + y_current`` (the block's output is linear in the
   module's output when that output is added straight to the residual stream, as in
   LLaMA, Qwen2, Mistral and Phi; blocks with post-norms, e.g. Gemma 2, are refused).
   ``refit_target="auto"`` (default): ``stream`` for blocks that allow it, ``module``
   for blocks with post-norms; each refit records its target. Measured on SmolLM2-135M
   at 30 % (``benchmarks/sobp_stage3.py``, README): the module target never beat no
   stage 3; the stream target beats it from about 64k calibration tokens (128 × 512,
   32 × 2048) and loses with less, so a run with fewer calibration tokens than
   :data:`STAGE3_MIN_TOKENS` prints a note on stderr.
   ``refit_weight="rms"`` weights each token's squared error by ``1 / rms(h_t)²`` of the
   stream it is added to (measured: no effect there).
"""

from __future__ import annotations

import copy
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..engine.layerwise import BlockRunner, LayerwiseEngine, peak_rss_mb
from ..errors import LlmpruneError
from ..models.base import LinearGroup, ModelAdapter
from ..solvers.group_obs import greedy_group_obs, heldout_refit, least_squares_refit
from ..surgery import structural
from .gradients import backward_windows
from .structured import BlockInfo, StructuredMethod, Unit, _costs, select_global, select_uniform


@contextmanager
def _masks(adapter: ModelAdapter) -> Iterator[list[tuple[torch.Tensor | None, torch.Tensor]]]:
    """Ones-masks on every block's o_proj input (per KV group) and down_proj input (per
    channel), as forward pre-hooks; yields ``[(group_mask | None, channel_mask)]``."""
    masks, handles = [], []
    for block in adapter.blocks():
        att, mlp = adapter.attention(block), adapter.mlp(block)
        gm = None
        if att is not None:
            gm = torch.ones(att.num_kv_heads, device=att.o.weight.device, requires_grad=True)
            width = att.group_size * att.head_dim

            def pre_o(module, args, gm=gm, width=width):
                return (args[0] * gm.repeat_interleave(width).to(args[0].dtype),) + args[1:]

            handles.append(att.o.register_forward_pre_hook(pre_o))
        cm = torch.ones(mlp.channels, device=mlp.down.weight.device, requires_grad=True)

        def pre_d(module, args, cm=cm):
            return (args[0] * cm.to(args[0].dtype),) + args[1:]

        handles.append(mlp.down.register_forward_pre_hook(pre_d))
        masks.append((gm, cm))
    try:
        yield masks
    finally:
        for h in handles:
            h.remove()


def first_order_scores(model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, device: str = "cpu",
                       checkpointing: bool = False, progress: bool = True) -> list[tuple[list[float], list[float]]]:
    """``|Σ_x ∂L/∂m_g|`` for every KV group and channel of every block (stage 1)."""
    with _masks(adapter) as masks:
        backward_windows(model, calib, device, checkpointing=checkpointing, progress=progress,
                         desc="sobp: first-order scores")
        return [([] if gm is None else gm.grad.abs().tolist(), cm.grad.abs().tolist()) for gm, cm in masks]


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
    return ys, outs


def _stream_targets(runner: BlockRunner, lin: nn.Linear, module_targets: list[torch.Tensor],
                    dense_in: torch.Tensor, dense_out: torch.Tensor, first: bool) -> list[torch.Tensor]:
    """``refit_target="stream"``: targets that reproduce the dense residual stream.

    ``first`` (``o_proj``): ``y_dense + (h_dense_in − h_pruned_in)``, the module output that
    puts the pruned stream back on the dense one. Otherwise (``down_proj``, the block's
    last write): ``h_dense_out − h_pruned_out + y_current`` from one pass of the pruned
    block with its current weights, the output ``lin`` must give for the block to
    reproduce the dense block's output."""
    store = runner.inputs.device
    if first:
        return [y + (dense_in[i : i + 1] - runner.inputs[i : i + 1]).to(y.dtype)
                for i, y in enumerate(module_targets)]
    current: list[torch.Tensor] = []
    handle = lin.register_forward_hook(lambda module, args, output: current.append(output.detach().to(store)))
    try:
        outs = runner.forward(keep_outputs=True)
    finally:
        handle.remove()
    return [dense_out[i : i + 1] - outs[i : i + 1] + y for i, y in enumerate(current)]


def _post_norms(block: nn.Module) -> list[str]:
    """Norms applied to a module's output before the residual add (Gemma 2/3 style)."""
    return [n for n, _ in block.named_children() if n.startswith("post_feedforward") or n == "post_attention_norm"]


def _require_two_folds(samples: int) -> None:
    if samples < 2:
        raise LlmpruneError("sobp refit_damp='heldout' needs at least 2 calibration samples (one per fold): "
                            "raise --calib-samples or give a fixed dampening")


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


def _refit(runner: BlockRunner, lin: nn.Linear, targets: list[torch.Tensor], damp: float | str,
           prior: str, weights: list[torch.Tensor] | None = None) -> dict:
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
    folds = [{"YZ": None, "ZZ": None, "YY": 0.0, "n": 0} for _ in range(2)]
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
    W = least_squares_refit(YZ, ZZ, damp, prior=W0)
    with torch.no_grad():
        if bias:
            lin.weight.copy_(W[:, :-1].to(lin.weight.dtype))
            lin.bias.copy_(W[:, -1].to(lin.bias.dtype))
        else:
            lin.weight.copy_(W.to(lin.weight.dtype))
    return chosen


class SoBP(StructuredMethod):
    name = "sobp"

    def __init__(self, ratio: float, refine: bool = True, reconstruct: bool = True, global_selection: bool = True,
                 damp: float = 0.01, checkpointing: bool = False, allow_empty: bool = False,
                 normalize: str = "none", refit_prior: str = "current",
                 refit_damp: float | str | None = None, refit_target: str = "auto",
                 refit_weight: str = "none") -> None:
        super().__init__(ratio, allow_empty=allow_empty)
        if refit_weight not in ("none", "rms"):
            raise LlmpruneError(f"unknown sobp refit_weight {refit_weight!r}: use 'none' or 'rms'")
        self.refit_weight = refit_weight
        if refit_target not in ("auto", "module", "stream"):
            raise LlmpruneError(f"unknown sobp refit_target {refit_target!r}: use 'auto', 'module' or 'stream'")
        self.refit_target = refit_target
        if normalize not in ("none", "params"):
            raise LlmpruneError(f"unknown sobp score normalisation {normalize!r}: use 'none' or 'params'")
        self.normalize = normalize
        if refit_prior not in ("current", "zero"):
            raise LlmpruneError(f"unknown sobp refit_prior {refit_prior!r}: use 'current' or 'zero'")
        self.refit_prior = refit_prior
        if refit_damp is not None and refit_damp != "heldout" and not (
                isinstance(refit_damp, (int, float)) and refit_damp > 0):
            raise LlmpruneError(f"sobp refit_damp {refit_damp!r}: use a positive number or 'heldout'")
        self.refit_damp = refit_damp
        self.refine = refine
        self.reconstruct = reconstruct
        self.global_selection = global_selection
        self.damp = damp
        self.checkpointing = checkpointing

    def options(self) -> dict:
        return {"refine": self.refine, "reconstruct": self.reconstruct, "global_selection": self.global_selection,
                "damp": self.damp, "checkpointing": self.checkpointing, "allow_empty": self.allow_empty,
                "normalize": self.normalize, "refit_prior": self.refit_prior,
                "refit_damp": self._refit_damp(), "refit_target": self.refit_target,
                "refit_weight": self.refit_weight,
                "score": "|sum_x dL/dm_g|" + (" per parameter removed" if self.normalize == "params" else "")}

    def _block_target(self, block: nn.Module, b: int) -> str:
        """Stage 3's target in block ``b``: ``auto`` is ``module`` under post-norms, else
        ``stream``; ``stream`` asked for explicitly is refused under post-norms."""
        post = _post_norms(block)
        if self.refit_target == "auto":
            return "module" if post else "stream"
        if self.refit_target == "stream" and post:
            raise LlmpruneError(f"sobp refit_target='stream': block {b} normalises module outputs before the "
                                f"residual add ({', '.join(post)}); use refit_target='module'")
        return self.refit_target

    def _refit_damp(self) -> float | str:
        """Stage 3's dampening: ``refit_damp`` when given, else stage 2's ``damp``."""
        return self.damp if self.refit_damp is None else self.refit_damp

    def run(self, model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, device: str = "cpu",
            progress: bool = True) -> dict:
        if self.reconstruct and self.refit_damp == "heldout":
            _require_two_folds(calib.shape[0])  # before any work
        if self.reconstruct and calib.numel() < STAGE3_MIN_TOKENS:
            print(f"sobp: stage 3 (reconstruction) with {calib.numel():,} calibration tokens; on SmolLM2-135M it "
                  f"helped only from about {STAGE3_MIN_TOKENS:,} and hurt with fewer: consider --no-reconstruct "
                  "or more --calib-samples", file=sys.stderr)
        t0 = time.perf_counter()
        blocks = list(adapter.blocks())
        info, units = [], []
        scores = first_order_scores(model, adapter, calib, device, self.checkpointing, progress)
        model.to("cpu") if device != "cpu" else None
        stage1_rss = peak_rss_mb()
        t1 = time.perf_counter()
        for b, block in enumerate(blocks):
            att, mlp = adapter.attention(block), adapter.mlp(block)
            groups, channels, gcost, ccost = _costs(att, mlp)
            info.append(BlockInfo(groups, channels, gcost, ccost))
            gs, cs = scores[b]
            gn, cn = (gcost, ccost) if self.normalize == "params" else (1, 1)
            units += [Unit(b, "group", g, gcost, s / gn) for g, s in enumerate(gs)]
            units += [Unit(b, "channel", c, ccost, s / cn) for c, s in enumerate(cs)]
        total = sum(bi.groups * bi.group_cost + bi.channels * bi.channel_cost for bi in info)
        select = select_global if self.global_selection else select_uniform
        chosen = select(units, info, self.ratio, self.ratio * total, self.allow_empty)
        plan = [({u.index for u in chosen if u.block == b and u.kind == "group"},
                 {u.index for u in chosen if u.block == b and u.kind == "channel"}) for b in range(len(blocks))]

        refits: list[dict] = []
        t_sel = time.perf_counter()
        spent = {"refine": 0.0, "reconstruct": 0.0}
        engine = LayerwiseEngine(model, adapter, device=device, progress=False)
        hidden, kwargs_list = engine.capture(calib)
        dense_hidden = hidden.clone() if self.reconstruct else None
        from tqdm.auto import tqdm

        for b in tqdm(range(len(blocks)), desc="sobp: refine + reconstruct", disable=not progress, file=sys.stderr):
            block = adapter.blocks()[b]
            dev = torch.device(device)
            if engine.offload:
                block.to(dev)
            runner = BlockRunner(block, hidden, kwargs_list[b], dev)
            dense_block = copy.deepcopy(block) if self.reconstruct else None
            groups_out, chans_out = plan[b]
            t_b = time.perf_counter()
            att = adapter.attention(block)
            if att is not None and groups_out:
                if self.refine:
                    H = runner.collect([LinearGroup(("o",), (att.o,))], hessian=True, stop_after=att.o)["o"].hessian
                    width = att.group_size * att.head_dim
                    cols = [list(range(g * width, (g + 1) * width)) for g in range(att.num_kv_heads)]
                    removed, W = greedy_group_obs(att.o.weight, H, cols, len(groups_out), self.damp)
                    with torch.no_grad():
                        att.o.weight.copy_(W.to(att.o.weight.dtype))
                    groups_out = set(removed)
                keep = [g for g in range(att.num_kv_heads) if g not in groups_out]
                structural.prune_heads(adapter, block, keep, layer=b)
            mlp = adapter.mlp(block)
            if chans_out:
                if self.refine:
                    H = runner.collect([LinearGroup(("down",), (mlp.down,))], hessian=True)["down"].hessian
                    removed, W = greedy_group_obs(mlp.down.weight, H, [[c] for c in range(mlp.channels)],
                                                  len(chans_out), self.damp)
                    with torch.no_grad():
                        mlp.down.weight.copy_(W.to(mlp.down.weight.dtype))
                    chans_out = set(removed)
                structural.prune_channels(adapter, block, [c for c in range(mlp.channels) if c not in chans_out],
                                          layer=b)
            t_r = time.perf_counter()
            spent["refine"] += t_r - t_b
            if self.reconstruct:
                dense_runner = BlockRunner(dense_block, dense_hidden, kwargs_list[b], dev)
                d_att, d_mlp = adapter.attention(dense_block), adapter.mlp(dense_block)
                att, mlp = adapter.attention(block), adapter.mlp(block)
                pairs = ([("o", d_att.o, att.o)] if att is not None else []) + \
                    ([("down", d_mlp.down, mlp.down)] if mlp.channels else [])
                dense_in = dense_hidden
                targets, dense_hidden = _dense_targets(dense_runner, [d for _, d, _ in pairs])
                target = self._block_target(block, b)
                for (name, _, lin), ys in zip(pairs, targets):  # o_proj first: the MLP refit sees it
                    if target == "stream":
                        ys = _stream_targets(runner, lin, ys, dense_in, dense_hidden, first=name == "o")
                    # o_proj's error meets the MLP's norm on about the block's input stream, down_proj's on its output
                    weights = None if self.refit_weight == "none" else \
                        _rms_weights(dense_in if name == "o" else dense_hidden)
                    refits.append({"block": b, "module": name, "target": target,
                                   **_refit(runner, lin, ys, self._refit_damp(), self.refit_prior, weights)})
                del dense_block, targets
            spent["reconstruct"] += time.perf_counter() - t_r
            hidden = runner.forward(keep_outputs=True)
            if engine.offload:
                block.to("cpu")
        return {
            "seconds": time.perf_counter() - t0,
            "stage1_seconds": t1 - t0,
            "stage1_peak_rss_mb": stage1_rss,
            "peak_rss_mb": peak_rss_mb(),
            "peak_device_mb": None,
            "removed": {"groups": sum(len(p[0]) for p in plan), "channels": sum(len(p[1]) for p in plan),
                        "blocks": []},
            "block_influence": None,
            "sobp": {**({"refits": refits} if self.reconstruct else {}), "stage_seconds": {
                "1_scores": t1 - t0, "1_selection": t_sel - t1, "2_refine": spent["refine"],
                "3_reconstruct": spent["reconstruct"],
                "other": time.perf_counter() - t_sel - spent["refine"] - spent["reconstruct"]}},
        }
