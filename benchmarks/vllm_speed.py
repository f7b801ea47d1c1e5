"""vLLM offline-generation throughput of pruned models vs their dense original, in one run.

Drives the vLLM environment (``make vllm-env`` builds ``.venv-vllm``): one long-lived
worker process per model (vLLM engine in-process, float32, eager, CPU), all loaded
first, then trials interleaved across models (the order rotates every trial) so that
the load of a shared machine hits every model alike. A trial times
``LLM.generate`` for a batch of random prompts (``--prompt-len`` tokens each, greedy,
``--new-tokens`` new tokens, EOS ignored); output tokens/s = batch x new tokens / wall
time (prefill included). Medians (and min/max) over ``--trials`` at batch 1 and
``--batch``. ``--profile`` adds a torch profiler table of one large-batch generation
per model (where the time goes). Writes JSON (default
``benchmarks/results/vllm_speed.json``): the command (machine paths shortened), the
protocol, the environment (load averages at start and end) and, per model keyed by its
directory's basename, tokens/s, speedup and parameter ratio against the dense model.

    python benchmarks/vllm_speed.py --vs DENSE_DIR PRUNED_DIR [PRUNED_DIR ...] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
MARK = "@@vllm_speed@@ "


# -- worker side (runs under .venv-vllm's python) ------------------------------------------------


def _reply(obj: dict) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _count(model_dir: str) -> dict:
    from safetensors import safe_open

    total = blocks = 0
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
                if ".layers." in key and key.endswith("proj.weight"):
                    blocks += n
    return {"parameters": total, "block_linear_weights": blocks}


def worker(model_dir: str, max_model_len: int) -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        trust_remote_code=True,
        max_model_len=max_model_len,
        skip_tokenizer_init=True,
        seed=0,
        distributed_executor_backend="uni",
    )
    config = llm.llm_engine.model_config.hf_config
    _reply(
        {
            "ready": True,
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "architecture": config.architectures[0],
            "num_hidden_layers": config.num_hidden_layers,
            **_count(model_dir),
        }
    )
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        prompts = [TokensPrompt(prompt_token_ids=p) for p in cmd["prompts"]]
        params = SamplingParams(temperature=0.0, max_tokens=cmd["new_tokens"], ignore_eos=True, detokenize=False)
        if cmd["op"] == "profile":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t0 = time.perf_counter()
                llm.generate(prompts, params, use_tqdm=False)
                seconds = time.perf_counter() - t0
            rows = []
            for e in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[: cmd["top"]]:
                rows.append({"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "calls": e.count})
            _reply({"seconds": seconds, "top_ops": rows})
            continue
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        produced = sum(len(o.outputs[0].token_ids) for o in outputs)
        _reply({"seconds": seconds, "output_tokens": produced})


# -- driver side ------------------------------------------------------------------------------------


class Worker:
    def __init__(self, model_dir: str, max_model_len: int, log: Path) -> None:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [str(VLLM_PYTHON), __file__, "--worker", model_dir, "--max-model-len", str(max_model_len)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"vLLM worker exited (code {self.proc.wait()}); see {self.log.name}")

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=120)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _command(argv: list[str] | None) -> str:
    """The command line as run, without machine paths: an absolute path becomes relative to the
    repository when inside it, else its basename (a model directory's is its key in the results)."""
    words = ["python", "benchmarks/vllm_speed.py"]
    for a in sys.argv[1:] if argv is None else argv:
        path = Path(a).expanduser()
        if path.is_absolute():
            try:
                a = str(path.relative_to(REPO))
            except ValueError:
                a = path.name + ("/" if path.is_dir() else "")
        words.append(a)
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help="pruned model directories")
    p.add_argument("--vs", help="the dense model directory (speedups are relative to it)")
    p.add_argument("--batch", type=int, default=16, help="the larger batch (batch 1 is always measured)")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--vocab", type=int, default=None, help="prompt token range (default: the dense config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also profile one large-batch generation per model")
    p.add_argument("--top", type=int, default=12, help="--profile: operators listed")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vllm_speed.json"))
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-model-len", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.max_model_len)
        return 0
    if not VLLM_PYTHON.exists():
        print("error: .venv-vllm is absent: run `make vllm-env` first", file=sys.stderr)
        return 2
    if not args.vs or not args.models:
        print("error: give the pruned model directories and --vs DENSE_DIR", file=sys.stderr)
        return 2
    for d in [args.vs, *args.models]:
        if not (Path(d) / "config.json").is_file():
            print(f"error: {d} is not a model directory (no config.json)", file=sys.stderr)
            return 2
    if args.prompt_len + args.new_tokens > args.max_model_len:
        args.max_model_len = args.prompt_len + args.new_tokens
    import random

    vocab = args.vocab or json.loads((Path(args.vs) / "config.json").read_text())["vocab_size"]
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(vocab) for _ in range(args.prompt_len)] for _ in range(args.batch)]
    batches = {1: prompts[:1], args.batch: prompts}
    names = [args.vs, *args.models]
    keys = {name: Path(name).resolve().name for name in names}  # results are keyed by the directory's basename
    if len(set(keys.values())) < len(names):
        print("error: the model directories need distinct names (the results are keyed by them)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    workers, info = {}, {}
    t_start, load_start = time.time(), list(os.getloadavg())
    import tempfile

    logs = Path(tempfile.mkdtemp(prefix="vllm_speed-"))
    try:
        for i, name in enumerate(names):  # start one at a time (each start imports vLLM)
            workers[name] = Worker(name, args.max_model_len, logs / f"worker{i}.log")
            info[name] = workers[name].read()
        for _ in range(args.warmup):
            for name in names:
                for ps in batches.values():
                    workers[name].ask(op="gen", prompts=ps, new_tokens=args.new_tokens)
        results: dict = {name: {b: [] for b in batches} for name in names}
        for trial in range(args.trials):
            order = names[trial % len(names) :] + names[: trial % len(names)]
            for name in order:
                for b, ps in batches.items():
                    r = workers[name].ask(op="gen", prompts=ps, new_tokens=args.new_tokens)
                    results[name][b].append(r["output_tokens"] / r["seconds"])
            print(
                f"trial {trial + 1}/{args.trials}: "
                + ", ".join(f"{Path(n).name} b{b} {results[n][b][-1]:.1f} tok/s" for n in names for b in batches),
                flush=True,
            )
        profiles = {}
        if args.profile:
            for name in names:
                profiles[name] = workers[name].ask(
                    op="profile", prompts=prompts, new_tokens=args.new_tokens, top=args.top
                )
    finally:
        for w in workers.values():
            w.close()
    dense = results[args.vs]
    report = {
        "command": _command(argv),  # top level: benchmarks/make_results.py shows it
        "protocol": {
            "dense": keys[args.vs],
            "engine": "vllm (CPU, float32, enforce_eager, in-process engine)",
            "batch_sizes": list(batches),
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "trials": args.trials,
            "warmup": args.warmup,
            "interleaved": True,
            "metric": "output tokens/s of LLM.generate (prefill included), median over trials",
            "seed": args.seed,
        },
        "environment": {
            "vllm": info[args.vs]["vllm"],
            "torch": info[args.vs]["torch"],
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "loadavg_start_end": [load_start, list(os.getloadavg())],
            "seconds": time.time() - t_start,
        },
        "models": {},
    }
    for name in names:
        entry = dict(info[name])
        entry.pop("ready", None)
        entry["tok_s"] = {f"b{b}": _summary(v) for b, v in results[name].items()}
        if name != args.vs:
            entry["speedup_vs_dense"] = {
                f"b{b}": statistics.median(results[name][b]) / statistics.median(dense[b]) for b in batches
            }
            entry["parameter_ratio"] = info[args.vs]["parameters"] / info[name]["parameters"]
            entry["block_linear_ratio"] = info[args.vs]["block_linear_weights"] / info[name]["block_linear_weights"]
        if name in profiles:
            entry["profile"] = profiles[name]
        report["models"][keys[name]] = entry
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name in names:
        m = report["models"][keys[name]]
        line = f"{keys[name]}: {m['architecture']}, {m['parameters']:,} params, " + ", ".join(
            f"{k} {v['median']:.1f} tok/s" for k, v in m["tok_s"].items()
        )
        if "speedup_vs_dense" in m:
            line += (
                " | speedup "
                + ", ".join(f"{k} {v:.3f}x" for k, v in m["speedup_vs_dense"].items())
                + f" | dense/pruned params {m['parameter_ratio']:.3f}x, block linears {m['block_linear_ratio']:.3f}x"
            )
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
