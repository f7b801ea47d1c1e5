"""The headline structured table: seven structured methods at 20/30/50 %, one protocol.

SoBP, PG, DISP, Wanda-sp, FLAP, LLM-Pruner and ShortGPT at 20/30/50 % of the
decoder-block linear weights.

Every row shares one protocol: calibration ``--calib-samples`` (default 128) × ``--seqlen``
(default 2048) WikiText-2 train windows, seed 0; perplexity on *all* WikiText-2 test
windows of ``--seqlen`` tokens; ``--device`` (default cpu; ``cuda`` goes through
llmprune's device option, untested for this script). The ratio is the fraction of
decoder-block linear weights removed for every method, so a ratio means one parameter
count: PG runs with ``budget=family`` (KV groups and channels each at the ratio; its final
selection removes ``ratio`` of the block weights, as in ``pg.py``), DISP with
``target=block`` (``disp.py`` uses ``target=total``, the paper's accounting). The achieved
ratio and the parameter count after pruning are recorded per row.

PG against its initialisation: every PG row keeps its keep-best record (``pg_keep_best``:
the top-k mask loss of the initialisation at step 0 and of the shipped mask, on PG's
selection windows of the calibration set; shipped step 0 = no trained mask beat the
initialisation there), and, unless ``--no-pg-init``, a row ``pg RATIO init only
(steps=0)`` evaluates the initial (Wanda-sp) mask itself on the same test windows: the
same mask PG scores at step 0, at the cost of one Wanda-sp scoring pass and one evaluation.

Rows: dense, then ratio by ratio (0.2, 0.3, 0.5), cheapest method first, so a partial file
is already a table of the lower ratios. One results file; a finished row is never redone
with ``--resume`` (the protocol must be equal; a different one is refused, not overwritten).

    python benchmarks/standard.py --resume            # hours on a 2-core CPU: run it in the background
    python benchmarks/standard.py --table             # the markdown table of the results file

Writes ``benchmarks/results/standard.json`` after every row. Reduced settings (fewer than
64 calibration windows, another seqlen, ``--eval-windows``, fewer PG/DISP steps) must name
their own ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from _runner import RESULTS, add_common_args, finish_args, run_plan, shared_protocol
from pg import reset_peaks

from llmprune.methods.disp import DISPConfig
from llmprune.methods.pg import PGConfig
from llmprune.models import count_parameters

NAME = "standard"
# cheapest first within a ratio (inferred from the quick runs' prune seconds; PG and DISP
# train for a fixed number of steps, the others scale with the calibration windows)
METHODS = ("shortgpt", "wanda-sp", "flap", "llm-pruner", "pg", "sobp", "disp")
RATIOS = "0.2,0.3,0.5"
MIN_CALIB = 64  # the issue's floor for "standard"
INIT_LABEL = " init only (steps=0)"  # pg.py's label of the same row


def _default(config, field: str):
    return config.model_fields[field].default


def pg_options(steps: int | None) -> dict:
    """PG's options, every hyperparameter named (method defaults unless overridden)."""
    return {
        "budget": "family",
        "init": _default(PGConfig, "init"),
        "init_samples": _default(PGConfig, "init_samples"),
        "steps": _default(PGConfig, "steps") if steps is None else steps,
        "lr": _default(PGConfig, "lr"),
        "batch_size": 1,
        "samples_per_step": _default(PGConfig, "samples_per_step"),
        "keep_best": _default(PGConfig, "keep_best"),
        "select_samples": _default(PGConfig, "select_samples"),
    }


def disp_options(steps: int | None) -> dict:
    return {
        "target": "block",
        "steps": _default(DISPConfig, "steps") if steps is None else steps,
        "lr": _default(DISPConfig, "lr"),
        "lam": _default(DISPConfig, "lam"),
    }


