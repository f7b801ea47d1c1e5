"""Shared machinery of the pruning benchmarks: one run = load, prune, evaluate; results
saved after every run; ``--resume`` keeps finished runs when the protocol is unchanged."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import llmprune
from llmprune.api import environment

RESULTS = Path(__file__).resolve().parent / "results"


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    p.add_argument("--quick", action="store_true", help="16 eval windows, 32 x 2048 calibration")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib-samples", type=int, default=None, help="default 128 (32 with --quick)")
    p.add_argument("--eval-windows", type=int, default=None, help="default all (16 with --quick)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="results JSON (default benchmarks/results/NAME[_quick].json)")
    p.add_argument("--resume", action="store_true", help="keep runs already in --out")
    p.add_argument("--table", action="store_true", help="only print the markdown table of --out")
    p.add_argument(
        "--save-models",
        default=None,
        metavar="DIR",
        help="also save every pruned model as DIR/METHOD_SETTING (llmprune.save; e.g. for zero-shot)",
    )


def finish_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    if args.calib_samples is None:
        args.calib_samples = 32 if args.quick else 128
    if args.eval_windows is None and args.quick:
        args.eval_windows = 16
    if args.out is None:
        args.out = str(RESULTS / (f"{name}_quick.json" if args.quick else f"{name}.json"))
    return args


def shared_protocol(args: argparse.Namespace, **extra: object) -> dict:
    """The protocol every run of a benchmark shares (model, calibration, evaluation, device),
    followed by the benchmark's own ``extra`` entries; ``run_plan --resume`` keeps earlier
    runs only when it is equal."""
    return {
        "model": args.model or "smollm2-135m",
        "seqlen": args.seqlen,
        "calib_samples": args.calib_samples,
        "calib_dataset": "wikitext2 train portion",
        "seed": 0,
        "eval_windows": args.eval_windows or "all",
        "quick": args.quick,
        "device": args.device,
        **extra,
    }


def run_one(args: argparse.Namespace, method: str | None, label: str, **prune_kw) -> dict:
    """Load the model, prune it with ``method`` (None = dense), evaluate WikiText-2."""
    before = getattr(args, "before_run", None)  # optional per-run set-up (e.g. resetting the peak-RSS mark)
    if before is not None:
        before()
    model, tok = llmprune.load(args.model, device="cpu")
    row: dict = {"method": method or "dense", "setting": label}
    if method is not None:
        report = llmprune.prune(
            model,
            tok,
            method,
            calib_samples=args.calib_samples,
            seqlen=args.seqlen,
            seed=0,
            device=args.device,
            **prune_kw,
        )
        row.update(
            prune_seconds=round(report.seconds, 2),
            peak_rss_mb=round(report.peak_rss_mb, 1),
            peak_device_mb=report.peak_device_mb,
            params_after=report.params_after,
            params_before=report.params_before,
        )
        if report.unstructured is not None:
            row["block_sparsity"] = report.unstructured.block_sparsity
        if report.structured is not None:
            row["achieved_ratio"] = report.structured.achieved_ratio
        for key in ("stage1_peak_rss_mb", "train_seconds"):
            if key in report.stages:
                row[key] = report.stages[key]
        if report.options:
            row["options"] = report.options  # every option in effect, defaults included
        if report.method == "pg" and (report.details or {}).get("keep_best"):
            row["pg_keep_best"] = report.details["keep_best"]
        if args.save_models:
            name = f"{method}_{label}".replace(" ", "_").replace(":", "-")
            row["saved_to"] = name
            llmprune.save(model, tok, Path(args.save_models) / name, report, force=True)
    if args.device != "cpu":
        model.to(args.device)
    t0 = time.perf_counter()
    ev = llmprune.evaluate(
        model, tok, ppl="wikitext2", seqlen=args.seqlen, max_windows=args.eval_windows, device=args.device
    )
    row.update(
        ppl=ev["ppl"]["wikitext2"],
        eval_seconds=round(time.perf_counter() - t0, 2),
        protocol=ev["protocol"]["wikitext2"],
    )
    after = getattr(args, "after_eval", None)  # optional per-run extra measurement (e.g. decode speed)
    if after is not None:
        row.update(after(model, tok, row))
    return row


def run_plan(
    args: argparse.Namespace,
    benchmark: str,
    protocol: dict,
    plan: list[tuple[str | None, str, dict]],
    markdown: Callable[[list[dict]], str],
    extra: dict | None = None,
) -> int:
    """Run every (method, label, prune kwargs) of ``plan`` not yet in ``args.out``;
    ``extra`` entries (e.g. the command) are stored next to the protocol."""
    out = Path(args.out)
    if args.table:
        data = json.loads(out.read_text())
        print(f"protocol: {json.dumps(data['protocol'])}")
        print(markdown(data["runs"]))
        return 0
    torch.manual_seed(0)
    data = {"benchmark": benchmark, "protocol": protocol, **(extra or {}), "environment": environment(), "runs": []}
    if args.resume and out.exists():
        old = json.loads(out.read_text())
        if old.get("protocol") != protocol:  # resuming would silently drop the finished rows
            print(
                f"error: {out} was run under another protocol ({json.dumps(old.get('protocol'))}), so --resume "
                "would discard its rows: restore those settings, or pass another --out",
                file=sys.stderr,
            )
            return 2
        data["runs"] = old["runs"]
    done = {(r["method"], r["setting"]) for r in data["runs"]}
    for method, label, kw in plan:
        if (method or "dense", label) in done:
            continue
        print(f"== {method or 'dense'} {label}", file=sys.stderr, flush=True)
        data["runs"].append(run_one(args, method, label, **kw))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(markdown(data["runs"][-1:]), flush=True)
    print(f"protocol: {json.dumps(protocol)}")
    print(markdown(data["runs"]))
    return 0
