"""Zero-shot: our numbers (``llmprune.evaluate(..., zeroshot=...)``) vs lm-eval's own CLI.

Both run on the same saved model directory (default: the cached safetensors copy of
the embedded SmolLM2-135M) and the same task definitions: the lm-eval yamls that
``llmprune.eval.zeroshot_tasks.write_task_dir`` writes for the local data files, which
the CLI reads through ``--include_path``. Ours wraps the model that ``llmprune.load``
returns in ``HFLM``; the CLI loads the directory itself
(``lm_eval run --model hf --model_args pretrained=DIR,dtype=float32``). acc and
acc_norm must agree to the last digit.

    python benchmarks/zeroshot_check.py --limit 100        # check, 100 items per task
    python benchmarks/zeroshot_check.py --no-cli --out benchmarks/results/zeroshot_dense.json
                                                           # full sets, ours only (hours on 2 cores)

Results are written after every task (``--resume`` keeps tasks already in ``--out``).
A long task can be run in parts, in separate sessions or processes (each with its own
``--out``, or one after the other with ``--resume``):

    python benchmarks/zeroshot_check.py --no-cli --tasks hellaswag --items 0:2500 --out F --resume
    python benchmarks/zeroshot_check.py --no-cli --tasks hellaswag --items 2500:5000 --out F --resume  # ...
    python benchmarks/zeroshot_check.py --merge-parts PART.json ... --out F   # join parts from other files

lm-eval's CLI alone, against scores ours saved before (full sets, or one part with ``--items``,
passed to the CLI as its ``--samples``):

    python benchmarks/zeroshot_check.py --cli-against F --tasks boolq --out CHECK.json --resume

Parts are kept under ``tasks[task]["parts"]["START:END"]``; once they tile the whole
file, the task's full-set score (``ours``) is their item-weighted mean
(``llmprune.eval.zeroshot.merge_item_ranges``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import llmprune
from llmprune.api import environment
from llmprune.eval.zeroshot import lm_eval_version, mean_accuracy, merge_item_ranges, parse_items
from llmprune.eval.zeroshot_tasks import TASKS, locate, parse_tasks, write_task_dir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_DATA = HERE.parent.parent / "shared" / "data"  # the offline data folder beside the checkout
METRICS = ("acc", "acc_norm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model directory (default: cached SmolLM2-135M safetensors)")
    p.add_argument("--tasks", default="all", help="comma list or all (the seven tasks)")
    p.add_argument("--limit", type=int, default=None, help="first N items per task (default: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding zeroshot/")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for our run (default torch's); 1 is much faster on a CPU shared with another job",
    )
    p.add_argument("--no-cli", action="store_true", help="only our numbers (no lm-eval CLI comparison)")
    p.add_argument("--out", default=None, help="default benchmarks/results/zeroshot_check.json")
    p.add_argument("--resume", action="store_true", help="keep tasks (and task parts) already in --out")
    p.add_argument(
        "--items",
        default=None,
        metavar="START:END",
        help="only items START..END-1 of each task, saved as a part of it (needs --no-cli)",
    )
    p.add_argument(
        "--cli-against",
        default=None,
        metavar="JSON",
        help="run only lm-eval's CLI and compare it with our scores already saved in this file "
        "(its full-set entries, or with --items that part); writes the comparison to --out",
    )
    p.add_argument(
        "--merge-parts",
        nargs="+",
        default=None,
        metavar="JSON",
        help="copy the task parts of these result files into --out and join complete tasks; no model run",
    )
    args = p.parse_args(argv)
    args.out = args.out or str(RESULTS / "zeroshot_check.json")
    if args.items is not None:
        if not args.no_cli and not args.cli_against:
            p.error("--items runs our side only: add --no-cli")
        if args.limit is not None:
            p.error("--limit and --items both choose items: give one of them")
        start, end = parse_items(args.items)
        args.items = f"{start}:{end}"
    return args


def model_dir(spec: str | None) -> Path:
    if spec:
        return Path(spec).expanduser().resolve()
    from llmprune.models.loading import default_model_dir

    return default_model_dir()


def run_cli(
    directory: Path, task_dir: Path, task: str, args: argparse.Namespace, rows: int
) -> tuple[dict, dict, list[str]]:
    """lm-eval's CLI on one task (``rows`` items in its file); returns its results entry,
    sample counts and the command."""
    name = TASKS[task].lm_eval_name
    with tempfile.TemporaryDirectory(prefix="lm-eval-out-") as out:
        cmd = [
            sys.executable,
            "-m",
            "lm_eval",
            "run",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={directory},dtype=float32",
            "--tasks",
            name,
            "--include_path",
            str(task_dir),
            "--batch_size",
            str(args.batch_size),
            "--device",
            "cpu",
            "--output_path",
            out,
        ]
        if args.limit is not None:
            cmd += ["--limit", str(args.limit)]
        if args.items is not None:  # the same items ours scores (lm-eval's samples option on both sides)
            start, end = (int(x) for x in args.items.split(":"))
            end = min(end, rows)
            cmd += ["--samples", json.dumps({name: list(range(start, end))})]
        env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"lm_eval CLI failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        files = sorted(Path(out).rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
        if not files:
            raise SystemExit(f"lm_eval CLI wrote no results_*.json under {out}:\n{proc.stderr[-3000:]}")
        data = json.loads(files[-1].read_text())
    return data["results"][name], data.get("n-samples", {}).get(name, {}), cmd


def compare(ours: dict, cli: dict, task: str) -> dict:
    """Exact comparison of every metric lm-eval defines for ``task``."""
    rows = {}
    for metric in METRICS:
        if metric not in TASKS[task].metrics:
            continue
        theirs = cli.get(f"{metric},none")
        rows[metric] = {"ours": ours[metric], "lm_eval_cli": theirs, "equal": ours[metric] == theirs}
    return rows


def load_previous(path: Path, resume: bool) -> dict:
    if resume and path.is_file():
        return json.loads(path.read_text())
    return {}


def add_part(tasks: dict, task: str, ours: dict, protocol: dict, seconds: float) -> None:
    """Record one item range of ``task``; when the ranges tile the file, fill the full-set entry."""
    start, end = protocol["items"]
    entry = tasks.setdefault(task, {})
    entry.setdefault("parts", {})[f"{start}:{end}"] = {"ours": ours, "protocol": protocol, "ours_seconds": seconds}
    join_parts(entry)


def join_parts(entry: dict) -> None:
    parts = list(entry.get("parts", {}).values())
    if not parts:
        return
    total = parts[0]["protocol"]["n_available"]
    if sum(p["ours"]["n"] for p in parts) != total:
        return  # not complete yet (merge_item_ranges checks the tiling once the counts add up)
    entry["ours"] = merge_item_ranges([{**p["ours"], "items": p["protocol"]["items"]} for p in parts], total)
    entry["protocol"] = {
        **parts[0]["protocol"],
        "items": None,
        "n": total,
        "assembled_from": sorted((p["protocol"]["items"] for p in parts), key=lambda r: r[0]),
    }
    entry["ours_seconds"] = round(sum(p["ours_seconds"] for p in parts), 1)


def complete(entry: dict | None) -> bool:
    return bool(entry) and "ours" in entry


def summarize(result: dict, no_cli: bool) -> None:
    scores = {t: e["ours"] for t, e in result["tasks"].items() if complete(e)}
    result["mean_acc"] = mean_accuracy(scores, "acc")
    result["mean_acc_norm"] = mean_accuracy(scores, "acc_norm")
    if not no_cli:
        result["all_equal"] = all(e.get("equal", False) for e in result["tasks"].values())


def merge_files(args: argparse.Namespace) -> int:
    """--merge-parts: copy every task part of the given files into --out; join complete tasks."""
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else None
    for name in args.merge_parts:
        data = json.loads(Path(name).read_text())
        if result is None:
            result = {**data, "tasks": {}}
        for task, entry in data.get("tasks", {}).items():
            for part in entry.get("parts", {}).values():
                add_part(result["tasks"], task, part["ours"], part["protocol"], part["ours_seconds"])
    if result is None:
        raise SystemExit("--merge-parts: no input files")
    summarize(result, True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    for task, entry in result["tasks"].items():
        state = (
            f"acc {entry['ours']['acc']:.4f} n {entry['ours']['n']}"
            if complete(entry)
            else "parts " + ", ".join(entry.get("parts", {}))
        )
        print(f"{task}: {state}")
    return 0


def cli_against(args: argparse.Namespace) -> int:
    """--cli-against FILE: lm-eval's CLI on the tasks (or the --items part) whose scores
    ours already saved in FILE, compared to the last digit; no run of ours."""
    source = Path(args.cli_against)
    if not source.is_file():
        raise SystemExit(
            f"error: --cli-against {source}: no such file: run the tasks with --no-cli --out {source} first"
        )
    saved = json.loads(source.read_text())
    names = parse_tasks(args.tasks)
    directory = model_dir(args.model)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "zeroshot_cli_check",
        "protocol": {
            "model": args.model or "smollm2-135m (cached safetensors copy)",
            "ours_from": f"{source.name} (protocol there; model there: {saved['protocol'].get('model')})",
            "lm_eval": lm_eval_version(),
            "batch_size": args.batch_size,
            "limit": args.limit,
            "lm_eval_cli": "python -m lm_eval run --model hf --model_args pretrained=DIR,dtype=float32 --tasks "
            "llmprune_<task> --include_path TASKS --batch_size B --device cpu "
            "[--samples '{\"llmprune_<task>\": [START..END-1]}']",
        },
        "environment": environment(),
        "tasks": dict(load_previous(out_path, args.resume).get("tasks", {})),
    }
    with tempfile.TemporaryDirectory(prefix="llmprune-check-tasks-") as tmp:
        files = {t: locate(TASKS[t], args.data_dir) for t in names}
        task_dir = write_task_dir(list(files.values()), tmp)
        for task in names:
            key = f"{task} {args.items}" if args.items else task
            if key in result["tasks"]:
                print(f"{key}: kept from {out_path}", flush=True)
                continue
            entry = saved.get("tasks", {}).get(task) or {}
            ours = entry.get("parts", {}).get(args.items, {}).get("ours") if args.items else entry.get("ours")
            if ours is None:
                what = f"part {args.items} of {task}" if args.items else f"a full-set score of {task}"
                raise SystemExit(f"error: {source} has no {what}: run it with --no-cli first")
            t0 = time.perf_counter()
            cli, counts, _ = run_cli(directory, task_dir, task, args, files[task].rows)
            row = {
                "ours": ours,
                "lm_eval_cli": {k: v for k, v in cli.items() if k != "alias"},
                "lm_eval_cli_n": counts,
                "cli_seconds": round(time.perf_counter() - t0, 1),
                "comparison": compare(ours, cli, task),
            }
            row["equal"] = (
                all(c["equal"] for c in row["comparison"].values()) and int(counts.get("effective", -1)) == ours["n"]
            )
            result["tasks"][key] = row
            result["all_equal"] = all(r["equal"] for r in result["tasks"].values())
            out_path.write_text(json.dumps(result, indent=2) + "\n")
            print(
                f"{key}: ours acc {ours['acc']:.4f} n {ours['n']} | lm-eval CLI acc {cli.get('acc,none'):.4f} "
                f"n {counts.get('effective')} ({row['cli_seconds']} s) {'EQUAL' if row['equal'] else 'DIFFERENT'}",
                flush=True,
            )
    print("all equal" if result.get("all_equal") else "MISMATCH", flush=True)
    return 0 if result.get("all_equal") else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge_parts:
        return merge_files(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.cli_against:
        return cli_against(args)
    names = parse_tasks(args.tasks)
    directory = model_dir(args.model)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    previous = load_previous(out_path, args.resume)
    result = {
        "benchmark": "zeroshot_check" if not args.no_cli else "zeroshot",
        "protocol": {
            "model": args.model or "smollm2-135m (cached safetensors copy)",
            "dtype": "float32",
            "limit": args.limit,
            "batch_size": args.batch_size,
            "num_fewshot": 0,
            "lm_eval": lm_eval_version(),
            "device": "cpu",
            "threads": args.threads,
            "ours": "llmprune.load(DIR) -> llmprune.evaluate(..., zeroshot=[task]) (HFLM over the model)",
            "lm_eval_cli": None
            if args.no_cli
            else "python -m lm_eval run --model hf --model_args pretrained=DIR,dtype=float32 --tasks "
            "llmprune_<task> --include_path TASKS --batch_size B --device cpu [--limit N]",
        },
        "environment": environment(),
        "tasks": dict(previous.get("tasks", {})),
    }
    model, tok = llmprune.load(str(directory))
    with tempfile.TemporaryDirectory(prefix="llmprune-check-tasks-") as tmp:
        files = {t: locate(TASKS[t], args.data_dir) for t in names}
        task_dir = write_task_dir(list(files.values()), tmp)
        rows = {t: f.rows for t, f in files.items()}
        for task in names:
            entry = result["tasks"].get(task)
            if complete(entry) or (args.items and args.items in (entry or {}).get("parts", {})):
                print(f"{task}{' ' + args.items if args.items else ''}: kept from {out_path}", flush=True)
                continue
            t0 = time.perf_counter()
            ours = llmprune.evaluate(
                model,
                tok,
                zeroshot=[task],
                limit=args.limit,
                data_dir=args.data_dir,
                batch_size=args.batch_size,
                items=args.items,
            )
            seconds = round(time.perf_counter() - t0, 1)
            if args.items:
                add_part(result["tasks"], task, ours["zeroshot"][task], ours["protocol"][task], seconds)
                summarize(result, args.no_cli)
                out_path.write_text(json.dumps(result, indent=2) + "\n")
                print(
                    f"{task} {ours['protocol'][task]['items']}: ours acc {ours['zeroshot'][task]['acc']:.4f} "
                    f"n {ours['zeroshot'][task]['n']} ({seconds} s)"
                    + (
                        f"; full set assembled: acc {result['tasks'][task]['ours']['acc']:.4f}"
                        if complete(result["tasks"][task])
                        else ""
                    ),
                    flush=True,
                )
                continue
            entry = {"ours": ours["zeroshot"][task], "protocol": ours["protocol"][task], "ours_seconds": seconds}
            line = f"{task}: ours acc {entry['ours']['acc']:.4f} n {entry['ours']['n']} ({entry['ours_seconds']} s)"
            if not args.no_cli:
                t0 = time.perf_counter()
                cli, counts, _ = run_cli(directory, task_dir, task, args, rows[task])
                entry["lm_eval_cli"] = {k: v for k, v in cli.items() if k != "alias"}
                entry["lm_eval_cli_n"] = counts
                entry["cli_seconds"] = round(time.perf_counter() - t0, 1)
                entry["comparison"] = compare(entry["ours"], cli, task)
                entry["equal"] = (
                    all(c["equal"] for c in entry["comparison"].values())
                    and int(counts.get("effective", -1)) == entry["ours"]["n"]
                )
                line += (
                    f" | lm-eval CLI acc {cli.get('acc,none'):.4f} ({entry['cli_seconds']} s) "
                    f"{'EQUAL' if entry['equal'] else 'DIFFERENT'}"
                )
            result["tasks"][task] = entry
            summarize(result, args.no_cli)
            out_path.write_text(json.dumps(result, indent=2) + "\n")
            print(line, flush=True)
    if not args.no_cli:
        print("all equal" if result["all_equal"] else "MISMATCH", flush=True)
        return 0 if result["all_equal"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
