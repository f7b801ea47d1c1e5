"""PG (policy-gradient structural pruning) on SmolLM2-135M against Wanda-sp and SoBP.

For each ratio (fraction of decoder-block linear weights removed, default 20/30/40 %):
PG with the given settings, PG's own Wanda-sp initialisation selected without training
(``steps=0``, an ablation: how much the forward-only optimisation adds), Wanda-sp and
SoBP; optionally PG with one global parameter budget across KV groups, channels and
whole blocks (``--params-budget``). Every run records WikiText-2 perplexity, pruning
seconds (PG: also the training seconds), and peak memory: RSS of the process during the
run (the peak is reset before each run through ``/proc/self/clear_refs``, so runs do not
inherit each other's peaks; what stays resident from earlier runs still counts) and CUDA
peak allocation when ``--device cuda``. The dense row also measures *plain inference*
peak memory on a batch of the same shape as one PG forward (``--batch-size`` windows of
``--seqlen`` tokens, loss computed), the reference for PG's forward-only memory.

Protocol as in ``unstructured.py``: WikiText-2 test perplexity at ``--seqlen``,
calibration ``--calib-samples`` × ``--seqlen`` WikiText-2 train tokens, seed 0, the same
for every method of the run.

    python benchmarks/pg.py --quick [--ratios 0.2,0.3,0.4] [--steps 200] [--lr 0.01] \\
        [--batch-size 1] [--samples-per-step 2] [--keep-best N] [--params-budget] [--device cuda]

Writes ``benchmarks/results/pg[_quick].json`` after every run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import _runner
from _runner import add_common_args, finish_args, run_plan, shared_protocol

import llmprune
from llmprune.engine.layerwise import peak_rss_mb


def reset_peaks(device: str) -> None:
    """Restart the peak-RSS high-water mark (Linux) and the CUDA peak counter."""
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        try:
            clear.write_text("5")
        except OSError:
            pass
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | ratio | achieved | WikiText-2 ppl | params after | prune s | train s | peak RSS MiB "
        "| peak CUDA MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {_fmt(r.get('achieved_ratio'), '.3f')} | {r['ppl']:.2f} | "
            f"{r.get('params_after', '-')} | {_fmt(r.get('prune_seconds'), '.1f')} | "
            f"{_fmt(r.get('train_seconds'), '.1f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} | "
            f"{_fmt(r.get('peak_device_mb'), '.0f')} |"
        )
        if "inference_peak_rss_mb" in r:
            lines.append(
                f"| plain inference (batch {r['inference_batch']} x {r['inference_seqlen']}) | - | - | - | - | "
                f"- | - | {r['inference_peak_rss_mb']:.0f} | {_fmt(r.get('inference_peak_device_mb'), '.0f')} |"
            )
    return "\n".join(lines)


def inference_memory(args: argparse.Namespace):
    """``after_eval`` hook: on the dense row, peak memory of one plain forward (with loss)
    on a batch shaped like one PG forward."""

    def after(model, tok, row: dict) -> dict:
        if row["method"] != "dense":
            return {}
        ids = llmprune.calibration_data(tok, args.batch_size, args.seqlen, seed=0)
        model.to(args.device)
        reset_peaks(args.device)
        with torch.inference_mode():
            model(input_ids=ids.to(args.device), labels=ids.to(args.device), use_cache=False)
        cuda = args.device.startswith("cuda") and torch.cuda.is_available()
        return {
            "inference_peak_rss_mb": round(peak_rss_mb(), 1),
            "inference_batch": args.batch_size,
            "inference_seqlen": args.seqlen,
            "inference_peak_device_mb": torch.cuda.max_memory_allocated(args.device) / 2**20 if cuda else None,
        }

    return after


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--ratios", default="0.2,0.3,0.4")
    p.add_argument("--baselines", default="wanda-sp,sobp")
    p.add_argument("--steps", type=int, default=None, help="PG steps (default: the method's, 200)")
    p.add_argument("--lr", type=float, default=None, help="PG learning rate (default: the method's, 0.01)")
    p.add_argument("--batch-size", type=int, default=1, help="PG windows per forward (default 1)")
    p.add_argument("--samples-per-step", type=int, default=None, help="PG masks per batch (default 2)")
    p.add_argument("--offload", action="store_true", help="PG: only the running block on the device")
    p.add_argument("--params-budget", action="store_true", help="also PG with --budget params (blocks included)")
    p.add_argument(
        "--keep-best",
        type=int,
        default=None,
        metavar="N",
        help="PG rows with --pg-keep-best N (score the top-k mask every N steps, ship the best seen)",
    )
    p.add_argument("--select-samples", type=int, default=None, help="PG --pg-select-samples (default 4)")
    p.add_argument("--no-init-ablation", action="store_true", help="skip the PG steps=0 rows")
    args = finish_args(p.parse_args(argv), "pg")
    args.after_eval = inference_memory(args)
    original = _runner.run_one

    def run_one(a, method, label, **kw):  # a fresh memory peak for every run
        reset_peaks(a.device)
        return original(a, method, label, **kw)

    _runner.run_one = run_one
    pg_kw = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("lr", args.lr),
            ("batch_size", args.batch_size),
            ("samples_per_step", args.samples_per_step),
            ("offload", args.offload or None),
            ("keep_best", args.keep_best),
            ("select_samples", args.select_samples),
        )
        if v is not None
    }
    protocol = shared_protocol(
        args, ratio="fraction of decoder-block linear weights", pg=pg_kw, threads=torch.get_num_threads()
    )
    plan: list[tuple[str | None, str, dict]] = [(None, "-", {})]
    for r in args.ratios.split(","):
        ratio = float(r)
        plan.append(("pg", f"{r} keep-best {args.keep_best}" if args.keep_best else r, {"ratio": ratio, **pg_kw}))
        if not args.no_init_ablation:
            init_kw = {**{k: v for k, v in pg_kw.items() if k not in ("keep_best", "select_samples")}, "keep_best": 0}
            plan.append(("pg", f"{r} init only (steps=0)", {"ratio": ratio, **init_kw, "steps": 0}))
        if args.params_budget:
            plan.append(("pg", f"{r} params budget", {"ratio": ratio, **pg_kw, "budget": "params"}))
        plan += [(m, r, {"ratio": ratio}) for m in args.baselines.split(",") if m]
    return run_plan(args, "pg", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
