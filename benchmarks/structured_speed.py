"""Is a structurally pruned model really smaller and faster? (structured-export issue)

Prunes SmolLM2-135M with a *non-uniform* plan that removes ``--ratio`` (default 30 %)
of the decoder-block linear weights: one of the three KV groups (3 query heads) in
the layers whose share is above the mean, and the MLP channels with the smallest
down-projection column norms everywhere (per-layer shares follow a cosine profile
around the mean, from ``ratio - spread`` to ``ratio + spread``). The selection is a
deliberately simple heuristic: this benchmark measures size and speed, not quality.
It then saves the model (heterogeneous checkpoint), reloads it with ``llmprune.load``,
checks that the reloaded logits equal the in-memory pruned ones, and measures dense vs
pruned in the same run with ``llmprune.eval.speed.benchmark``.

    python benchmarks/structured_speed.py [--ratio 0.3] [--trials 5] [--threads N]

Writes ``benchmarks/results/structured_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def make_plan(adapter, ratio: float, spread: float, align: int = 1) -> dict:
    """Per-layer removals; with ``align > 1`` every layer keeps a multiple of ``align`` MLP channels."""
    blocks = list(adapter.blocks())
    n = len(blocks)
    att0, mlp0 = adapter.attention(blocks[0]), adapter.mlp(blocks[0])
    per_layer = adapter.block_linear_params() / n
    attn_params = sum(lin.weight.numel() for lin in (att0.q, att0.k, att0.v, att0.o))
    group_params = attn_params // att0.num_kv_heads
    channel_params = (
        sum(lin.weight.numel() for lin in ([mlp0.gate] if mlp0.gate is not None else []) + [mlp0.up, mlp0.down])
        // mlp0.channels
    )
    shares = [ratio - spread * math.cos(math.pi * (i + 0.5) / n) for i in range(n)]
    target_total = ratio * per_layer * n
    layers: dict[int, dict] = {}
    wanted: list[float] = []  # channels each layer would remove without rounding
    for i, share in enumerate(shares):
        edit: dict = {}
        budget = share * per_layer
        if share > ratio and att0.num_kv_heads > 1:
            edit["remove_kv_heads"] = [att0.num_kv_heads - 1]
            budget -= group_params
        wanted.append(budget / channel_params)
        layers[i] = edit
    heads_removed = sum(group_params for e in layers.values() if "remove_kv_heads" in e)
    total_channels = round((target_total - heads_removed) / channel_params)  # channels to remove in all
    step = max(1, align)
    top = (mlp0.channels - step) // step * step if step > 1 else mlp0.channels - 1  # keep at least one step

    def kept_rounded(w: float) -> int:
        kept = mlp0.channels - w
        return min(mlp0.channels, max(step, round(kept / step) * step)) if step > 1 else round(kept)

    if step == 1:  # the original rule: round each layer, then put the rounding drift on the last one
        counts = [max(0, min(mlp0.channels - 1, round(w))) for w in wanted]
        counts[-1] += total_channels - sum(counts)
    else:
        counts = [min(top, max(0, mlp0.channels - kept_rounded(w))) for w in wanted]
    # move the total onto the target in steps of ``step``, where rounding was furthest off
    while step > 1:
        drift = total_channels - sum(counts)
        if abs(drift) < step:
            break
        sign = 1 if drift > 0 else -1
        order = sorted(range(n), key=lambda i: sign * (counts[i] - wanted[i]))
        for i in order:
            if 0 <= counts[i] + sign * step <= top:
                counts[i] += sign * step
                break
        else:
            break
    for i, c in enumerate(counts):
        layers[i]["remove_channels"] = {"count": c}
    return {"layers": layers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--spread", type=float, default=0.1)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--align", type=int, default=1, help="every layer keeps a multiple of this many MLP channels (1 = no rounding)"
    )
    ap.add_argument(
        "--attn",
        default=None,
        choices=("sdpa", "eager"),
        help="attention implementation for both models (default: transformers' choice, sdpa)",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "structured_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import llmprune
    from llmprune.api import environment
    from llmprune.eval.speed import benchmark
    from llmprune.models import get_adapter

    dense, tok = llmprune.load(None)
    pruned, _ = llmprune.load(None)
    plan = make_plan(get_adapter(pruned), args.ratio, args.spread, args.align)
    report = llmprune.prune(pruned, tok, "manual", spec=plan)
    ids = torch.randint(0, dense.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pruned"
        llmprune.save(pruned, tok, out, report)
        dense_dir = Path(tmp) / "dense"
        llmprune.save(dense, tok, dense_dir, {"method": "none"})
        size = {
            name: sum(f.stat().st_size for f in d.glob("*.safetensors"))
            for name, d in (("dense", dense_dir), ("pruned", out))
        }
        reloaded, _ = llmprune.load(out)
        with torch.no_grad():
            a, b = pruned(ids).logits, reloaded(ids).logits
        reload_rel = float((a - b).abs().max() / a.abs().max())
        export_kind = json.loads((out / "report.json").read_text())["export"]["kind"]
    del pruned
    if args.attn:
        for model in (reloaded, dense):
            model.set_attn_implementation(args.attn)
    result = benchmark(
        {"pruned": reloaded, "dense": dense}, prompt_len=args.prompt_len, new_tokens=args.new_tokens, trials=args.trials
    )
    result.update(
        {
            "benchmark": "structured_speed",
            "command": "python benchmarks/structured_speed.py " + " ".join(sys.argv[1:]),
            "model": "smollm2-135m",
            "plan_rule": f"non-uniform: share_i = {args.ratio} - {args.spread}*cos(pi*(i+0.5)/L); one KV group "
            "removed where share_i > mean; smallest-norm MLP channels for the rest",
            "align": args.align,
            "attn_implementation": dense.config._attn_implementation,
            "block_params_removed": report.ratio,
            "params": {"dense": report.params_before, "pruned": report.params_after},
            "safetensors_bytes": size,
            "disk_reduction": 1 - size["pruned"] / size["dense"],
            "export_kind": export_kind,
            "reload_max_rel_logit_diff": reload_rel,
            "layers_structured": report.structured.layers_structured,
            "environment": environment(),
        }
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    sp = result["speedup"]
    print(
        f"block params removed {report.ratio:.3f}; params {report.params_before:,} -> "
        f"{report.params_after:,}; safetensors {size['dense'] / 2**20:.1f} -> {size['pruned'] / 2**20:.1f} MiB "
        f"({result['disk_reduction']:.1%} smaller); export {export_kind}; reload rel diff {reload_rel:.1e}"
    )
    print(
        "speedup (pruned/dense, medians): " + ", ".join(f"{k} {v:.3f}x" for k, v in sp.items() if k not in ("of", "vs"))
    )
    for name, m in result["models"].items():
        print(name, {k: round(v["median"], 4) for k, v in m["metrics"].items()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
