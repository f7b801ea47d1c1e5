"""Does a method's time scale with the vocabulary? Random-weight models of real shapes.

Builds random-weight causal LMs with the shapes of SmolLM2-135M (49,152-token
vocabulary), Gemma-3-270M (262,144 tokens, head_dim 256, 1 KV head) and Qwen2-0.5B
(151,936 tokens) from transformers configs, prunes each with the chosen structured
methods at ``--ratio`` on ``--calib-samples × --seqlen`` WikiText-2 calibration tokens
(token ids from the SmolLM2 tokenizer, valid in every vocabulary), one process, and
records the wall time, SoBP's per-stage times and the time per million decoder-block
linear parameters, with its ratio to the SmolLM2 shape (the issue's "3× per
block-parameter" rule). ``NAME:BLOCKS`` keeps only the first BLOCKS blocks of a shape.

    python benchmarks/vocab_scaling.py [--shapes smollm2-135m,gemma3-270m] [--methods sobp]

Saves ``benchmarks/results/vocab_scaling.json`` (merged with the runs already there).
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
from llmprune.errors import LlmpruneError
from llmprune.recipe import parse_method_args

SHAPES = {
    "smollm2-135m": (
        "llama",
        dict(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
            rope_theta=100000.0,
            max_position_embeddings=8192,
        ),
    ),
    "gemma3-270m": (
        "gemma3",
        dict(
            vocab_size=262144,
            hidden_size=640,
            intermediate_size=2048,
            num_hidden_layers=18,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=256,
            sliding_window=512,
            query_pre_attn_scalar=256,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        ),
    ),
    "qwen2-0.5b": (
        "qwen2",
        dict(
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            max_position_embeddings=32768,
        ),
    ),
}


def build(name: str, blocks: int | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig, Qwen2Config

    family, kw = SHAPES[name]
    kw = dict(kw, num_hidden_layers=blocks or kw["num_hidden_layers"])
    config = {"llama": LlamaConfig, "gemma3": Gemma3TextConfig, "qwen2": Qwen2Config}[family](**kw)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def add_ratios(runs: list[dict]) -> None:
    """``vs_smollm2_per_block_param`` of every run: its time per block-parameter over the
    latest SmolLM2-shape run of the same method, calibration and label."""
    for row in runs:
        base = [
            r
            for r in runs
            if r["shape"] == "smollm2-135m"
            and r["method"] == row["method"]
            and r["calib"] == row["calib"]
            and r["label"] == row["label"]
        ]
        if base and row["shape"] != "smollm2-135m":
            row["vs_smollm2_per_block_param"] = (
                row["seconds_per_m_block_params"] / base[-1]["seconds_per_m_block_params"]
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="smollm2-135m,gemma3-270m")
    p.add_argument("--methods", default="sobp")
    p.add_argument("--ratio", type=float, default=0.2)
    p.add_argument("--calib-samples", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--label", default="", help="a tag saved with every run (e.g. the code version)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "vocab_scaling.json"))
    p.add_argument("--method-args", default=None, help="options for every method run, as llmprune's --method-args")
    args = p.parse_args(argv)
    method_args = parse_method_args(args.method_args)
    _, tok = llmprune.load()
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"benchmark": "vocab_scaling", "runs": []}
    data["environment"] = environment()
    for spec in args.shapes.split(","):
        name, _, blocks = spec.partition(":")
        for method in args.methods.split(","):
            model = build(name, int(blocks) if blocks else None)
            n_blocks, vocab = model.config.num_hidden_layers, model.config.vocab_size  # before pruning
            t0 = time.perf_counter()
            try:
                report = llmprune.prune(
                    model,
                    tok,
                    method,
                    ratio=args.ratio,
                    calib_samples=args.calib_samples,
                    seqlen=args.seqlen,
                    progress=False,
                    **method_args,
                )
            except LlmpruneError as exc:  # e.g. a ratio this shape cannot take: say so, go on
                print(f"{name} {method}: error: {exc}", file=sys.stderr, flush=True)
                continue
            seconds = time.perf_counter() - t0
            params = report.structured.block_linear_params_before if report.structured else report.block_linear_params
            row = {
                "shape": name,
                "blocks": n_blocks,
                "vocab": vocab,
                "method": method,
                "ratio": args.ratio,
                "calib": f"{args.calib_samples} x {args.seqlen}",
                "label": args.label,
                **({"method_args": method_args} if method_args else {}),
                "seconds": round(seconds, 2),
                "block_linear_params": params,
                "seconds_per_m_block_params": seconds / params * 1e6,
                "stage_seconds": (report.details or {}).get("stage_seconds"),
            }
            data["runs"].append(row)
            add_ratios(data["runs"])
            out.write_text(json.dumps(data, indent=2) + "\n")
            print(json.dumps(row), flush=True)
            del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
