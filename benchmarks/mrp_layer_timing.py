"""One layer, two solvers: ``sparsegpt_prune`` vs ``mrp_prune`` wall time.

For every ``--shapes`` entry ``ROWSxCOLS`` (default: SmolLM2-135M's q/o_proj 576 × 576,
k/v_proj 192 × 576, gate/up_proj 1536 × 576, down_proj 576 × 1536): a random weight and
a random SPD Hessian ``2XᵀX/N`` from correlated inputs with uneven column scales. Each
setting is timed ``--repeats`` times after one warm-up, the two solvers *interleaved*
(SparseGPT, MRP, SparseGPT, ...) so that load from other processes hits both alike; the
medians, their ratio MRP / SparseGPT and the reconstruction error ``tr(δW H δWᵀ)`` of
both are printed and saved.

    python benchmarks/mrp_layer_timing.py [--threads 1] [--shapes 576x576] [--mrp-tol 0.05] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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


def _once(fn, device: str) -> tuple[float, torch.Tensor]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def _interleaved(fns, repeats: int, device: str, warmup: bool = True) -> list[tuple[float, list[float], torch.Tensor]]:
    """Warm each of ``fns`` once (unless not ``warmup``), then time them in turn ``repeats``
    times: (median, times, output)."""
    outs = [fn() for fn in fns] if warmup else [None for _ in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t, outs[k] = _once(fn, device)
            times[k].append(t)
    return [(statistics.median(t), t, o) for t, o in zip(times, outs)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="576x576,192x576,1536x576,576x1536", help="ROWSxCOLS,...")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--settings", default="0.5,2:4,4:8")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="float32", choices=("float64", "float32"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-warmup", action="store_true", help="no untimed first call (large shapes)")
    p.add_argument("--chol-block", type=int, default=None, help="override the batched Cholesky block")
    p.add_argument(
        "--mrp-tol", type=float, default=None, help="MRP's final-solve stop (mrp_prune tol; default: the precision's)"
    )
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chol_block:
        from llmprune.solvers import mrp

        mrp.CHOL_BLOCK = args.chol_block
    dtype = getattr(torch, args.precision)
    rows = []
    print(
        f"| shape | setting | SparseGPT s | MRP s | MRP/SparseGPT | err SparseGPT | err MRP |  "
        f"[{args.device}, {torch.get_num_threads()} threads, {args.precision}, MRP tol {args.mrp_tol or 'default'}, "
        f"median of {args.repeats}]"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        n_rows, n_cols = (int(v) for v in shape.lower().split("x"))
        W, H = problem(n_rows, n_cols, args.tokens)
        W, H = W.to(args.device), H.to(args.device)
        Hd = H.double() + 0.01 * torch.diag(H).double().mean() * torch.eye(n_cols, dtype=torch.float64, device=H.device)
        for s in args.settings.split(","):
            sp = Sparsity.parse(pattern=s) if ":" in s else Sparsity.parse(ratio=s)
            (t_s, ts_all, out_s), (t_m, tm_all, out_m) = _interleaved(
                [
                    lambda W=W, H=H, sp=sp: sparsegpt_prune(W, H, sp),
                    lambda W=W, H=H, sp=sp: mrp_prune(W, H, sp, dtype=dtype, tol=args.mrp_tol),
                ],
                args.repeats,
                args.device,
                warmup=not args.no_warmup,
            )
            err = [float(torch.einsum("ri,ij,rj->", d, Hd, d)) for d in ((W - out_s).double(), (W - out_m).double())]
            row = {
                "shape": shape,
                "setting": s,
                "sparsegpt_s": t_s,
                "mrp_s": t_m,
                "ratio": t_m / t_s,
                "sparsegpt_times": ts_all,
                "mrp_times": tm_all,
                "err_sparsegpt": err[0],
                "err_mrp": err[1],
            }
            rows.append(row)
            print(
                f"| {shape} | {s} | {t_s:.3f} | {t_m:.3f} | {t_m / t_s:.2f} | {err[0]:.4g} | {err[1]:.4g} |", flush=True
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "command": shlex.join(["python", "benchmarks/mrp_layer_timing.py", *(argv or sys.argv[1:])]),
                    "args": vars(args),
                    "threads": torch.get_num_threads(),
                    "load_average_at_end": os.getloadavg(),
                    "rows": rows,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
