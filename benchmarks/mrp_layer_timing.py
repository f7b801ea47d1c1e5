"""One layer, two solvers: ``sparsegpt_prune`` vs ``mrp_prune`` wall time.

A random ``rows × cols`` weight (default 576 × 1536, SmolLM2-135M's ``down_proj``) and a
random SPD Hessian ``2XᵀX/N`` from correlated inputs with uneven column scales; each
setting is timed ``--repeats`` times (median), after one warm-up, and the reconstruction
error ``tr(δW H δWᵀ)`` of both is printed with the ratio MRP time / SparseGPT time.

    python benchmarks/mrp_layer_timing.py [--threads 2] [--device cpu] [--precision float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from llmprune.solvers import Sparsity, sparsegpt_prune
from llmprune.solvers.mrp import mrp_prune


def problem(rows: int, cols: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g) * 0.02
    scale = torch.exp(0.5 * torch.randn(cols, generator=g))
    low = torch.randn(tokens, cols // 8, generator=g) @ torch.randn(cols // 8, cols, generator=g) / (cols // 8) ** 0.5
    X = (low + 0.5 * torch.randn(tokens, cols, generator=g)) * scale
    return W, 2 * X.T @ X / tokens


def _time(fn, repeats: int, device: str) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=576)
    p.add_argument("--cols", type=int, default=1536)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--settings", default="0.5,0.7,2:4,4:8")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32", choices=("float64", "float32"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chol-block", type=int, default=None, help="override the batched Cholesky block")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chol_block:
        from llmprune.solvers import mrp

        mrp.CHOL_BLOCK = args.chol_block
    W, H = problem(args.rows, args.cols, args.tokens)
    W, H = W.to(args.device), H.to(args.device)
    dtype = getattr(torch, args.precision)
    rows = []
    print(f"| setting | SparseGPT s | MRP s | MRP/SparseGPT | err SparseGPT | err MRP |  "
          f"[{args.rows}x{args.cols}, {args.device}, {torch.get_num_threads()} threads, {args.precision}]")
    print("|---|---:|---:|---:|---:|---:|")
    Hd = H.double() + 0.01 * torch.diag(H).double().mean() * torch.eye(args.cols, dtype=torch.float64, device=H.device)
    for s in args.settings.split(","):
        sp = Sparsity.parse(pattern=s) if ":" in s else Sparsity.parse(ratio=s)
        t_s, out_s = _time(lambda sp=sp: sparsegpt_prune(W, H, sp), args.repeats, args.device)
        t_m, out_m = _time(lambda sp=sp: mrp_prune(W, H, sp, dtype=dtype), args.repeats, args.device)
        err = [float(torch.einsum("ri,ij,rj->", d, Hd, d)) for d in ((W - out_s).double(), (W - out_m).double())]
        row = {"setting": s, "sparsegpt_s": t_s, "mrp_s": t_m, "ratio": t_m / t_s,
               "err_sparsegpt": err[0], "err_mrp": err[1]}
        rows.append(row)
        print(f"| {s} | {t_s:.3f} | {t_m:.3f} | {t_m / t_s:.2f} | {err[0]:.4g} | {err[1]:.4g} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
