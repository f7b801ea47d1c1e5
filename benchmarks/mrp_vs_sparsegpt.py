"""MRP vs SparseGPT on SmolLM2-135M: perplexity, pruning time and peak memory side by side.

MRP (Zhao et al., Findings of EMNLP 2024) solves the multiple removal problem exactly
per output row; SparseGPT (Frantar & Alistarh, ICML 2023) removes one weight at a time
and updates only the weights to its right. Both run on the same calibration data.

Protocol (printed and saved with the results): WikiText-2 test perplexity,
``"\\n\\n".join(rows)``, non-overlapping windows of ``--seqlen`` (2048) tokens;
calibration ``--calib-samples`` (128) × ``--seqlen`` tokens from the WikiText-2 train
portion, seed 0. ``--quick``: 32 × 2048 calibration, the first 16 windows evaluated.

    python benchmarks/mrp_vs_sparsegpt.py            # full protocol (hours on 2 CPU cores)
    python benchmarks/mrp_vs_sparsegpt.py --quick    # quick mode, stated in the JSON

Results go to ``benchmarks/results/mrp_vs_sparsegpt[_quick].json`` after every run
(``--resume`` skips runs already there); the markdown table gives the ratio MRP time /
SparseGPT time per setting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _runner import add_common_args, finish_args, run_plan

from llmprune.recipe import parse_method_args


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def markdown(rows: list[dict]) -> str:
    """One line per setting: both methods' perplexity, seconds and peak RSS, and the time ratio."""
    lines = [
        "| sparsity | SparseGPT ppl | MRP ppl | SparseGPT prune s | MRP prune s | MRP / SparseGPT time | "
        "SparseGPT peak RSS MiB | MRP peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_setting: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], {})[r["method"]] = r
    for setting, runs in by_setting.items():
        if "dense" in runs:
            lines.append(f"| dense | {runs['dense']['ppl']:.2f} | {runs['dense']['ppl']:.2f} | - | - | - | - | - |")
            continue
        s, m = runs.get("sparsegpt", {}), runs.get("mrp", {})
        ts, tm = s.get("prune_seconds"), m.get("prune_seconds")
        ratio = tm / ts if ts and tm else None
        lines.append(
            f"| {setting} | {_cell(s.get('ppl'), '.2f')} | {_cell(m.get('ppl'), '.2f')} | "
            f"{_cell(ts, '.1f')} | {_cell(tm, '.1f')} | {_cell(ratio, '.2f')} | "
            f"{_cell(s.get('peak_rss_mb'), '.0f')} | {_cell(m.get('peak_rss_mb'), '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--methods", default="sparsegpt,mrp")
    p.add_argument("--settings", default="0.5,0.6,0.7,0.8,2:4,4:8", help="ratios and N:M patterns")
    p.add_argument("--data-dir", default=None, help="calibration data folder (default: the embedded WikiText-2)")
    p.add_argument(
        "--no-dense", action="store_true", help="skip the dense evaluation (it does not depend on calibration)"
    )
    p.add_argument(
        "--note", default=None, help="a remark saved with the protocol (e.g. which older rows this run supersedes)"
    )
    p.add_argument(
        "--mrp-args", default=None, help="MRP options, as --method-args (e.g. solver=exact); saved with the protocol"
    )
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # wiring check: seconds, not results
    args = p.parse_args(argv)
    if args.smoke:
        args.calib_samples, args.seqlen, args.eval_windows = 2, 128, 2
        if args.out is None:
            args.out = str(Path(tempfile.mkdtemp(prefix="mrp-smoke-")) / "mrp_vs_sparsegpt_smoke.json")
    args = finish_args(args, "mrp_vs_sparsegpt")
    protocol = {
        "model": args.model or "smollm2-135m",
        "seqlen": args.seqlen,
        "calib_samples": args.calib_samples,
        "calib_dataset": "wikitext2 train portion",
        "seed": 0,
        "eval_windows": args.eval_windows or "all",
        "quick": args.quick,
        "smoke": args.smoke,
        "device": args.device,
    }
    mrp_args = parse_method_args(args.mrp_args)
    if mrp_args:
        protocol["mrp_args"] = mrp_args
    if args.note:
        protocol["note"] = args.note
    extra = {} if args.data_dir is None else {"data_dir": args.data_dir}
    plan = [] if args.no_dense else [(None, "-", {})]
    for s in args.settings.split(","):
        kw = {"pattern": s} if ":" in s else {"ratio": float(s)}
        plan += [(m, s, {**kw, **extra, **(mrp_args if m == "mrp" else {})}) for m in args.methods.split(",")]
    return run_plan(args, "mrp_vs_sparsegpt", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
