"""Scaling of the streamed pipeline (:func:`llmprune.prune_streamed`) with depth and width.

Synthetic random-weight LLaMA-shaped checkpoints are written to disk as bfloat16
safetensors (one shard per block; the shallower models of one width reuse the first
blocks' shards of the deepest one through symlinks), then pruned streamed by Wanda and
SparseGPT (50 %), each run in a fresh subprocess whose peak RSS is read with
``os.wait4`` (the child's own ``ru_maxrss``). Recorded per run: peak RSS, seconds per
block (mean/min/max over the blocks), bytes the child wrote (``wchar`` of
``/proc/self/io``: shards + resume state) and the output size. Calibration is tiny
(``--calib`` N × L WikiText-2 train tokens, SmolLM2 tokenizer, vocabulary 49152)
because CPU forward passes are slow; the blocks run in ``--dtype`` (bfloat16 default:
this CPU's bf16 matmuls are several times faster than float32).

    python benchmarks/scaling.py --workdir /big/disk/tmp            # default plan
    python benchmarks/scaling.py --plan h4096:8:wanda,h4096:32:wanda --workdir ...
    python benchmarks/scaling.py --table                           # markdown table + plot from the JSON

The synthetic models are deleted at the end (``--keep-models`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs"

#: LLaMA-style shapes: hidden, intermediate, heads, kv heads (135m = SmolLM2-135M, h2048 =
#: TinyLlama-1.1B's block, h4096 = LLaMA-2-7B's block).
SHAPES = {
    "135m": dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3),
    "h2048": dict(hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4),
    "h4096": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32),
}
DEFAULT_PLAN = (
    "135m:30:wanda,135m:30:sparsegpt,h2048:8:wanda,h2048:16:wanda,h2048:32:wanda,h2048:8:sparsegpt,"
    "h2048:16:sparsegpt,h4096:8:wanda,h4096:16:wanda,h4096:32:wanda,h4096:8:sparsegpt,h4096:16:sparsegpt"
)
VOCAB = 49152


def write_synthetic(directory: Path, shape: str, layers: int, seed: int = 0) -> None:
    """A random ``shape`` LLaMA with ``layers`` blocks, bf16 safetensors, one shard per block."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    from llmprune.export.shards import shard_name, write_index
    from llmprune.models.loading import default_model_dir

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        num_hidden_layers=layers,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        dtype="bfloat16",
        **SHAPES[shape],
    )
    directory.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    h, f = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    weight_map, total = {}, 0

    def rand(*s):
        return (torch.randn(*s, generator=gen) * 0.02).to(torch.bfloat16)

    # one random block, each later block a different circular shift of it (cheap on a busy CPU;
    # the pipeline's memory and time do not depend on the values)
    base = {
        "self_attn.q_proj.weight": rand(h, h),
        "self_attn.k_proj.weight": rand(kv, h),
        "self_attn.v_proj.weight": rand(kv, h),
        "self_attn.o_proj.weight": rand(h, h),
        "mlp.gate_proj.weight": rand(f, h),
        "mlp.up_proj.weight": rand(f, h),
        "mlp.down_proj.weight": rand(h, f),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors = {p + k: torch.roll(v, shifts=(i * 7, i * 13), dims=(0, 1)) for k, v in base.items()}
        tensors.update(
            {
                p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
                p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            }
        )
        name = shard_name(i + 1, layers + 1)
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
        total += sum(t.numel() * 2 for t in tensors.values())
        del tensors
    outer = {"model.embed_tokens.weight": rand(VOCAB, h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}
    name = shard_name(layers + 1, layers + 1)
    save_file(outer, str(directory / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in outer})
    total += sum(t.numel() * 2 for t in outer.values())
    write_index(directory, weight_map, total)
    cfg.save_pretrained(directory)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(directory)


def shallow_view(deep: Path, directory: Path, layers: int) -> None:
    """A ``layers``-block model made of the first blocks of ``deep`` (symlinked shards)."""
    from transformers import AutoConfig

    from llmprune.export.shards import shard_name, write_index

    index = json.loads((deep / "model.safetensors.index.json").read_text())
    deep_layers = AutoConfig.from_pretrained(deep).num_hidden_layers
    directory.mkdir(parents=True)
    renamed = {}
    for i in range(layers):
        renamed[shard_name(i + 1, deep_layers + 1)] = shard_name(i + 1, layers + 1)
    renamed[shard_name(deep_layers + 1, deep_layers + 1)] = shard_name(layers + 1, layers + 1)
    for old, new in renamed.items():
        (directory / new).symlink_to(deep / old)
    weight_map = {k: renamed[v] for k, v in index["weight_map"].items() if v in renamed}
    sizes = sum((deep / old).stat().st_size for old in renamed)
    write_index(directory, weight_map, sizes)
    for f in deep.iterdir():
        if not f.name.endswith(".safetensors") and f.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy2(f, directory / f.name)
    cfg = AutoConfig.from_pretrained(deep)
    cfg.num_hidden_layers = layers
    cfg.save_pretrained(directory)


def disk_size(path: Path) -> int:
    """Bytes of the files under ``path``, following shard symlinks."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def child(args: argparse.Namespace) -> int:
    """One streamed prune in this (fresh) process; writes its report summary to ``--result``."""
    import llmprune

    tok_ids = None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    tok_ids = llmprune.calibration_data(tok, args.calib_n, args.calib_len, seed=0)

    class Enough(Exception):
        pass

    def stop(i: int) -> None:
        if args.max_blocks and i + 1 >= args.max_blocks:
            raise Enough

    t0 = time.perf_counter()
    try:
        report = llmprune.prune_streamed(
            args.model,
            args.method,
            args.out,
            ratio=0.5,
            calib_ids=tok_ids,
            dtype=args.dtype,
            activations=args.activations,
            progress=False,
            force=True,
            on_block_done=stop,
        )
        summary = {
            "seconds": report["seconds"],
            "block_seconds": report["streamed"]["block_seconds"],
            "block_sparsity": report["block_sparsity"],
            "shard_bytes": report["streamed"]["shard_bytes"],
            "blocks_run": report["streamed"]["blocks"],
        }
    except Enough:  # stopped after --max-blocks blocks: the committed resume state has the timings
        out = Path(args.out)
        partial = out.parent / f".{out.name}.partial"
        progress = json.loads((partial / "state" / "progress.json").read_text())
        summary = {
            "seconds": time.perf_counter() - t0,
            "block_seconds": progress["block_seconds"],
            "shard_bytes": progress["total_size"],
            "blocks_run": progress["done"],
        }
        shutil.rmtree(partial)
    from llmprune.engine.layerwise import peak_rss_mb

    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    summary.update(peak_rss_mb_self=peak_rss_mb(), wchar=int(io["wchar"]), write_bytes=int(io["write_bytes"]))
    Path(args.result).write_text(json.dumps(summary))
    return 0


def run_child(model: Path, method: str, out: Path, args: argparse.Namespace, max_blocks: int | None) -> dict:
    result = out.with_suffix(".result.json")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model",
        str(model),
        "--method",
        method,
        "--out",
        str(out),
        "--result",
        str(result),
        "--calib",
        args.calib,
        "--dtype",
        args.dtype,
        "--activations",
        args.activations,
    ]
    if max_blocks:
        cmd += ["--max-blocks", str(max_blocks)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "")))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: child run {method} on {model.name} failed")
    row = json.loads(result.read_text())
    result.unlink()
    row["peak_rss_mb"] = usage.ru_maxrss / 1024
    row["wall_seconds"] = wall
    if out.exists():
        row["output_bytes"] = disk_size(out)
        shutil.rmtree(out)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| shape | layers | model on disk GB | method | blocks run | peak RSS MiB | s/block (mean) | total s | "
        "written GB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bs = r["block_seconds"]
        total = "-" if r.get("seconds") is None else f"{r['seconds']:.0f}"  # None: run stopped by hand
        lines.append(
            f"| {r['shape']} (d={r['hidden']}) | {r['layers']} | {r['model_bytes'] / 1e9:.2f} | "
            f"{r['method']} | {r.get('blocks_run', r['layers'])} | {r['peak_rss_mb']:.0f} | "
            f"{sum(bs) / len(bs):.1f} | {total} | "
            f"{r['wchar'] / 1e9:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    path.parent.mkdir(parents=True, exist_ok=True)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r["shape"], r["method"]) for r in rows}):
        rs = sorted((r for r in rows if (r["shape"], r["method"]) == key), key=lambda r: r["layers"])
        a.plot([r["layers"] for r in rs], [r["peak_rss_mb"] / 1024 for r in rs], "o-", label=f"{key[0]} {key[1]}")
    a.set_xlabel("decoder blocks")
    a.set_ylabel("peak RSS (GiB)")
    a.set_title("peak host memory vs depth (streamed)")
    a.set_ylim(bottom=0)
    a.legend(fontsize=8)
    for method in sorted({r["method"] for r in rows}):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["hidden"])
        xs = [r["hidden"] for r in rs]
        ys = [sum(r["block_seconds"]) / len(r["block_seconds"]) for r in rs]
        b.plot(xs, ys, "o", label=method)
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("hidden size d")
    b.set_ylabel("seconds per block")
    b.set_title("time per block vs width")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--plan",
        default=DEFAULT_PLAN,
        help="comma-separated SHAPE:LAYERS:METHOD[:K] runs (K: stop after the first K blocks)",
    )
    p.add_argument("--workdir", default=None, help="where the synthetic models and outputs go (needs disk)")
    p.add_argument("--calib", default="4x128", help="calibration N x L tokens (default 4x128)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--activations", default="memory", choices=("memory", "disk"))
    p.add_argument("--out", default=str(RESULTS / "scaling.json"))
    p.add_argument("--keep-models", action="store_true")
    p.add_argument("--table", action="store_true", help="print the table of --out and redraw the plot")
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--max-blocks", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.calib_n, args.calib_len = (int(x) for x in args.calib.split("x"))
    if args.child:
        return child(args)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    if args.table:
        print(markdown(data["rows"]))
        plot(data["rows"], DOCS / "scaling.png")
        return 0
    if args.workdir is None:
        raise SystemExit("error: pass --workdir DIR with room for the synthetic models")
    from llmprune.api import environment

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    plan = [(item.split(":") + [""])[:4] for item in args.plan.split(",")]
    deepest = {}
    for shape, layers, _, _ in plan:
        deepest[shape] = max(deepest.get(shape, 0), int(layers))
    data["protocol"] = {
        "calib": args.calib,
        "dtype": args.dtype,
        "ratio": 0.5,
        "activations": args.activations,
        "weights": "random N(0, 0.02) bf16 (block i = block 0 circularly shifted by (7i, 13i)), norms 1, "
        "tied embeddings, vocabulary 49152",
        "torch_threads": "OMP_NUM_THREADS (see rows)",
        "environment": environment(),
    }
    try:
        for shape, layers, method, max_blocks in plan:
            layers, max_blocks = int(layers), int(max_blocks) if max_blocks else None
            deep = work / f"{shape}-L{deepest[shape]}"
            if not deep.exists():
                print(f"writing synthetic {deep.name} ...", flush=True)
                write_synthetic(deep, shape, deepest[shape])
            model = deep if layers == deepest[shape] else work / f"{shape}-L{layers}"
            if not model.exists():
                shallow_view(deep, model, layers)
            print(f"{shape} x {layers} blocks, {method} ...", flush=True)
            row = run_child(model, method, work / f"out-{shape}-{layers}-{method}", args, max_blocks)
            row.update(
                shape=shape,
                hidden=SHAPES[shape]["hidden_size"],
                layers=layers,
                method=method,
                model_bytes=disk_size(model),
                dtype=args.dtype,
                calib=args.calib,
                threads=os.environ.get("OMP_NUM_THREADS", "default"),
            )
            data["rows"] = [
                r for r in data["rows"] if (r["shape"], r["layers"], r["method"]) != (shape, layers, method)
            ]
            data["rows"].append(row)
            out.write_text(json.dumps(data, indent=2) + "\n")
            bs = row["block_seconds"]
            print(
                f"  peak RSS {row['peak_rss_mb']:.0f} MiB, {sum(bs) / len(bs):.2f} s/block, "
                f"wrote {row['wchar'] / 1e9:.2f} GB",
                flush=True,
            )
    finally:
        if not args.keep_models:
            for shape in deepest:
                for d in work.glob(f"{shape}-L*"):
                    shutil.rmtree(d, ignore_errors=True)
    print(markdown(data["rows"]))
    plot(data["rows"], DOCS / "scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
