"""DISP vs SoBP, Wanda-sp, PG and SparseGPT 2:4 on SmolLM2-135M at equal parameter counts.

PG runs only when it is in the structured-method registry.

Budgets are fractions of *total* parameters removed (the DISP paper's accounting,
``--fractions 0.3,0.5``). DISP takes them directly (``target="total"``); the
block-unit methods get the equivalent fraction of decoder-block linear weights
``f · P_total / P_block`` (embeddings, norms and LM head are never pruned), so every
method ends with about the same parameter count (the achieved fractions are recorded).
SparseGPT 2:4 keeps dense shapes (its "params after" counts non-zeros).

Each run records WikiText-2 perplexity, pruning/training seconds, peak memory (RSS, and
CUDA when used) and the exported model's speed: the pruned model is saved, reloaded
through ``llmprune.load`` and measured by :mod:`llmprune.eval.speed` (prompt 128 tokens,
greedy decode, batch 1 and 8; decode tokens/s is the headline).

    python benchmarks/disp.py --quick [--fractions 0.3,0.5] [--steps 200] [--pg-steps 200] [--speed-trials 3]

Writes ``benchmarks/results/disp[_quick].json`` after every run.

Speed afterwards, on a quiet machine: run with ``--speed-trials 0 --save-models DIR``
(pruning and perplexity can then share the CPU with other jobs), then
``python benchmarks/disp.py --out FILE --speed-saved DIR [--speed-trials 5]`` reloads
the dense model and every saved model of ``FILE`` through ``llmprune.load`` and measures
them together, trials interleaved across models (one call of
:func:`llmprune.eval.speed.benchmark`), adding the speed fields to each row. Protocol as in
``unstructured.py``: calibration ``--calib-samples`` × ``--seqlen`` WikiText-2 train
tokens (DISP trains its hypernetwork on these windows, ``--steps`` steps of one
window), seed 0, the same for every method.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

from _runner import add_common_args, finish_args, run_plan

import llmprune
from llmprune.models import count_parameters, get_adapter


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | budget | total removed | block removed | WikiText-2 ppl | params after | train/prune s "
        "| peak RSS MiB | decode tok/s b1 | decode tok/s b8 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        total = None
        if r.get("params_before") and r.get("params_after") is not None and r["method"] != "sparsegpt":
            total = 1 - r["params_after"] / r["params_before"]
        block = r.get("achieved_ratio", r.get("block_sparsity"))
        secs = r.get("train_seconds", r.get("prune_seconds"))
        lines.append(
            f"| {r['method']} | {r['setting']} | {_fmt(total, '.3f')} | {_fmt(block, '.3f')} | "
            f"{r['ppl']:.2f} | {r.get('params_after', r.get('params_dense', '-'))} | {_fmt(secs, '.1f')} | "
            f"{_fmt(r.get('peak_rss_mb'), '.0f')} | {_fmt(r.get('decode_tok_s_b1'), '.1f')} | "
            f"{_fmt(r.get('decode_tok_s_b8'), '.1f')} |"
        )
    return "\n".join(lines)


def speed_hook(args: argparse.Namespace):
    """Save the pruned model, reload it as exported, measure prefill/decode speed."""
    from llmprune.eval.speed import benchmark

    def after(model, tok, row: dict) -> dict:
        extra: dict = {}
        if row["method"] == "dense":
            extra["params_dense"] = count_parameters(model)
        if args.speed_trials < 1:
            return extra
        with tempfile.TemporaryDirectory() as tmp:
            llmprune.save(model.to("cpu"), tok, f"{tmp}/m", {"method": row["method"]}, force=True)
            exported, _ = llmprune.load(f"{tmp}/m", device=args.device)
            res = benchmark(
                {"m": exported},
                device=args.device,
                prompt_len=128,
                new_tokens=args.new_tokens,
                batch=8,
                trials=args.speed_trials,
                warmup=1,
            )
        metrics = res["models"]["m"]["metrics"]
        for key in ("decode_tok_s_b1", "decode_tok_s_b8", "prefill_tok_s_b1", "ttft_s"):
            if key in metrics:
                extra[key] = round(metrics[key]["median"], 3)
        extra["speed_protocol"] = res["protocol"]
        return extra

    return after


def speed_saved(args: argparse.Namespace) -> int:
    """Measure the dense model and every row's saved model together; update ``--out``."""
    import json
    from pathlib import Path

    from llmprune.eval.speed import benchmark

    out = Path(args.out)
    data = json.loads(out.read_text())
    models = {"dense": llmprune.load(args.model, device=args.device)[0]}
    for row in data["runs"]:
        if row.get("saved_to"):
            path = Path(args.speed_saved) / row["saved_to"]
            if not path.is_dir():
                raise SystemExit(f"error: {path} is missing: rerun the benchmark with --save-models {args.speed_saved}")
            models[row["saved_to"]] = llmprune.load(str(path), device=args.device)[0]
    trials = max(args.speed_trials, 1)
    res = benchmark(
        models, device=args.device, prompt_len=128, new_tokens=args.new_tokens, batch=8, trials=trials, warmup=1
    )
    for row in data["runs"]:
        name = "dense" if row["method"] == "dense" else row.get("saved_to")
        if name not in res["models"]:
            continue
        metrics = res["models"][name]["metrics"]
        for key in ("decode_tok_s_b1", "decode_tok_s_b8", "prefill_tok_s_b1", "ttft_s"):
            if key in metrics:
                row[key] = round(metrics[key]["median"], 3)
        row["speed_protocol"] = {**res["protocol"], "measured": "afterwards, all models interleaved (--speed-saved)"}
    data["protocol"]["speed"] = {
        **data["protocol"]["speed"],
        "trials": trials,
        "threads": torch.get_num_threads(),
        "when": "after the run, --speed-saved, all models in one interleaved benchmark",
    }
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(markdown(data["runs"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    from llmprune.methods import method_names

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--fractions", default="0.3,0.5", help="fractions of total parameters removed")
    p.add_argument("--baselines", default="sobp,wanda-sp,pg", help="block-unit methods (pg only if registered)")
    p.add_argument("--steps", type=int, default=200, help="DISP hypernetwork steps")
    p.add_argument("--lr", type=float, default=None, help="DISP learning rate (default: the method's)")
    p.add_argument("--lam", type=float, default=None, help="DISP lambda (default: the method's)")
    p.add_argument("--pg-steps", type=int, default=None, help="PG steps (default: the method's, 200)")
    p.add_argument("--no-2of4", action="store_true", help="skip SparseGPT 2:4")
    p.add_argument("--speed-trials", type=int, default=3, help="0 skips the speed measurement")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument(
        "--speed-saved",
        default=None,
        metavar="DIR",
        help="only measure the speed of the models of --out saved under DIR (see the docstring)",
    )
    args = finish_args(p.parse_args(argv), "disp")
    if args.table:
        return run_plan(args, "disp", {}, [], markdown)
    if args.speed_saved:
        return speed_saved(args)
    args.after_eval = speed_hook(args)
    model, _ = llmprune.load(args.model)
    total, block = count_parameters(model), get_adapter(model).block_linear_params()
    del model
    registered = method_names("structured")
    baselines = [m for m in args.baselines.split(",") if m in registered]
    pg_kw = {} if args.pg_steps is None else {"steps": args.pg_steps}
    disp_kw = {k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("lam", args.lam)) if v is not None}
    protocol = {
        "model": args.model or "smollm2-135m",
        "seqlen": args.seqlen,
        "calib_samples": args.calib_samples,
        "calib_dataset": "wikitext2 train portion",
        "seed": 0,
        "eval_windows": args.eval_windows or "all",
        "quick": args.quick,
        "device": args.device,
        "params_total": total,
        "params_block_linear": block,
        "budget": "fraction of total parameters removed; baselines get f*total/block of block weights",
        "disp": disp_kw,
        "pg": pg_kw,
        "speed": {
            "prompt_len": 128,
            "new_tokens": args.new_tokens,
            "batch": [1, 8],
            "trials": args.speed_trials,
            "threads": torch.get_num_threads(),
        },
    }
    plan: list[tuple[str | None, str, dict]] = [(None, "-", {})]
    for f in (float(x) for x in args.fractions.split(",")):
        label = f"{f} total"
        plan.append(("disp", label, {"ratio": f, "target": "total", **disp_kw}))
        block_ratio = round(f * total / block, 4)
        plan += [(m, label, {"ratio": block_ratio, **(pg_kw if m == "pg" else {})}) for m in baselines]
    if not args.no_2of4:
        plan.append(("sparsegpt", "2:4", {"pattern": "2:4"}))
    return run_plan(args, "disp", protocol, plan, markdown)


if __name__ == "__main__":
    sys.exit(main())
