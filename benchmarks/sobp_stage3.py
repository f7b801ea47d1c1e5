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
default; the choices are saved in the row), each reproducing the dense module outputs
(``refit_target="module"``); a ``stream+`` prefix (``stream+current:0.01``)
fits the dense residual stream instead of the dense module outputs (``refit_target="stream"``); an
``rms+`` prefix (before ``stream+``) weights each token's error by ``1 / rms(h_t)²``
(``refit_weight="rms"``); ``uniform+`` (stage 1's global allocation off: same counts per
block from the same scores) and ``norefine+`` (stage 2 off) come first. Writes
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
from llmprune.api import environment, get_adapter
from llmprune.eval.perplexity import perplexity
from llmprune.methods import sobp

OUT = Path(__file__).resolve().parent / "results" / "sobp_stage3.json"


def variant_options(v: str) -> dict:
    if v.startswith("uniform+"):
        return {**variant_options(v[len("uniform+") :]), "global_selection": False}
    if v.startswith("norefine+"):
        return {**variant_options(v[len("norefine+") :]), "refine": False}
    if v.startswith("rms+"):
        return {**variant_options(v[len("rms+") :]), "refit_weight": "rms"}
    if v.startswith("stream+"):
        return {**variant_options(v[len("stream+") :]), "refit_target": "stream"}
    if v == "off":
        return {"reconstruct": False}
    return {**_refit_options(v), "refit_target": "module"}  # without stream+: the dense module outputs


def _refit_options(v: str) -> dict:
    prior, _, damp = v.partition(":")
    if prior not in ("zero", "current") or not damp:
        raise SystemExit(f"bad variant {v!r}: use off, zero:DAMP, current:DAMP, zero:heldout or current:heldout")
    if damp == "heldout":
        return {"refit_prior": prior, "refit_damp": "heldout"}
    try:
        return {"refit_prior": prior, "damp": float(damp)}
    except ValueError:
        raise SystemExit(f"bad variant {v!r}: DAMP must be a number or heldout") from None


@torch.no_grad()
def stream_errors(dense: torch.nn.Module, pruned: torch.nn.Module, windows: torch.Tensor) -> dict:
    """Where the pruned model departs from the dense one on ``windows``: per block output, the
    mean over tokens of ``‖h_pruned − h_dense‖ / ‖h_dense‖`` (per token, so the attention-sink
    position's large stream does not dominate), and the mean per-token KL(dense ‖ pruned) of
    the next-token distributions."""
    rel, kl, n = None, 0.0, 0
    for w in windows:
        d = dense(w[None], output_hidden_states=True)
        q = pruned(w[None], output_hidden_states=True)
        errs = torch.stack(
            [
                ((hq - hd).norm(dim=-1) / hd.norm(dim=-1).clamp_min(1e-12)).sum()
                for hd, hq in zip(d.hidden_states[1:], q.hidden_states[1:])
            ]
        )
        rel = errs if rel is None else rel + errs
        logp, logq = d.logits.float().log_softmax(-1), q.logits.float().log_softmax(-1)
        kl += float((logp.exp() * (logp - logq)).sum())
        n += w.numel()
    return {"relative_stream_error": [round(float(e) / n, 5) for e in rel], "kl_to_dense": kl / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--seqlen", type=int, default=512)
    p.add_argument("--calib-samples", type=int, default=16)
    p.add_argument("--eval-windows", type=int, default=24, help="test windows; also calibration windows scored")
    p.add_argument("--variants", default="off,zero:0.01,current:0.01")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--resume", action="store_true")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also record, on the test and calibration windows, each block output's relative distance "
        "to the dense model's and the KL to the dense next-token distribution",
    )
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    for v in variants:
        variant_options(v)  # bad variant: fail before loading anything
    out = Path(args.out)
    data = json.loads(out.read_text()) if args.resume and out.exists() else {"benchmark": "sobp_stage3", "runs": []}
    data["environment"] = environment()
    protocol = {
        "ratio": args.ratio,
        "seqlen": args.seqlen,
        "calib_samples": args.calib_samples,
        "eval_windows": args.eval_windows,
        "calib_dataset": "wikitext2 train portion",
        "seed": 0,
    }
    model0, tok = llmprune.load(None)
    calib = llmprune.calibration_data(tok, args.calib_samples, args.seqlen, 0)
    if args.diagnose:  # tokenized once for every variant
        from llmprune.data import eval_windows, load_text, tokenize

        test_windows = eval_windows(tokenize(tok, load_text("wikitext2", "test")), args.seqlen, args.eval_windows)
    scores = None
    for v in variants:
        grid = list(sobp.HELDOUT_DAMPS) if "heldout" in v else None
        if any(
            r["variant"] == v and r["protocol"] == protocol and r.get("heldout_damps") == grid for r in data["runs"]
        ):
            continue
        model = copy.deepcopy(model0)
        if scores is None:
            scores = sobp.first_order_scores(model, get_adapter(model), calib, progress=False)
        t0 = time.perf_counter()
        report = llmprune.prune(
            model,
            tok,
            "sobp",
            ratio=args.ratio,
            calib_samples=args.calib_samples,
            seqlen=args.seqlen,
            progress=False,
            reuse={"first_order_scores": scores},
            **variant_options(v),
        )  # stage 1 shared by every variant
        seconds = time.perf_counter() - t0
        test = llmprune.evaluate(model, tok, seqlen=args.seqlen, max_windows=args.eval_windows, progress=False)["ppl"][
            "wikitext2"
        ]
        cal = perplexity(model, calib[: args.eval_windows], progress=False)
        row = {
            "variant": v,
            "protocol": protocol,
            "test_ppl": test,
            "calib_ppl": cal,
            "seconds_without_stage1": round(seconds, 1),
        }
        if args.diagnose:
            row["diagnosis_test"] = stream_errors(model0, model, test_windows)
            row["diagnosis_calib"] = stream_errors(model0, model, calib[: args.eval_windows])
        if "heldout" in v:
            row["heldout_damps"] = list(sobp.HELDOUT_DAMPS)
            refits = (report.details or {}).get("refits", [])
            row["heldout_choices"] = [{"block": r["block"], "module": r["module"], "damp": r["damp"]} for r in refits]
        data["runs"].append(row)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{v}: test {test:.2f} calib {cal:.2f} ({seconds:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
