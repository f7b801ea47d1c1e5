"""Real SmolLM2-135M layers with their calibration Hessians, for per-layer solver benchmarks.

``real_layers`` runs the *dense* model on ``calib_samples × seqlen`` WikiText-2 training
tokens (seed 0, the calibration windows every method uses) and returns, for the chosen
blocks and linears, the weight ``W`` and the input Hessian ``H = 2XXᵀ/N`` (float32, the
convention of :mod:`llmprune.engine.stats`). The forward stops after the last chosen
block. Results are cached in ``--cache`` (a ``.pt`` file) so repeated benchmarks skip it.
"""

from __future__ import annotations

from pathlib import Path

import torch

import llmprune
from llmprune.engine.stats import InputStats

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")


class _Stop(Exception):
    pass


def real_layers(
    blocks: list[int],
    linears: tuple[str, ...] = LINEARS,
    calib_samples: int = 8,
    seqlen: int = 2048,
    cache: str | None = None,
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``[(name, W, H)]`` for every ``block.linear`` asked for (see the module docstring)."""
    key = {"blocks": blocks, "linears": list(linears), "calib_samples": calib_samples, "seqlen": seqlen}
    if cache and Path(cache).exists():
        data = torch.load(cache)
        if data["key"] == key:
            return data["layers"]
    model, tok = llmprune.load()
    ids = llmprune.calibration_data(tok, calib_samples, seqlen, seed=0)
    layers = model.model.layers
    stats: dict[str, InputStats] = {}
    handles = []
    for b in blocks:
        for name in linears:
            lin = layers[b].get_submodule(name)
            acc = stats[f"{b}.{name}"] = InputStats(lin.in_features, hessian=True)
            handles.append(lin.register_forward_hook(lambda mod, args, out, acc=acc: acc.add(args[0])))

    def stop(module, args, output):
        raise _Stop

    handles.append(layers[max(blocks)].register_forward_hook(stop))
    with torch.no_grad():
        for row in ids:
            try:
                model(row.unsqueeze(0))
            except _Stop:
                pass
    for h in handles:
        h.remove()
    out = []
    for b in blocks:
        for name in linears:
            W = layers[b].get_submodule(name).weight.detach().float().clone()
            out.append((f"{b}.{name}", W, stats[f"{b}.{name}"].hessian.clone()))
    if cache:
        torch.save({"key": key, "layers": out}, cache)
    return out