def build_plan(methods: list[str], ratios: list[str], pg_kw: dict, disp_kw: dict, pg_init: bool) -> list:
    plan: list[tuple[str | None, str, dict]] = [(None, "-", {})]
    for r in ratios:
        ratio = float(r)
        for m in methods:
            kw = pg_kw if m == "pg" else disp_kw if m == "disp" else {}
            plan.append((m, r, {"ratio": ratio, **kw}))
            if m == "pg" and pg_init:
                init_kw = {k: v for k, v in pg_kw.items() if k != "select_samples"}
                plan.append(("pg", r + INIT_LABEL, {"ratio": ratio, **init_kw, "steps": 0, "keep_best": 0}))
    return plan


# -- tables ------------------------------------------------------------------------------------------------------------


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def pg_init_note(r: dict) -> str:
    """'init → shipped (step N)': PG's top-k mask loss on its selection windows."""
    kb = r.get("pg_keep_best")
    if not isinstance(kb, dict) or not kb.get("trace"):
        return "-"
    return f"{kb['trace'][0]['topk_loss']:.3f} → {kb['best_topk_loss']:.3f} (step {kb['best_step']})"


def order(r: dict) -> tuple:
    """Dense first, then by ratio, methods in :data:`METHODS` order, PG's init row after PG."""
    if r["method"] == "dense":
        return (0.0, -1, 0)
    setting = r["setting"].replace(INIT_LABEL, "")
    try:
        ratio = float(setting)
    except ValueError:
        ratio = float("inf")
    rank = METHODS.index(r["method"]) if r["method"] in METHODS else len(METHODS)
    return (ratio, rank, INIT_LABEL in r["setting"])


def markdown(rows: list[dict]) -> str:
    rows = sorted(rows, key=order)
    lines = [
        "| method | ratio | achieved | WikiText-2 ppl | params after | prune s | eval s | peak RSS MiB "
        "| PG top-k loss: init → shipped |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['setting']} | {_fmt(r.get('achieved_ratio'), '.3f')} | {r['ppl']:.2f} | "
            f"{r.get('params_after', '-')} | {_fmt(r.get('prune_seconds'), '.0f')} | "
            f"{_fmt(r.get('eval_seconds'), '.0f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} | {pg_init_note(r)} |"
        )
    if len(rows) > 1:
        lines += ["", pivot(rows)]
    return "\n".join(lines)


def pivot(rows: list[dict]) -> str:
    """Perplexity, one row per method, one column per ratio."""
    ratios = sorted(
        {r["setting"] for r in rows if r["method"] != "dense" and INIT_LABEL not in r["setting"]}, key=float
    )
    names: list[str] = []
    cells: dict[tuple[str, str], float] = {}
    for r in rows:
        name, setting = r["method"], r["setting"]
        if INIT_LABEL in setting:
            name, setting = "pg init (steps=0)", setting.replace(INIT_LABEL, "")
        if name not in names:
            names.append(name)
        cells[(name, setting)] = r["ppl"]
    dense = cells.get(("dense", "-"))
    lines = ["| method | " + " | ".join(f"{float(s):.0%}" for s in ratios) + " |", "|---" + "|---:" * len(ratios) + "|"]
    for n in names:
        vals = [dense if n == "dense" else cells.get((n, s)) for s in ratios]
        lines.append(f"| {n} | " + " | ".join(_fmt(v, ".2f") for v in vals) + " |")
    return "\n".join(lines)


# -- protocol checks ---------------------------------------------------------------------------------------------------


def reduced(args: argparse.Namespace, pg_kw: dict, disp_kw: dict) -> list[str]:
    """Why these settings are not the standard protocol (empty when they are)."""
    why = []
    if args.calib_samples < MIN_CALIB:
        why.append(f"--calib-samples {args.calib_samples} < {MIN_CALIB}")
    if args.seqlen != 2048:
        why.append(f"--seqlen {args.seqlen} != 2048")
    if args.eval_windows is not None:
        why.append(f"--eval-windows {args.eval_windows} (standard: all)")
    if pg_kw["steps"] < _default(PGConfig, "steps"):
        why.append(f"--pg-steps {pg_kw['steps']}")
    if disp_kw["steps"] < _default(DISPConfig, "steps"):
        why.append(f"--disp-steps {disp_kw['steps']}")
    return why


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = list(old) + [k for k in new if k not in old]
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} in the file, {b!r} now")
    return out


