"""SparseGPT's N:M group selection on real SmolLM2-135M layers: the published rule vs the
former block-start rule, with MRP alongside.

For each layer (dense-model Hessians from WikiText-2 calibration, :mod:`_layers`) and
pattern, the layer error ``tr((W − W') H (W − W')ᵀ)`` with ``H`` the dampened Hessian
(``damp = 0.01``, the solvers' default), and the fraction of mask entries where the two
SparseGPT rules differ.

    python benchmarks/sparsegpt_nm_rule.py [--blocks 0,10,20] [--calib-samples 8]

Saves ``benchmarks/results/sparsegpt_nm_rule.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from _layers import real_layers
from llmprune.api import environment
from llmprune.solvers import Sparsity, sparsegpt_prune
from llmprune.solvers.mrp import mrp_prune
from llmprune.solvers.masks import nm_mask
from llmprune.solvers.obs import dampen, inverse_cholesky_upper


def block_rule_sparsegpt(
    W: torch.Tensor, H: torch.Tensor, n: int, m: int, blocksize: int = 128, damp: float = 0.01
) -> torch.Tensor:
    """The former N:M rule, kept here for the comparison only: every group of a block is
    chosen at the block's start (``w² / U_jj²`` on the weights before the block's own
    column updates), then SparseGPT's loop runs with that mask fixed."""
    W = W.detach().float().clone()
    cols = W.shape[1]
    H = H.float()
    W[:, torch.diag(H) == 0] = 0
    U = inverse_cholesky_upper(dampen(H, damp))
    blocksize = max(m, (blocksize // m) * m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        mask1 = nm_mask(W1**2 / d.unsqueeze(0) ** 2, n, m)
        for i in range(i2 - i1):
            w = W1[:, i]
            q = w.masked_fill(mask1[:, i], 0.0)
            Q1[:, i] = q
            err = (w - q) / d[i]
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


def layer_error(W: torch.Tensor, V: torch.Tensor, Hd: torch.Tensor) -> float:
    D = (W - V).double()
    return float(torch.einsum("ri,ij,rj->", D, Hd, D))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", default="0,10,20")
    p.add_argument("--linears", default="self_attn.q_proj,self_attn.o_proj,mlp.up_proj,mlp.down_proj")
    p.add_argument("--patterns", default="2:4,4:8")
    p.add_argument("--calib-samples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--cache", default=None, help="cache the Hessians in this .pt file")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sparsegpt_nm_rule.json"))
    args = p.parse_args(argv)
    layers = real_layers(
        [int(b) for b in args.blocks.split(",")],
        tuple(args.linears.split(",")),
        args.calib_samples,
        args.seqlen,
        args.cache,
    )
    rows = []
    print("| layer | pattern | SparseGPT block rule | SparseGPT published | MRP | mask entries differing |")
    print("|---|---|---:|---:|---:|---:|")
    for name, W, H in layers:
        Hd = dampen(H.double(), 0.01)
        for pat in args.patterns.split(","):
            sp = Sparsity.parse(pattern=pat)
            old = block_rule_sparsegpt(W, H, sp.n, sp.m)
            new = sparsegpt_prune(W, H, sp)
            mrp = mrp_prune(W, H, sp, dtype=torch.float32)
            row = {
                "layer": name,
                "shape": list(W.shape),
                "pattern": pat,
                "err_block_rule": layer_error(W, old, Hd),
                "err_published": layer_error(W, new, Hd),
                "err_mrp": layer_error(W, mrp, Hd),
                "mask_diff": float(((old == 0) != (new == 0)).float().mean()),
            }
            rows.append(row)
            print(
                f"| {name} | {pat} | {row['err_block_rule']:.4g} | {row['err_published']:.4g} | {row['err_mrp']:.4g} | "
                f"{100 * row['mask_diff']:.1f} % |",
                flush=True,
            )
    protocol = {
        "model": "smollm2-135m",
        "calib": f"{args.calib_samples} x {args.seqlen} WikiText-2 train, seed 0, dense-model inputs",
        "damp": 0.01,
        "blocksize": 128,
        "mrp_precision": "float32",
    }
    Path(args.out).write_text(
        json.dumps(
            {"benchmark": "sparsegpt_nm_rule", "protocol": protocol, "environment": environment(), "rows": rows},
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
