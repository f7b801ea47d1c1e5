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
import json
import sys
import time
from pathlib import Path

import torch

import llmprune
from llmprune.api import environment

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    p.add_argument("--quick", action="store_true", help="16 eval windows, 32 x 2048 calibration")
    p.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    p.add_argument("--settings", default="0.5,0.7,2:4,4:8", help="ratios and N:M patterns")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib-samples", type=int, default=None, help="default 128 (32 with --quick)")
    p.add_argument("--eval-windows", type=int, default=None, help="default all (32 with --quick)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/unstructured[_quick].json)")
    p.add_argument("--resume", action="store_true", help="keep runs already in --out")
    args = p.parse_args(argv)
    if args.calib_samples is None:
        args.calib_samples = 32 if args.quick else 128
    if args.eval_windows is None and args.quick:
        args.eval_windows = 16
    if args.out is None:
        args.out = str(RESULTS / ("unstructured_quick.json" if args.quick else "unstructured.json"))
    return args


def run_one(args: argparse.Namespace, method: str | None, setting: str | None) -> dict:
    model, tok = llmprune.load(args.model, device="cpu")
    row: dict = {"method": method or "dense", "setting": setting or "-"}
    if method is not None:
        kw = {"pattern": setting} if ":" in setting else {"ratio": float(setting)}
        report = llmprune.prune(model, tok, method, calib_samples=args.calib_samples, seqlen=args.seqlen,
                                seed=0, device=args.device, **kw)
        row.update(prune_seconds=round(report["seconds"], 2), peak_rss_mb=round(report["peak_rss_mb"], 1),
                   peak_device_mb=report["peak_device_mb"], block_sparsity=report["block_sparsity"],
                   params_after=report["params_after"], params_before=report["params_before"])
    if args.device != "cpu":
        model.to(args.device)
    t0 = time.perf_counter()
    ev = llmprune.evaluate(model, tok, ppl="wikitext2", seqlen=args.seqlen, max_windows=args.eval_windows,
                           device=args.device)
    row.update(ppl=ev["ppl"]["wikitext2"], eval_seconds=round(time.perf_counter() - t0, 2),
               protocol=ev["protocol"]["wikitext2"])
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| method | sparsity | WikiText-2 ppl | prune s | peak RSS MiB |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['setting']} | {r['ppl']:.2f} | {r.get('prune_seconds', '-')} | "
                     f"{r.get('peak_rss_mb', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    protocol = {"model": args.model or "smollm2-135m", "seqlen": args.seqlen, "calib_samples": args.calib_samples,
                "calib_dataset": "wikitext2 train portion", "seed": 0, "eval_windows": args.eval_windows or "all",
                "quick": args.quick, "device": args.device}
    data = {"benchmark": "unstructured", "protocol": protocol, "environment": environment(), "runs": []}
    if args.resume and out.exists():
        old = json.loads(out.read_text())
        if old.get("protocol") == protocol:
            data["runs"] = old["runs"]
    done = {(r["method"], r["setting"]) for r in data["runs"]}
    plan: list[tuple[str | None, str | None]] = [(None, None)]
    plan += [(m, s) for s in args.settings.split(",") for m in args.methods.split(",")]
    for method, setting in plan:
        if (method or "dense", setting or "-") in done:
            continue
        print(f"== {method or 'dense'} {setting or ''}", file=sys.stderr, flush=True)
        data["runs"].append(run_one(args, method, setting))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(markdown(data["runs"][-1:]), flush=True)
    print(f"protocol: {json.dumps(protocol)}")
    print(markdown(data["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