def check_out(args: argparse.Namespace, protocol: dict) -> str | None:
    """An error message when running would discard finished rows of ``--out``."""
    out = Path(args.out)
    if args.overwrite or not out.exists():
        return None
    if not args.resume:
        return f"{out} exists: pass --resume to continue it, or --overwrite to start again"
    try:
        old = json.loads(out.read_text()).get("protocol", {})
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{out} is not valid JSON ({exc}): move it away or pass --overwrite"
    diff = differences(old, protocol)
    if diff:
        return (
            f"{out} was run under another protocol, so --resume would discard its rows: "
            + "; ".join(diff)
            + " (restore those settings, or pass --overwrite, or another --out)"
        )
    return None


def describe(protocol: dict) -> str:
    windows = "all" if protocol["eval_windows"] == "all" else f"the first {protocol['eval_windows']}"
    return (
        f"protocol: calibration {protocol['calib_samples']} × {protocol['seqlen']} WikiText-2 train windows "
        f"(seed {protocol['seed']}); perplexity on {windows} WikiText-2 test windows of {protocol['seqlen']} "
        f"tokens; device {protocol['device']}; ratio = {protocol['ratio']}; PG {protocol['pg']}; "
        f"DISP {protocol['disp']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)} (run in this order)")
    p.add_argument("--ratios", default=RATIOS, help=f"fractions of decoder-block linear weights (default {RATIOS})")
    p.add_argument("--pg-steps", type=int, default=None, help="PG steps (default: the method's)")
    p.add_argument("--disp-steps", type=int, default=None, help="DISP hypernetwork steps (default: the method's)")
    p.add_argument("--no-pg-init", action="store_true", help="skip the 'pg RATIO init only (steps=0)' rows")
    p.add_argument("--overwrite", action="store_true", help="start --out again even if it holds finished rows")
    args = p.parse_args(argv)
    if args.quick:
        p.error("standard.py has one protocol: reduce it with --calib-samples/--eval-windows and a separate --out")
    default_out = args.out is None
    args = finish_args(args, NAME)
    if args.table:
        if not Path(args.out).exists():
            print(f"error: {args.out} does not exist yet: run the benchmark first", file=sys.stderr)
            return 2
        return run_plan(args, NAME, {}, [], markdown)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        p.error(f"--methods: choose from {','.join(METHODS)} (got {args.methods!r})")
    methods = [m for m in METHODS if m in methods]
    ratios = [r.strip() for r in args.ratios.split(",") if r.strip()]
    try:
        if not ratios or not all(0.0 < float(r) < 1.0 for r in ratios):
            raise ValueError
    except ValueError:
        p.error(f"--ratios: comma list of fractions in (0, 1) (got {args.ratios!r})")
    pg_kw, disp_kw = pg_options(args.pg_steps), disp_options(args.disp_steps)
    why = reduced(args, pg_kw, disp_kw)
    if why and default_out:
        p.error(f"not the standard protocol ({'; '.join(why)}): name another --out than {RESULTS / 'standard.json'}")
    protocol = shared_protocol(
        args,
        ratio="fraction of decoder-block linear weights removed (PG budget=family, DISP target=block)",
        pg=pg_kw,
        disp=disp_kw,
    )
    error = check_out(args, protocol)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.resume = not args.overwrite  # check_out refused every case where finished rows would be lost
    args.before_run = lambda: reset_peaks(args.device)  # each row's own peak RSS

    def after(model, tok, row: dict) -> dict:
        extra: dict = {"threads": torch.get_num_threads()}
        if row["method"] == "dense":
            extra["params_after"] = count_parameters(model)
        return extra

    args.after_eval = after
    plan = build_plan(methods, ratios, pg_kw, disp_kw, pg_init=not args.no_pg_init)
    print(describe(protocol) + (f" [reduced: {'; '.join(why)}]" if why else ""), flush=True)
    command = shlex.join(["python", "benchmarks/standard.py", *(sys.argv[1:] if argv is None else argv)])
    return run_plan(args, NAME, protocol, plan, markdown, extra={"command": command})


if __name__ == "__main__":
    sys.exit(main())
