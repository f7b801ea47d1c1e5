"""SoBP stage 3 (module-wise reconstruction): does it help, and is it overfitting?

Runs SoBP at one ratio with stage 1 computed once and shared (same selection for every
variant), then varies only stage 3: off, ridge towards zero, ridge towards the stage-2
weights, each at a dampening. Reports WikiText-2 test perplexity (held out) and the
perplexity on the calibration windows themselves (in-sample): a stage 3 that lowers the
second and raises the first fits the calibration set, not the model.

    OMP_NUM_THREADS=1 python benchmarks/sobp_stage3.py --seqlen 512 --calib-samples 64 \\
        --variants off,current:0.01

Variants: ``off`` (no stage 3), ``zero:DAMP``, ``current:DAMP`` (DAMP also sets stage 2's
dampening, as ``--damp`` does), ``zero:heldout``, ``current:heldout`` (stage-3 dampening
chosen per module by two-fold cross-validation on the calibration samples, stage 2 at its
default; the choices are saved in the row); a ``stream+`` prefix (``stream+current:0.01``)
fits the dense residual stream instead of the dense module outputs (``refit_target="stream"``). Writes
``benchmarks/results/sobp_stage3.json`` (rows appended; ``--resume`` skips rows present).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import llmprune
from llmprune.api import environment, get_adapter, prune_structured
from llmprune.eval.perplexity import perplexity
from llmprune.methods import sobp

OUT = Path(__file__).resolve().parent / "results" / "sobp_stage3.json"


def variant_options(v: str) -> dict:
    if v.startswith("stream+"):
        return {**variant_options(v[len("stream+"):]), "refit_target": "stream"}
    if v == "off":
        return {"reconstruct": False}
    prior, _, damp = v.partition(":")
    if prior not in ("zero", "current") or not damp:
        raise SystemExit(f"bad variant {v!r}: use off, zero:DAMP, current:DAMP, zero:heldout or current:heldout")
    if damp == "heldout":
        return {"refit_prior": prior, "refit_damp": "heldout"}
    try:
        return {"refit_prior": prior, "damp": float(damp)}
    except ValueError:
        raise SystemExit(f"bad variant {v!r}: DAMP must be a number or heldout") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=24, help="test windows; also calibration windows scored")
    p.add_argument("--variants", default="off,zero:0.01,current:0.01")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    for v in variants:
        variant_options(v)  # bad variant: fail before loading anything
    out = Path(args.out)
    data = json.loads(out.read_text()) if args.resume and out.exists() else {"benchmark": "sobp_stage3", "runs": []}
    data["environment"] = environment()
    protocol = {"ratio": args.ratio, "seqlen": args.seqlen, "calib_samples": args.calib_samples,
                "eval_windows": args.eval_windows, "calib_dataset": "wikitext2 train portion", "seed": 0}
    model0, tok = llmprune.load(None)
    calib = llmprune.calibration_data(tok, args.calib_samples, args.seqlen, 0)
    scores = None
    original = sobp.first_order_scores
    for v in variants:
        grid = list(sobp.HELDOUT_DAMPS) if "heldout" in v else None
        if any(r["variant"] == v and r["protocol"] == protocol and r.get("heldout_damps") == grid
               for r in data["runs"]):
            continue
        model = copy.deepcopy(model0)
        if scores is None:
            scores = original(model, get_adapter(model), calib, progress=False)
        sobp.first_order_scores = lambda *a, **k: scores  # stage 1 shared by every variant
        try:
            t0 = time.perf_counter()
            report = prune_structured(model, tok, "sobp", args.ratio, calib_samples=args.calib_samples,
                                      seqlen=args.seqlen, progress=False, **variant_options(v))
            seconds = time.perf_counter() - t0
        finally:
            sobp.first_order_scores = original
        test = llmprune.evaluate(model, tok, seqlen=args.seqlen, max_windows=args.eval_windows,
                                 progress=False)["ppl"]["wikitext2"]
        cal = perplexity(model, calib[: args.eval_windows], progress=False)
        row = {"variant": v, "protocol": protocol, "test_ppl": test, "calib_ppl": cal,
               "seconds_without_stage1": round(seconds, 1)}
        if "heldout" in v:
            row["heldout_damps"] = list(sobp.HELDOUT_DAMPS)
            refits = report.get("sobp", {}).get("refits", [])
            row["heldout_choices"] = [{"block": r["block"], "module": r["module"], "damp": r["damp"]} for r in refits]
        data["runs"].append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{v}: test {test:.2f} calib {cal:.2f} ({seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
