"""bfloat16 vs float32 blocks in the streamed pipeline on SmolLM2-135M: mask agreement and
WikiText-2 perplexity.

Each method prunes the default model with :func:`llmprune.prune_streamed` twice, blocks
run and written in float32 and in bfloat16 (statistics float32/float64 and factorisations
float32/float64 in both); reported per method: the fraction of block-linear weights whose
pruned/kept status agrees between the two runs, and the WikiText-2 test perplexity of
each output (loaded in float32, first ``--eval-windows`` windows of 2048 tokens).

    python benchmarks/precision.py --workdir out/precision     # results/precision_bf16.json
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import sys
from pathlib import Path

import torch

import llmprune
from llmprune.api import environment

RESULTS = Path(__file__).resolve().parent / "results"


def tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in glob.glob(str(path / "*.safetensors")):
        out.update(load_file(f))
    return out


def mask_agreement(a: Path, b: Path, layers: list[dict]) -> float:
    ta, tb = tensors(a), tensors(b)
    names = {
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    }
    same = total = 0
    for e in layers:
        key = f"model.layers.{e['block']}.{names[e['linear']]}.weight"
        same += int(((ta[key] == 0) == (tb[key] == 0)).sum())
        total += ta[key].numel()
    return same / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--methods", default="wanda,sparsegpt")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--calib", default="16x512", help="calibration N x L WikiText-2 train tokens")
    p.add_argument("--eval-windows", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "precision_bf16.json"))
    args = p.parse_args(argv)
    n, seqlen = (int(x) for x in args.calib.split("x"))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    model, tok = llmprune.load()
    dense = llmprune.evaluate(model, tok, ppl="wikitext2", max_windows=args.eval_windows, progress=False)
    del model
    for method in args.methods.split(","):
        outs, row = {}, {"method": method, "ratio": args.ratio}
        for dtype in ("float32", "bfloat16"):
            outs[dtype] = work / f"{method}-{dtype}"
            report = llmprune.prune_streamed(
                None,
                method,
                outs[dtype],
                ratio=args.ratio,
                calib_samples=n,
                seqlen=seqlen,
                dtype=dtype,
                force=True,
                progress=False,
            )
            m, t = llmprune.load(outs[dtype], dtype="float32")
            ppl = llmprune.evaluate(m, t, ppl="wikitext2", max_windows=args.eval_windows, progress=False)
            row[f"ppl_{dtype}"] = ppl["ppl"]["wikitext2"]
            row[f"seconds_{dtype}"] = report["seconds"]
            row[f"peak_rss_mb_{dtype}"] = report["peak_rss_mb"]
            layers = report["layers"]
            print(f"{method} {dtype}: ppl {row[f'ppl_{dtype}']:.3f}, {report['seconds']:.0f} s", flush=True)
        row["mask_agreement"] = mask_agreement(outs["float32"], outs["bfloat16"], layers)
        print(f"{method}: mask agreement {row['mask_agreement']:.4%}", flush=True)
        rows.append(row)
        for d in outs.values():
            shutil.rmtree(d, ignore_errors=True)
        save(args, dense, rows)
    return 0


def save(args: argparse.Namespace, dense: dict, rows: list[dict]) -> None:
    result = {
        "protocol": {
            "model": "smollm2-135m",
            "calib": args.calib,
            "calib_dataset": "wikitext2 train",
            "seed": 0,
            "eval": f"WikiText-2 test, first {args.eval_windows} windows of 2048 tokens, float32",
            "dense_ppl": dense["ppl"]["wikitext2"],
            "environment": environment(),
        },
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
