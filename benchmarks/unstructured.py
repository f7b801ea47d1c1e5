"""Unstructured / N:M baselines on SmolLM2-135M: magnitude vs Wanda vs SparseGPT.

Protocol (printed and saved with the results): WikiText-2 test perplexity,
``"\\n\\n".join(rows)``, non-overlapping windows of ``--seqlen`` tokens; calibration
``--calib-samples`` × ``--seqlen`` tokens from the WikiText-2 train portion, seed 0,
the same for every method of the run. ``--quick`` evaluates the first 16 windows and
calibrates on 32 × 2048 tokens.

    python benchmarks/unstructured.py            # full protocol (hours on 2 CPU cores)
    python benchmarks/unstructured.py --quick    # quick mode, stated in the JSON

Results are written after every run (``--resume`` skips runs already in the file).
"""

from __future__ import annotations

import argparse
import sys

from _runner import add_common_args, finish_args, run_plan, shared_protocol


def markdown(rows: list[dict]) -> str:
    lines = ["| method | sparsity | WikiText-2 ppl | prune s | peak RSS MiB |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {r['ppl']:.2f} | {r.get('prune_seconds', '-')} | "
            f"{r.get('peak_rss_mb', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    p.add_argument("--settings", default="0.5,0.7,2:4,4:8", help="ratios and N:M patterns")
    args = finish_args(p.parse_args(argv), "unstructured")
    protocol = shared_protocol(args)
    plan = [(None, "-", {})]
    for s in args.settings.split(","):
        kw = {"pattern": s} if ":" in s else {"ratio": float(s)}
        plan += [(m, s, kw) for m in args.methods.split(",")]
    return run_plan(args, "unstructured", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
