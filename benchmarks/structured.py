"""Structured pruning on SmolLM2-135M: SoBP vs Wanda-sp, FLAP, LLM-Pruner and ShortGPT, plus a SoBP
ablation (each stage off).

Ratio = fraction of decoder-block linear weights removed (the achieved fraction is
recorded: units are whole KV groups, channels or blocks). Protocol as in
``unstructured.py``: WikiText-2 test perplexity at ``--seqlen``, calibration
``--calib-samples`` × ``--seqlen`` WikiText-2 train tokens, seed 0, the same for every
method of the run.

    python benchmarks/structured.py --quick [--ratios 0.1,0.2,0.3,0.4] [--no-ablation]

Writes ``benchmarks/results/structured[_quick].json`` after every run.
"""

from __future__ import annotations

import argparse
import sys

from _runner import add_common_args, finish_args, run_plan, shared_protocol

ABLATION = {
    "sobp-no-global": {"global_selection": False},
    "sobp-no-refine": {"refine": False},
    "sobp-no-reconstruct": {"reconstruct": False},
    "sobp-refit-zero": {"refit_prior": "zero"},
}  # stage 3 as ridge towards zero (the default before)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | ratio | achieved | WikiText-2 ppl | params after | prune s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ach = r.get("achieved_ratio")
        lines.append(
            f"| {r['method']} | {r['setting']} | {'-' if ach is None else f'{ach:.3f}'} | {r['ppl']:.2f} | "
            f"{r.get('params_after', '-')} | {r.get('prune_seconds', '-')} | {r.get('peak_rss_mb', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--methods", default="sobp,flap,wanda-sp,llm-pruner,shortgpt")
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4")
    p.add_argument("--ablation-ratio", default="0.3", help="ratio of the SoBP ablation runs")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument(
        "--ablation-only",
        action="store_true",
        help="only the SoBP ablation runs (e.g. in a second process with its own --out)",
    )
    p.add_argument(
        "--sobp-refit-target",
        choices=("auto", "module", "stream"),
        default="auto",
        help="SoBP stage 3's target (default auto: the package default; the rows in "
        "structured_quick.json ran with module, the default then)",
    )
    args = finish_args(p.parse_args(argv), "structured")
    protocol = shared_protocol(args, ratio="fraction of decoder-block linear weights")
    sobp = {"refit_target": args.sobp_refit_target}
    plan = [] if args.ablation_only else [(None, "-", {})]
    for r in [] if args.ablation_only else args.ratios.split(","):
        plan += [(m, r, {"ratio": float(r), **(sobp if m == "sobp" else {})}) for m in args.methods.split(",")]
    if not args.no_ablation:
        for name, opts in ABLATION.items():
            plan.append(
                ("sobp", f"{args.ablation_ratio} {name}", {"ratio": float(args.ablation_ratio), **sobp, **opts})
            )
    return run_plan(args, "structured", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
