"""The perplexity cost of the servable unit space: SoBP and PG on SmolLM2-135M with their
default units against ``units=servable`` (MLP channels, whole attention/MLP, blocks: the
per-layer widths vLLM serves), at the same ratios, one protocol for every row.

Rows: SoBP default (KV groups + channels) vs SoBP ``units=servable``; PG ``budget=params``
(groups + channels + blocks) vs PG ``budget=params units=servable`` (channels + blocks).

    python benchmarks/units.py --seqlen 512 --calib-samples 32 --eval-windows 24 \
        [--ratios 0.2,0.3] [--pg-steps N] [--save-models DIR]

Writes ``benchmarks/results/units.json`` after every run (``--resume`` keeps finished rows).
"""

from __future__ import annotations

import argparse
import sys

import torch

from _runner import add_common_args, finish_args, run_plan, shared_protocol

#: the rows of one ratio: (method, label suffix, method options)
ROWS = (
    ("sobp", "default units", {}),
    ("sobp", "units=servable", {"units": "servable"}),
    ("pg", "budget=params", {"budget": "params"}),
    ("pg", "budget=params units=servable", {"budget": "params", "units": "servable"}),
)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | setting | units | achieved | WikiText-2 ppl | params after | prune s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ach = r.get("achieved_ratio")
        units = ",".join((r.get("options") or {}).get("units") or []) or "-"
        lines.append(
            f"| {r['method']} | {r['setting']} | {units} | {'-' if ach is None else f'{ach:.3f}'} | {r['ppl']:.2f} | "
            f"{r.get('params_after', '-')} | {r.get('prune_seconds', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--ratios", default="0.2,0.3")
    p.add_argument("--pg-steps", type=int, default=None, help="PG steps of both PG rows (default: the method's)")
    args = finish_args(p.parse_args(argv), "units")
    protocol = shared_protocol(
        args,
        ratio="fraction of decoder-block linear weights",
        methods="package defaults except the options in each row's setting",
        threads=torch.get_num_threads(),
    )
    plan: list[tuple[str | None, str, dict]] = [(None, "-", {})]
    for r in args.ratios.split(","):
        for m, label, opts in ROWS:
            if m == "pg" and args.pg_steps is not None:
                label, opts = f"{label} steps={args.pg_steps}", {**opts, "steps": args.pg_steps}
            plan.append((m, f"{r} {label}", {"ratio": float(r), **opts}))
    return run_plan(args, "units", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
