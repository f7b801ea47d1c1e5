"""SoBP-pruned SmolLM2-135M vs dense in llama.cpp: prompt processing and generation tokens/s.

llama-bench's protocol through llama-cpp-python: ``pp`` = one prompt of ``--pp`` random
tokens from an empty context, ``tg`` = ``--tg`` single-token decodes from an empty
context; every model is loaded once, the trials are interleaved (the model order
rotates each trial), the median of ``--trials`` is reported. Pruned and dense share the
GGUF type (f16 written by llmprune from ``--pruned`` directories or pruned here, FFN widths
padded with zero channels to multiples of 32 as ``llmprune export`` writes them; Q4_1
re-quantized from it by llama.cpp as ``--quantize q4_1`` does, the shipped file's type) and
the thread count. Also records file sizes, parameter counts and
llama.cpp's WikiText-2 perplexity on the first ``--ppl-windows`` windows.

Run (under .venv-llamacpp, e.g. ``make bench-llamacpp``)::

    python benchmarks/llamacpp_speed.py --ratios 0.2 0.3 --trials 5 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import llmprune  # noqa: E402
from llmprune.data import eval_windows, load_text, tokenize  # noqa: E402
from llmprune.eval import llamacpp as lc  # noqa: E402
from llmprune.export.gguf import source_gguf_for, write_gguf, write_quantized_gguf  # noqa: E402


def build(args, work: Path) -> dict[str, dict]:
    """Write dense and pruned GGUFs (f16, and llama.cpp's Q4_1 of each); returns name -> info."""
    model, tok = llmprune.load()
    source = source_gguf_for(None, tok)
    entries: dict[str, dict] = {}
    variants: list[tuple[str, float | None, str | None]] = [("dense", None, None)]
    if args.pruned:
        for d in args.pruned:
            report = json.loads((Path(d) / "report.json").read_text())
            variants.append(
                (f"{report['method']}{int(round(float(report['ratio']) * 100))}", float(report["ratio"]), d)
            )
    else:
        variants += [(f"sobp{int(round(r * 100))}", r, None) for r in args.ratios]
    for name, ratio, directory in variants:
        f16, q41 = work / f"{name}-f16.gguf", work / f"{name}-q4_1.gguf"
        if not (args.reuse and f16.is_file() and q41.is_file()):
            if directory is not None:
                m, _ = llmprune.load(directory)
                src = source_gguf_for(directory, tok)
            else:
                m, src = copy.deepcopy(model), source
                if ratio is not None:
                    t0 = time.perf_counter()
                    llmprune.prune(
                        m,
                        tok,
                        "sobp",
                        ratio=ratio,
                        calib_samples=args.calib_samples,
                        seqlen=args.calib_seqlen,
                        reconstruct=False,
                        progress=False,
                    )
                    print(f"{name}: pruned in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            # as `llmprune export --outtype f16` and `--outtype f16 --quantize q4_1` write them
            write_gguf(m, tok, f16, "f16", source_gguf=src, force=True)
            write_quantized_gguf(m, tok, q41, "q4_1", "f16", source_gguf=src, force=True, threads=args.threads)
            del m
        for outtype, path in (("f16", f16), ("q4_1", q41)):
            entries[f"{name}-{outtype}"] = {
                "variant": name,
                "ratio": ratio,
                "outtype": outtype,
                "path": str(path),
                "bytes": path.stat().st_size,
            }
    entries["_shipped_q4_1_bytes"] = {"bytes": source.stat().st_size, "file": source.name}
    return entries


def bench(entries: dict[str, dict], args, windows: np.ndarray | None) -> None:
    names = [n for n in entries if not n.startswith("_")]
    llms = {
        n: lc.open_gguf(entries[n]["path"], n_ctx=max(args.pp, args.tg, args.ppl_seqlen) + 8, threads=args.threads)
        for n in names
    }
    rng = np.random.default_rng(0)
    vocab = llms[names[0]].n_vocab()
    pp_tokens = rng.integers(100, vocab, args.pp).tolist()
    tg_tokens = rng.integers(100, vocab, args.tg).tolist()
    times: dict[str, dict[str, list[float]]] = {n: {"pp": [], "tg": []} for n in names}
    for trial in range(args.warmup + args.trials):
        order = names[trial % len(names) :] + names[: trial % len(names)]
        for n in order:
            pp = lc.time_prompt(llms[n], pp_tokens)
            tg = lc.time_generation(llms[n], tg_tokens)
            if trial >= args.warmup:
                times[n]["pp"].append(args.pp / pp)
                times[n]["tg"].append(args.tg / tg)
    for n in names:
        entries[n]["parameters"] = int(llms[n]._model.n_params())  # llama.cpp's count (tied embedding once)
        for key in ("pp", "tg"):
            v = times[n][key]
            entries[n][f"{key}_tok_s"] = {"median": statistics.median(v), "min": min(v), "max": max(v), "trials": v}
        if windows is not None:
            entries[n]["wikitext2_ppl_llamacpp"] = lc.perplexity(llms[n], windows)
        llms[n].close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--pruned",
        nargs="+",
        default=None,
        help="llmprune output directories of the default model to compare (instead of pruning here)",
    )
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.3], help="SoBP ratios pruned here")
    ap.add_argument("--calib-samples", type=int, default=8)
    ap.add_argument("--calib-seqlen", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--pp", type=int, default=128, help="prompt tokens per pp trial")
    ap.add_argument("--tg", type=int, default=64, help="generated tokens per tg trial")
    ap.add_argument("--ppl-windows", type=int, default=4, help="WikiText-2 windows for llama.cpp perplexity (0: skip)")
    ap.add_argument("--ppl-seqlen", type=int, default=512)
    ap.add_argument("--work", default=str(REPO / "out" / "llamacpp-bench"), help="where the GGUF files go")
    ap.add_argument("--reuse", action="store_true", help="reuse GGUF files already in --work")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "llamacpp_speed.json"))
    args = ap.parse_args()
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    entries = build(args, work)
    windows = None
    if args.ppl_windows > 0:
        _, tok = llmprune.load()
        windows = eval_windows(tokenize(tok, load_text("wikitext2", "test")), args.ppl_seqlen, args.ppl_windows).numpy()
    bench(entries, args, windows)
    speedup = {}
    for n, e in entries.items():
        if n.startswith("_") or e["variant"] == "dense":
            continue
        d = entries[f"dense-{e['outtype']}"]
        speedup[n] = {
            "vs": f"dense-{e['outtype']}",
            "pp": e["pp_tok_s"]["median"] / d["pp_tok_s"]["median"],
            "tg": e["tg_tok_s"]["median"] / d["tg_tok_s"]["median"],
            "file_bytes_ratio": e["bytes"] / d["bytes"],
            "param_ratio": None if not e["parameters"] or not d["parameters"] else e["parameters"] / d["parameters"],
        }
    import llama_cpp

    result = {
        "models": {
            n: {k: v for k, v in e.items() if k != "path"} | {"file": Path(e["path"]).name}
            for n, e in entries.items()
            if not n.startswith("_")
        },
        "shipped_q4_1": entries["_shipped_q4_1_bytes"],
        "speedup": speedup,
        "protocol": {
            "pp_tokens": args.pp,
            "tg_tokens": args.tg,
            "trials": args.trials,
            "warmup": args.warmup,
            "threads": args.threads,
            "interleaved": True,
            "statistic": "median tokens/s",
            "pruning": (
                f"from {', '.join(args.pruned)} (see their report.json)"
                if args.pruned
                else f"sobp stages 1-2 (no reconstruction), {args.calib_samples} x {args.calib_seqlen} "
                "WikiText-2 train calibration tokens, seed 0"
            ),
            "f16": "llmprune export --outtype f16 (FFN widths padded with zero channels to multiples of 32)",
            "q4_1": "llama.cpp llama_model_quantize of that f16 file (llmprune export --outtype f16 --quantize q4_1)",
            "ppl": None
            if windows is None
            else f"wikitext2 test, first {args.ppl_windows} windows of {args.ppl_seqlen}, llama.cpp logits",
        },
        "environment": {
            "llama_cpp_python": llama_cpp.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_at_start": load_at_start,
            "load_avg_at_end": os.getloadavg(),
            "wall_s": round(time.perf_counter() - started),
        },
        "command": "python benchmarks/llamacpp_speed.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for n, e in result["models"].items():
        ppl = e.get("wikitext2_ppl_llamacpp")
        print(
            f"{n:14s} {e['bytes'] / 2**20:7.1f} MiB  pp {e['pp_tok_s']['median']:8.1f} tok/s  "
            f"tg {e['tg_tok_s']['median']:7.1f} tok/s" + ("" if ppl is None else f"  ppl {ppl:.2f}")
        )
    for n, s in speedup.items():
        print(f"{n} vs {s['vs']}: pp {s['pp']:.3f}x, tg {s['tg']:.3f}x, file {s['file_bytes_ratio']:.3f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
