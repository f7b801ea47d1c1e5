"""Generate docs/results.md and the README's headline table from benchmarks/results/*.json.

Nothing in docs/results.md or between the README's ``<!-- results:headline -->`` markers is
written by hand: every number is read from a JSON file here. Other pages may embed a table
of this script's with ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``; the block is
rewritten too (``NAME`` is one of :data:`BLOCKS`' keys once :func:`build` ran).

    python benchmarks/make_results.py            # rewrite docs/results.md, README.md, docs/**/*.md blocks
    python benchmarks/make_results.py --check    # exit 1 if any of them is out of date

A JSON file without a dedicated renderer below gets a generic section (its ``runs`` as a
table, or its scalar fields) and a note on stderr, so new benchmarks appear without
editing this script; give it a renderer when the generic table is not readable.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_MD = ROOT / "docs" / "results.md"
README = ROOT / "README.md"

# Commands that produced files whose JSON does not record its command (copied from the
# notes written when each file was made). A JSON's own "command" field takes precedence.
COMMANDS: dict[str, list[str]] = {
    "unstructured_quick.json": [
        "python benchmarks/unstructured.py --quick --settings 0.5,2:4,0.7,4:8",
    ],
    "mrp_vs_sparsegpt_quick.json": [
        "OMP_NUM_THREADS=1 python benchmarks/mrp_vs_sparsegpt.py --quick --resume --settings S --out F",
        "# two one-thread processes side by side, S = 0.5,0.7,2:4,0.8 and 0.5,0.6,4:8 (the 0.5 pair from an "
        "earlier run), merged into this file",
    ],
    "mrp_vs_sparsegpt_nm_quick.json": [
        "OMP_NUM_THREADS=1 python benchmarks/mrp_vs_sparsegpt.py --quick --settings 2:4,4:8 "
        "--out benchmarks/results/mrp_vs_sparsegpt_nm_quick.json --note '...'",
    ],
    "structured_quick.json": [
        "OMP_NUM_THREADS=1 python benchmarks/structured.py --quick --calib-samples 8 --eval-windows 8 "
        "--ratios 0.2,0.3,0.4 --no-ablation --sobp-refit-target module",
        "# after the stage-3 change the SoBP rows were removed from the JSON and rerun (models kept for zero-shot):",
        "OMP_NUM_THREADS=1 python benchmarks/structured.py --quick --calib-samples 8 --eval-windows 8 "
        "--ratios 0.2,0.3,0.4 --methods sobp --no-ablation --resume --save-models DIR --sobp-refit-target module",
    ],
    "structured_quick_baselines.json": [
        "OMP_NUM_THREADS=1 python benchmarks/structured.py --quick --calib-samples 8 --eval-windows 8 --ratios 0.3,0.4 "
        "--methods shortgpt,llm-pruner,flap,wanda-sp --no-ablation "
        "--out benchmarks/results/structured_quick_baselines.json",
    ],
    "structured_ablation_quick.json": [
        "OMP_NUM_THREADS=1 python benchmarks/structured.py --quick --calib-samples 8 --eval-windows 8 --ablation-only "
        "--sobp-refit-target module --out benchmarks/results/structured_ablation_quick.json",
    ],
    "pg_seqlen512.json": [
        "OMP_NUM_THREADS=1 python benchmarks/pg.py --quick --seqlen 512 --calib-samples 32 --eval-windows 24 "
        "--steps 100 "
        "--lr 0.05 --keep-best 0 --ratios 0.2,0.3,0.4 --baselines wanda-sp,sobp "
        "--out benchmarks/results/pg_seqlen512.json",
        "# run when lr 0.05 and keep-best 0 were the defaults (without those two flags); SoBP's stage 3 then fitted "
        "the module target, the default of that time",
    ],
    "pg_seqlen512_keepbest.json": [
        "OMP_NUM_THREADS=1 python benchmarks/pg.py --quick --seqlen 512 --calib-samples 32 --eval-windows 24 "
        "--steps 100 "
        '--lr 0.05 --ratios 0.2 --baselines "" --no-init-ablation --keep-best 10 '
        "--out benchmarks/results/pg_seqlen512_keepbest.json",
    ],
    "pg_seqlen512_lr001.json": [
        "OMP_NUM_THREADS=1 python benchmarks/pg.py --quick --seqlen 512 --calib-samples 32 --eval-windows 24 "
        "--steps 100 "
        '--lr 0.01 --keep-best 10 --baselines "" --no-init-ablation --ratios R',
        "# one process per ratio R, joined in this file",
    ],
    "disp_seqlen512.json": [
        "OMP_NUM_THREADS=1 python benchmarks/disp.py --quick --seqlen 512 --calib-samples 32 --eval-windows 24 "
        "--steps 200 --pg-steps 100 --fractions 0.5,0.3 --speed-trials 0 --save-models DIR "
        "--out benchmarks/results/disp_seqlen512.json",
        "# then, with nothing else running, the speed columns:",
        "python benchmarks/disp.py --quick --out benchmarks/results/disp_seqlen512.json --speed-saved DIR "
        "--speed-trials 5",
    ],
    "sobp_stage3.json": [
        "OMP_NUM_THREADS=1 python benchmarks/sobp_stage3.py --seqlen S --calib-samples N --eval-windows W --variants V "
        "[--diagnose]",
        "# one process per row; the rows whose 'source' says otherwise came from the runs named there",
    ],
    "zeroshot_check.json": ["python benchmarks/zeroshot_check.py --limit 100"],
    "zeroshot_check_full.json": [
        "OMP_NUM_THREADS=1 python benchmarks/zeroshot_check.py --cli-against benchmarks/results/zeroshot_dense.json "
        "--tasks T [--items 0:500] --out F --resume",
    ],
    "zeroshot_dense.json": [
        "OMP_NUM_THREADS=1 python benchmarks/zeroshot_check.py --no-cli --threads 1 --tasks TASKS "
        "--out benchmarks/results/zeroshot_dense.json --resume",
        "# HellaSwag in parts: ... --tasks hellaswag --items START:END (the parts are joined by item counts)",
    ],
    "zeroshot_sobp20.json": [
        "OMP_NUM_THREADS=1 python benchmarks/zeroshot_check.py --no-cli --threads 1 --tasks TASKS --model DIR/sobp_0.2 "
        "--out benchmarks/results/zeroshot_sobp20.json --resume",
        "# DIR/sobp_0.2: the sobp 0.2 model of structured_quick.json, saved with --save-models",
    ],
}

# What each variant of benchmarks/sobp_stage3.py means (its --variants syntax).
SOBP_VARIANTS = {
    "off": "stage 3 off",
    "zero:0.01": "ridge towards zero, damp 0.01",
    "zero:0.0001": "ridge towards zero, damp 1e-4",
    "zero:0.01, position 0 of every window left out of the fit": (
        "ridge towards zero, position 0 of each window left out"
    ),
    "current:0.01": "module target, ridge towards the stage-2 weights, damp 0.01",
    "current:heldout": "module target, ridge towards the stage-2 weights, damp chosen per module by held-out error",
    "stream+current:0.01": "stream target, damp 0.01",
    "stream+current:heldout": "stream target, held-out damp",
    "rms+current:0.01": "module target, error weighted by 1/rms(h)^2",
    "rms+stream+current:0.01": "stream target, error weighted by 1/rms(h)^2",
    "norefine+stream+current:0.01": "stage 2 off (no greedy OBS), stream target",
    "uniform+stream+current:0.01": "stage 1 off (uniform counts), stream target",
}

BLOCKS: dict[str, str] = {}  # name -> markdown table, filled by the renderers


# -- formatting ------------------------------------------------------------------------------------------------------


def fnum(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def ppl(v: Any) -> str:
    return fnum(v, 2)


def secs(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def pct(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f} %"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def block(name: str, text: str) -> str:
    BLOCKS[name] = text
    return text


def flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, scalar) pairs of a nested JSON value; lists of objects are summarised by their length."""
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        return [(prefix, ", ".join(str(x) for x in d))]
    if isinstance(d, list):
        return [(prefix, f"[{len(d)} entries]")]
    return [(prefix, d)]


def protocol_lines(d: dict) -> list[str]:
    lines = []
    proto = d.get("protocol")
    if isinstance(proto, dict):
        lines.append("Protocol (from the JSON): " + "; ".join(f"{k} = {fnum(v, 4)}" for k, v in flat(proto)))
    env = d.get("environment")
    if isinstance(env, dict):
        lines.append("Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    for key in ("note", "scope", "plan_rule"):
        if isinstance(d.get(key), str):
            lines.append(("Note" if key == "note" else key.replace("_", " ").capitalize()) + f": {d[key]}")
    return lines


def command_block(name: str, d: dict) -> str:
    recorded = next((d[k] for k in ("command", "lm_eval_cli_command") if isinstance(d.get(k), str)), None)
    cmds = [recorded] if recorded else COMMANDS.get(name)
    if not cmds:
        return "Command: not recorded in the JSON."
    src = "recorded in the JSON" if recorded else "as run"
    return f"Command ({src}):\n\n```bash\n" + "\n".join(cmds) + "\n```"


def eval_line(run: dict) -> str:
    p = run.get("protocol") or {}
    if not p.get("dataset"):
        return ""
    return (
        f"Perplexity: {p.get('dataset')} {p.get('split')}, first {p.get('windows')} of {p.get('windows_available')} "
        f"windows of {p.get('seqlen')} tokens ({fnum(p.get('tokens_scored'))} tokens scored), {p.get('text')}, "
        f"{p.get('windows_kind')}."
    )


def short_protocol(d: dict) -> str:
    """'calib N × L, first W test windows of L' from a benchmark file's protocol."""
    p = d["protocol"]
    return (
        f"calibration {p['calib_samples']} × {p['seqlen']} WikiText-2 train tokens, first {p['eval_windows']} "
        f"WikiText-2 test windows of {p['seqlen']}"
    )


def runs_of(d: dict) -> list[dict]:
    return [r for r in d.get("runs", []) if isinstance(r, dict)]


def dense_ppl(d: dict) -> float | None:
    return next((r["ppl"] for r in runs_of(d) if r.get("method") == "dense"), None)


def find(d: dict, method: str, setting: str) -> dict:
    for r in runs_of(d):
        if r.get("method") == method and r.get("setting") == setting:
            return r
    raise KeyError(f"no run {method} {setting!r}")


# -- renderers (one per benchmark file) ------------------------------------------------------------------------------


def r_unstructured(name: str, d: dict, data: dict) -> str:
    rows = [
        [
            r["method"],
            r["setting"],
            ppl(r["ppl"]),
            fnum(r.get("block_sparsity"), 4),
            fnum(r.get("params_after")),
            fnum(r.get("prune_seconds"), 2),
            fnum(r.get("peak_rss_mb"), 1),
        ]
        for r in runs_of(d)
    ]
    return block(
        "unstructured",
        table(
            [
                "method",
                "setting",
                "WikiText-2 ppl",
                "block sparsity",
                "non-zero params after",
                "prune s",
                "peak RSS MiB",
            ],
            rows,
            "llrrrrr",
        ),
    ) + _nm_rerun_note(d, data)


def _nm_rerun_note(d: dict, data: dict) -> str:
    """SparseGPT's N:M perplexities with the published rule, from MRP_NM_RERUN (same protocol)."""
    rerun = data.get(MRP_NM_RERUN)
    if rerun is None or not _same_eval(d, rerun):
        return ""
    cells = []
    for r in runs_of(d):
        if r.get("method") == "sparsegpt" and ":" in r.get("setting", ""):
            try:
                new = find(rerun, "sparsegpt", r["setting"])
            except KeyError:
                continue
            cells.append(f"{r['setting']} {ppl(new['ppl'])} (was {ppl(r['ppl'])})")
    if not cells:
        return ""
    return f"\n\nSparseGPT with the published N:M rule, same protocol (`{MRP_NM_RERUN}`): " + "; ".join(cells) + "."


MRP_NM_RERUN = "mrp_vs_sparsegpt_nm_quick.json"  # the N:M rows rerun with SparseGPT's published N:M rule


def _same_eval(a: dict, b: dict) -> bool:
    keys = ("model", "seqlen", "calib_samples", "eval_windows", "device")
    return all(a.get("protocol", {}).get(k) == b.get("protocol", {}).get(k) for k in keys)


def r_mrp(name: str, d: dict, data: dict) -> str:
    """SparseGPT against MRP per setting. In the quick file's table the N:M settings that
    MRP_NM_RERUN holds (same protocol) are taken from the rerun and marked, the rest as measured."""
    dense = dense_ppl(d)
    rows = [["dense", ppl(dense), ppl(dense), "", "-", "-", "-"]]
    settings = [r["setting"] for r in runs_of(d) if r["method"] == "sparsegpt"]
    rerun = data.get(MRP_NM_RERUN) if name != MRP_NM_RERUN else None
    if rerun is not None and not _same_eval(d, rerun):
        rerun = None
    for s in settings:
        src = d
        if rerun is not None and ":" in s:
            try:
                find(rerun, "sparsegpt", s), find(rerun, "mrp", s)
                src = rerun
            except KeyError:
                pass
        try:
            a, b = find(src, "sparsegpt", s), find(src, "mrp", s)
        except KeyError:
            continue  # a setting whose MRP row has not been run yet
        label = f"{float(s) * 100:.0f} %" if ":" not in s else s
        if src is not d:
            label += " (rerun, published N:M rule)"
        rows.append(
            [
                label,
                ppl(a["ppl"]),
                ppl(b["ppl"]),
                f"{100 * (b['ppl'] / a['ppl'] - 1):+.1f} %",
                secs(a["prune_seconds"]),
                secs(b["prune_seconds"]),
                f"{b['prune_seconds'] / a['prune_seconds']:.2f}",
            ]
        )
    return block(
        "mrp" if name != MRP_NM_RERUN else "mrp-nm",
        table(
            [
                "sparsity",
                "SparseGPT ppl",
                "MRP ppl",
                "MRP change",
                "SparseGPT prune s",
                "MRP prune s",
                "MRP / SparseGPT time",
            ],
            rows,
        ),
    )


def _structured_runs(data: dict) -> list[dict]:
    runs = []
    for f in ("structured_quick.json", "structured_quick_baselines.json"):
        runs += [dict(r, _file=f) for r in runs_of(data.get(f, {})) if r.get("method") != "dense"]
    return runs


def r_structured(name: str, d: dict, data: dict) -> str:
    rows = [
        [
            r["method"],
            r["setting"],
            fnum(r.get("achieved_ratio"), 3),
            ppl(r["ppl"]),
            fnum(r.get("params_after")),
            secs(r.get("prune_seconds")),
            secs(r.get("peak_rss_mb")),
        ]
        for r in sorted(runs_of(d), key=lambda r: (r["setting"], r["method"]))
        if r["method"] != "dense"
    ]
    rows.insert(0, ["dense", "-", "-", ppl(dense_ppl(d)), "-", "-", "-"])
    return table(
        ["method", "ratio", "achieved", "WikiText-2 ppl", "params after", "prune s", "peak RSS MiB"], rows, "llrrrrr"
    )


def structured_pivot(data: dict) -> str:
    runs = _structured_runs(data)
    dense = dense_ppl(data["structured_quick.json"])
    ratios = sorted({r["setting"] for r in runs})
    methods = ["sobp", "shortgpt", "llm-pruner", "flap", "wanda-sp"]
    methods += sorted({r["method"] for r in runs} - set(methods))
    rows = [["dense"] + [ppl(dense)] * len(ratios)]
    for m in methods:
        cells = []
        for s in ratios:
            hit = [r for r in runs if r["method"] == m and r["setting"] == s]
            cells.append(ppl(hit[0]["ppl"]) if hit else "-")
        rows.append([m] + cells)
    return block("structured", table(["method"] + [f"{float(s) * 100:.0f} %" for s in ratios], rows))


SOBP_ABLATION_LABELS = {
    "0.3 sobp-no-global": "stage 1 off: uniform counts per block (`global_selection=false`)",
    "0.3 sobp-no-refine": "stage 2 off (`refine=false`)",
    "0.3 sobp-no-reconstruct": "stage 3 off (`reconstruct=false`)",
    "0.3 sobp-refit-zero": "stage 3 as ridge towards zero (`refit_prior=zero`, the earlier default)",
}


def r_sobp_ablation(name: str, d: dict, data: dict) -> str:
    full = find(data["structured_quick.json"], "sobp", "0.3")
    rows = [["all three stages (module target)", ppl(full["ppl"]), secs(full["prune_seconds"])]]
    for r in runs_of(d):
        rows.append([SOBP_ABLATION_LABELS.get(r["setting"], r["setting"]), ppl(r["ppl"]), secs(r["prune_seconds"])])
    return block("sobp-ablation", table(["SoBP at 30 %, 8 × 2048 calibration", "WikiText-2 ppl", "prune s"], rows))


def _stage3_key(r: dict) -> tuple:
    p = r["protocol"]
    return (p["seqlen"], p["calib_samples"], p["eval_windows"])


def r_sobp_stage3(name: str, d: dict, data: dict) -> str:
    runs = runs_of(d)
    groups: dict[tuple, list[dict]] = {}
    sources: list[str] = []
    for r in runs:
        groups.setdefault(_stage3_key(r), []).append(r)
    parts = []
    for (seqlen, n, w), rs in sorted(groups.items()):
        rows = []
        for r in rs:
            src = r.get("source", "this benchmark")
            if src not in sources:
                sources.append(src)
            rows.append(
                [
                    f"`{r['variant']}`",
                    SOBP_VARIANTS.get(r["variant"], ""),
                    ppl(r.get("test_ppl")),
                    ppl(r.get("calib_ppl")),
                    secs(r.get("seconds_without_stage1")),
                    "yes" if "diagnosis_test" in r else "",
                    f"[{sources.index(src) + 1}]",
                ]
            )
        text = table(
            [
                "variant",
                "meaning",
                "test ppl",
                "ppl on the calibration windows",
                "s without stage 1",
                "diagnosis",
                "source",
            ],
            rows,
            "llrrrll",
        )
        if (seqlen, n) == (2048, 32):
            order = ["stream+current:0.01", "uniform+stream+current:0.01", "norefine+stream+current:0.01", "off"]
            labels = ["all three stages", "stage 1 off (uniform counts)", "stage 2 off (no greedy OBS)", "stage 3 off"]
            by = {r["variant"]: r for r in rs}
            block(
                "sobp-ablation-32x2048",
                table(
                    [
                        "SoBP at 30 %, 32 × 2048 calibration",
                        "variant",
                        "WikiText-2 ppl",
                        "ppl on calibration windows",
                        "s without stage 1",
                    ],
                    [
                        [
                            lab,
                            f"`{v}`",
                            ppl(by[v]["test_ppl"]),
                            ppl(by[v]["calib_ppl"]),
                            secs(by[v]["seconds_without_stage1"]),
                        ]
                        for v, lab in zip(order, labels, strict=True)
                        if v in by
                    ],
                    "llrrr",
                ),
            )
        parts.append(f"Ratio 0.3, seqlen {seqlen}, calibration {n} × {seqlen}, {w} test windows of {seqlen}:\n\n{text}")
    out = "\n\n".join(parts) + "\n\nSources: " + "; ".join(f"[{i + 1}] {s}" for i, s in enumerate(sources)) + "."
    small = [r for r in runs if r["protocol"]["seqlen"] == 512]
    block(
        "sobp-stage3-512",
        table(
            ["calibration", "stage 3", "test ppl", "ppl on the calibration windows"],
            [
                [
                    f"{r['protocol']['calib_samples']} × 512",
                    SOBP_VARIANTS.get(r["variant"], r["variant"]),
                    ppl(r["test_ppl"]),
                    ppl(r.get("calib_ppl")),
                ]
                for r in sorted(small, key=lambda r: r["protocol"]["calib_samples"])
                if "diagnosis_test" not in r
            ],
            "llrr",
        ),
    )
    diag = [r for r in runs if "diagnosis_test" in r]
    if diag:
        hdr = ["block"]
        for r in diag:
            hdr += [f"{r['variant']} test", f"{r['variant']} calib"]
        nblocks = len(diag[0]["diagnosis_test"]["relative_stream_error"])
        rows = []
        for b in range(nblocks):
            row = [str(b)]
            for r in diag:
                row += [
                    f"{r['diagnosis_test']['relative_stream_error'][b]:.4f}",
                    f"{r['diagnosis_calib']['relative_stream_error'][b]:.4f}",
                ]
            rows.append(row)
        row = ["KL to dense"]
        for r in diag:
            row += [f"{r['diagnosis_test']['kl_to_dense']:.3f}", f"{r['diagnosis_calib']['kl_to_dense']:.3f}"]
        rows.append(row)
        text = table(hdr, rows)
        block("sobp-diagnosis", text)
        out += (
            "\n\nDiagnosis (`--diagnose`, 64 × 512): mean per-token relative distance of each block's output to "
            "the dense model's, and KL of the next-token distribution to the dense one:\n\n" + text
        )
    return out


def pg_table(data: dict) -> str:
    lr001, old = data["pg_seqlen512_lr001.json"], data["pg_seqlen512.json"]
    rows = [["dense", ppl(dense_ppl(lr001)), "", "", "", "", "", ""]]
    for s in ("0.2", "0.3", "0.4"):
        a = find(lr001, "pg", f"{s} keep-best 10")
        rows.append(
            [
                f"{float(s) * 100:.0f} %",
                ppl(a["ppl"]),
                ppl(find(old, "pg", s)["ppl"]),
                ppl(find(old, "pg", f"{s} init only (steps=0)")["ppl"]),
                ppl(find(old, "wanda-sp", s)["ppl"]),
                ppl(find(old, "sobp", s)["ppl"]),
                secs(a.get("train_seconds")),
                f"{a['peak_rss_mb']:.0f} / {a['plain_inference_peak_rss_mb']:.0f} MiB = "
                f"{a['peak_rss_over_plain_inference']:.2f}×",
            ]
        )
    return block(
        "pg",
        table(
            [
                "ratio",
                "PG, lr 0.01, keep-best 10",
                "PG, lr 0.05, last mask",
                "PG init only (steps = 0)",
                "Wanda-sp",
                "SoBP (module target)",
                "PG train s (lr 0.01)",
                "PG peak RSS / plain inference (lr 0.01)",
            ],
            rows,
        ),
    )


def r_pg(name: str, d: dict, data: dict) -> str:
    rows = []
    for r in runs_of(d):
        rows.append(
            [
                r["method"],
                r["setting"],
                ppl(r["ppl"]),
                fnum(r.get("achieved_ratio"), 3),
                fnum(r.get("params_after")),
                secs(r.get("train_seconds")),
                secs(r.get("prune_seconds")),
                fnum(r.get("peak_rss_mb"), 1),
                fnum(r.get("inference_peak_rss_mb") or r.get("plain_inference_peak_rss_mb"), 1),
            ]
        )
    out = table(
        [
            "method",
            "setting",
            "WikiText-2 ppl",
            "achieved",
            "params after",
            "train s",
            "prune s",
            "peak RSS MiB",
            "plain inference RSS MiB",
        ],
        rows,
        "llrrrrrrr",
    )
    traces = [r for r in runs_of(d) if isinstance(r.get("pg_keep_best"), dict)]
    for r in traces:
        kb = r["pg_keep_best"]
        steps = [t["step"] for t in kb["trace"]]
        out += (
            f"\n\nKeep-best trace of `{r['setting']}` (top-k mask loss on {kb['select_samples']} calibration "
            f"windows every {kb['every']} steps; best at step {kb['best_step']}):\n\n"
            + table(["step"] + [str(s) for s in steps], [["loss"] + [f"{t['topk_loss']:.3f}" for t in kb["trace"]]])
        )
    if name == "pg_seqlen512_lr001.json":
        block(
            "pg-trace-lr001",
            "\n".join(
                f"- {r['setting']}: best step {r['pg_keep_best']['best_step']}, best loss "
                f"{r['pg_keep_best']['best_topk_loss']:.3f}, initial {r['pg_keep_best']['trace'][0]['topk_loss']:.3f}, "
                f"last {r['pg_keep_best']['trace'][-1]['topk_loss']:.3f}"
                for r in traces
            ),
        )
    return out


def r_disp(name: str, d: dict, data: dict) -> str:
    total = d["protocol"]["params_total"]
    rows = []
    for r in runs_of(d):
        if r["method"] == "dense":
            removed, block_w = "-", "-"
        elif r.get("block_sparsity") is not None:
            removed = f"{100 * (1 - r['params_after'] / total):.1f} % (non-zeros)"
            block_w = fnum(r["block_sparsity"], 3)
        else:
            removed = pct(1 - r["params_after"] / total)
            block_w = fnum(r.get("achieved_ratio"), 3)
        label = r["method"] + (f" {r['setting']}" if r["setting"] in ("2:4", "4:8") else "")
        rows.append(
            [
                label,
                removed,
                block_w,
                fnum(r.get("params_after", r.get("params_dense"))),
                ppl(r["ppl"]),
                secs(r.get("prune_seconds")),
                fnum(r.get("decode_tok_s_b1"), 1),
                fnum(r.get("decode_tok_s_b8"), 1),
                fnum(r.get("prefill_tok_s_b1"), 0),
                fnum(r.get("ttft_s"), 3),
            ]
        )
    return block(
        "disp",
        table(
            [
                "method",
                "params removed (of all)",
                "block weights removed",
                "params after",
                "WikiText-2 ppl",
                "train/prune s",
                "decode tok/s b1",
                "decode tok/s b8",
                "prefill tok/s b1",
                "TTFT s",
            ],
            rows,
        ),
    )


# -- the standard structured table (benchmarks/standard.py) -----------------------------------------------------------

STANDARD = "standard.json"
STANDARD_METHODS = ("sobp", "pg", "disp", "llm-pruner", "shortgpt", "flap", "wanda-sp")
STANDARD_INIT = " init only (steps=0)"  # standard.py's (and pg.py's) label of PG's initial mask
STANDARD_ROWS = STANDARD_METHODS[:2] + ("pg init (steps=0)",) + STANDARD_METHODS[2:]  # rows of the tables
STANDARD_HOWTO = (
    "`benchmarks/standard.py` runs the dense model and SoBP, PG, DISP, Wanda-sp, FLAP, LLM-Pruner and ShortGPT "
    "at 20, 30 and 50 % of the decoder-block linear weights under one protocol for every row: 128 × 2048 "
    "WikiText-2 train calibration windows by default (the script refuses fewer than 64 for this file), seed 0, "
    "perplexity on all WikiText-2 test windows of 2048 tokens. "
    "PG keeps its family budget and DISP counts block weights (`target=block`), so a ratio is the same parameter "
    "count for every method (the achieved ratio is recorded per row); PG's initial (Wanda-sp) mask is evaluated "
    "as a row of its own. On a CPU the run takes many hours: start it in the background and resume it after an "
    "interruption (every finished row is saved and never redone; a changed protocol is refused). On a GPU machine "
    "it should take minutes (`--device cuda`; not yet run on one)."
)
STANDARD_COMMAND = (
    "nohup python benchmarks/standard.py --calib-samples 64 --resume > standard.log 2>&1 &   # rerun it to resume\n"
    "python benchmarks/standard.py --table                                # the table so far\n"
    "make docs                                                            # this page"
)


def _standard_key(r: dict) -> tuple[str, str]:
    """(row name, ratio) of a standard.json run; PG's init rows get their own name."""
    if r["setting"].endswith(STANDARD_INIT):
        return "pg init (steps=0)", r["setting"][: -len(STANDARD_INIT)]
    return r["method"], r["setting"]


def _standard_ratios(d: dict) -> list[str]:
    return sorted({_standard_key(r)[1] for r in runs_of(d) if r["method"] != "dense"}, key=float)


STANDARD_RATIOS = ("0.2", "0.3", "0.5")  # standard.py's default ratios: always columns, '-' until run


def _standard_columns(d: dict) -> list[str]:
    """The ratios of the standard tables: standard.py's defaults and any other ratio run."""
    return sorted(set(_standard_ratios(d)) | set(STANDARD_RATIOS), key=float)


def standard_pivot(d: dict) -> str:
    """Perplexity, one row per method (every standard method, '-' where not run yet), one column per ratio."""
    cells = {_standard_key(r): r for r in runs_of(d)}
    ratios = _standard_columns(d)
    names = list(STANDARD_ROWS) + sorted({n for n, _ in cells} - set(STANDARD_ROWS) - {"dense"})
    dense = ppl(dense_ppl(d)) if any(r["method"] == "dense" for r in runs_of(d)) else "-"
    rows = [["dense"] + [dense] * len(ratios)]
    for n in names:
        rows.append([n] + [ppl(cells[(n, s)]["ppl"]) if (n, s) in cells else "-" for s in ratios])
    return block("standard", table(["method"] + [f"{float(s) * 100:.0f} %" for s in ratios], rows))


def standard_findings(d: dict) -> str:
    """What the table says, read from it: the order at each ratio, PG against its initialisation."""
    cells = {_standard_key(r): r for r in runs_of(d)}
    lines = []
    for s in _standard_ratios(d):
        ranked = sorted((cells[(m, s)]["ppl"], m) for m in STANDARD_METHODS if (m, s) in cells)
        missing = [m for m in STANDARD_METHODS if (m, s) not in cells]
        lines.append(
            f"- {float(s) * 100:.0f} %, lowest perplexity first: "
            + ", ".join(f"{m} {ppl(v)}" for v, m in ranked)
            + (f" (not run yet: {', '.join(missing)})" if missing else "")
        )
    for s in _standard_ratios(d):
        pg_run, init = cells.get(("pg", s)), cells.get(("pg init (steps=0)", s))
        if pg_run is None:
            continue
        text = f"- PG at {float(s) * 100:.0f} %: {ppl(pg_run['ppl'])}"
        text += f" against {ppl(init['ppl'])} for its initial mask alone" if init else " (initial mask not run yet)"
        kb = pg_run.get("pg_keep_best")
        if isinstance(kb, dict) and kb.get("trace"):
            text += (
                f"; keep-best shipped the mask of step {kb['best_step']} (top-k loss on {kb['select_samples']} "
                f"calibration windows {kb['trace'][0]['topk_loss']:.3f} at the initialisation, "
                f"{kb['best_topk_loss']:.3f} shipped"
                + (", i.e. the initial mask" if kb["best_step"] == 0 else "")
                + ")"
            )
        lines.append(text)
    return "\n".join(lines)


#: the seeds' claims the standard table tests: (claim, method, ratios where it should have the lowest perplexity)
STANDARD_CLAIMS = (
    ("SoBP has the lowest perplexity at 20 % and 30 %", "sobp", ("0.2", "0.3")),
    ("DISP has the lowest perplexity at 50 %", "disp", ("0.5",)),
)


def standard_claims(d: dict) -> str:
    """Each claim of the seeds against the standard table: holds, does not hold, or not measured yet."""
    cells = {_standard_key(r): r for r in runs_of(d)}
    lines = []
    for claim, method, ratios in STANDARD_CLAIMS:
        parts = []
        for s in ratios:
            pct = f"{float(s) * 100:.0f} %"
            if (method, s) not in cells:
                parts.append(f"{pct}: not measured yet")
                continue
            own = cells[(method, s)]["ppl"]
            others = {m: cells[(m, s)]["ppl"] for m in STANDARD_METHODS if m != method and (m, s) in cells}
            missing = [m for m in STANDARD_METHODS if m != method and (m, s) not in cells]
            better = sorted((v, m) for m, v in others.items() if v < own)
            if better:
                verdict = "does not hold (" + ", ".join(f"{m} {ppl(v)}" for v, m in better) + f" < {ppl(own)})"
            else:
                verdict = f"holds ({ppl(own)})" if not missing else f"holds so far ({ppl(own)})"
            parts.append(f"{pct}: {verdict}" + (f"; not run yet: {', '.join(missing)}" if missing else ""))
        lines.append(f"- *{claim}*: " + "; ".join(parts))
    pg_parts = []
    for s in _standard_columns(d):
        pg_run, init = cells.get(("pg", s)), cells.get(("pg init (steps=0)", s))
        pct = f"{float(s) * 100:.0f} %"
        if pg_run is None or init is None:
            pg_parts.append(f"{pct}: not measured yet")
        else:
            word = "holds" if pg_run["ppl"] < init["ppl"] else "does not hold"
            pg_parts.append(f"{pct}: {word} ({ppl(pg_run['ppl'])} against {ppl(init['ppl'])})")
    lines.append("- *PG's trained mask beats its initial (Wanda-sp) mask*: " + "; ".join(pg_parts))
    return block("standard-claims", "\n".join(lines))


def standard_protocol(d: dict) -> str:
    p = d["protocol"]
    windows = next((r["protocol"] for r in runs_of(d) if isinstance(r.get("protocol"), dict)), {})
    count = f"{windows['windows']} of {windows['windows_available']}" if windows.get("windows") else p["eval_windows"]
    return (
        f"calibration {p['calib_samples']} × {p['seqlen']} WikiText-2 train windows (seed {p['seed']}), "
        f"perplexity on {count} WikiText-2 test windows of {p['seqlen']} tokens, {p['model']}, device {p['device']}"
    )


def standard_summary(data: dict) -> str:
    out = "## Structured methods at the standard protocol\n\n" + STANDARD_HOWTO + "\n\n```bash\n"
    out += STANDARD_COMMAND + "\n```\n"
    d = data.get(STANDARD)
    if not isinstance(d, dict) or not runs_of(d):
        return out + "\nNo results yet: `benchmarks/results/standard.json` is written by the first real run.\n"
    return (
        out + f"\nFrom `{STANDARD}`: {standard_protocol(d)}. Every row and its seconds and memory are in the section "
        "further down.\n\n"
        + standard_pivot(d)
        + "\n\n"
        + standard_findings(d)
        + "\n\nThe seeds' claims:\n\n"
        + standard_claims(d)
        + "\n"
    )


def _standard_order(r: dict) -> tuple:
    """Dense first, then by ratio, methods in :data:`STANDARD_METHODS` order, PG's init row after PG."""
    if r["method"] == "dense":
        return (0.0, -1, r["setting"])
    name, ratio = _standard_key(r)
    rank = STANDARD_ROWS.index(name) if name in STANDARD_ROWS else len(STANDARD_ROWS)
    return (float(ratio), rank, r["setting"])


def r_standard(name: str, d: dict, data: dict) -> str:
    rows = []
    for r in sorted(runs_of(d), key=_standard_order):
        kb = r.get("pg_keep_best")
        rows.append(
            [
                r["method"],
                r["setting"],
                fnum(r.get("achieved_ratio"), 3),
                ppl(r["ppl"]),
                fnum(r.get("params_after")),
                secs(r.get("prune_seconds")),
                secs(r.get("eval_seconds")),
                secs(r.get("peak_rss_mb")),
                fnum(r.get("threads")),
                (
                    f"{kb['trace'][0]['topk_loss']:.3f} → {kb['best_topk_loss']:.3f} (step {kb['best_step']})"
                    if isinstance(kb, dict) and kb.get("trace")
                    else "-"
                ),
            ]
        )
    return table(
        [
            "method",
            "ratio",
            "achieved",
            "WikiText-2 ppl",
            "params after",
            "prune s",
            "eval s",
            "peak RSS MiB",
            "threads",
            "PG top-k loss: init → shipped",
        ],
        rows,
        "llrrrrrrrl",
    )


BENCH_KEYS = [
    ("prefill_tok_s_b1", "prefill tok/s b1"),
    ("prefill_tok_s_b8", "prefill tok/s b8"),
    ("decode_tok_s_b1", "decode tok/s b1"),
    ("decode_tok_s_b8", "decode tok/s b8"),
    ("ttft_s", "TTFT s"),
]


def r_bench(name: str, d: dict, data: dict) -> str:
    rows = []
    for m, v in d["models"].items():
        rows.append(
            [m, fnum(v["parameters"]), fnum(v["weight_mb"], 1)]
            + [
                f"{v['metrics'][k]['median']:.4g} ({v['metrics'][k]['min']:.4g}–{v['metrics'][k]['max']:.4g})"
                for k, _ in BENCH_KEYS
            ]
        )
    out = table(["model", "parameters", "weights MiB"] + [f"{lab}, median (min–max)" for _, lab in BENCH_KEYS], rows)
    sp = d.get("speedup")
    if sp:
        out += f"\n\nSpeed-up of {sp['of']} over {sp['vs']} (ratio of medians; TTFT: dense / pruned):\n\n" + table(
            [k for k, _ in BENCH_KEYS], [[f"{sp[k]:.2f}×" for k, _ in BENCH_KEYS]], "r" * len(BENCH_KEYS)
        )
    if "safetensors_bytes" in d:
        sb, pa = d["safetensors_bytes"], d["params"]
        out += "\n\n" + table(
            ["", "dense", "pruned", "ratio"],
            [
                ["parameters", fnum(pa["dense"]), fnum(pa["pruned"]), f"{pa['pruned'] / pa['dense']:.3f}"],
                [
                    "safetensors on disk MiB",
                    fnum(sb["dense"] / 2**20, 1),
                    fnum(sb["pruned"] / 2**20, 1),
                    f"{100 * d['disk_reduction']:.1f} % smaller",
                ],
                ["block weights removed", "", fnum(d["block_params_removed"], 3), ""],
                [
                    "export kind / reload max relative logit difference",
                    "",
                    f"{d['export_kind']} / {d['reload_max_rel_logit_diff']}",
                    "",
                ],
            ],
            "lrrr",
        )
        block("structured-speed", out)
    return out


def r_speed_repeats(name: str, d: dict, data: dict) -> str:
    rows = []
    for r in runs_of(d):
        sp = r["speedup"]
        rows.append(
            [
                r["label"],
                str(r["align"]),
                f"{sp['decode_tok_s_b1']:.2f}×",
                f"{sp['decode_tok_s_b8']:.2f}×",
                f"{sp['prefill_tok_s_b1']:.2f}×",
                f"{r['decode_tok_s_b1']['dense']['median']:.1f}",
                f"{r['decode_tok_s_b1']['pruned']['median']:.1f}",
                f"`{r['command']}`",
            ]
        )
    return block(
        "structured-speed-repeats",
        table(
            [
                "run",
                "align",
                "decode b1 speed-up",
                "decode b8 speed-up",
                "prefill b1 speed-up",
                "dense decode tok/s b1",
                "pruned decode tok/s b1",
                "command",
            ],
            rows,
            "lrrrrrrl",
        ),
    )


TASKS = ["piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "boolq", "openbookqa"]


def r_zeroshot(name: str, d: dict, data: dict) -> str:
    rows = []
    for t in [t for t in TASKS if t in d["tasks"]] + [t for t in d["tasks"] if t not in TASKS]:
        v = d["tasks"][t]
        parts = ", ".join(v.get("parts", {}))
        rows.append(
            [
                t,
                fnum(v["ours"]["n"]),
                fnum(v["ours"]["acc"], 4),
                fnum(v["ours"]["acc_norm"], 4),
                secs(v.get("ours_seconds")),
                parts or "-",
            ]
        )
    out = table(["task", "items", "acc", "acc_norm", "seconds", "joined from parts (items)"], rows, "lrrrrl")
    out += (
        f"\n\nMean acc over the {len(rows)} tasks: {d['mean_acc']:.4f}; mean acc_norm over the tasks that define "
        f"it: {d['mean_acc_norm']:.4f}."
    )
    if name == "zeroshot_dense.json":
        block("zeroshot-dense", out)
    return out


def zeroshot_pair(data: dict) -> str:
    a, b = data["zeroshot_dense.json"], data["zeroshot_sobp20.json"]
    rows = []
    for t in TASKS:
        x, y = a["tasks"][t]["ours"], b["tasks"][t]["ours"]
        rows.append([t, fnum(x["acc"], 4), fnum(y["acc"], 4), fnum(x["acc_norm"], 4), fnum(y["acc_norm"], 4)])
    rows.append(
        [
            "mean",
            fnum(a["mean_acc"], 4),
            fnum(b["mean_acc"], 4),
            fnum(a["mean_acc_norm"], 4),
            fnum(b["mean_acc_norm"], 4),
        ]
    )
    no_boolq = [t for t in TASKS if t != "boolq"]
    rows.append(
        [f"mean without boolq ({len(no_boolq)} tasks)"]
        + [fnum(sum(z["tasks"][t]["ours"]["acc"] for t in no_boolq) / len(no_boolq), 4) for z in (a, b)]
        + ["", ""]
    )
    return block(
        "zeroshot-sobp20", table(["task", "dense acc", "SoBP 20 % acc", "dense acc_norm", "SoBP 20 % acc_norm"], rows)
    )


def r_zeroshot_check(name: str, d: dict, data: dict) -> str:
    rows = []
    for t, v in d["tasks"].items():
        for metric, c in v["comparison"].items():
            rows.append(
                [
                    t,
                    metric,
                    fnum(c["ours"], 4),
                    fnum(c["lm_eval_cli"], 4),
                    str(c["equal"]).lower(),
                    fnum(v["ours"]["n"]),
                ]
            )
    return table(["task", "metric", "llmprune", "lm-eval CLI", "equal (exact float)", "items"], rows, "llrrlr")


def r_zeroshot_piqa(name: str, d: dict, data: dict) -> str:
    o, c = d["ours"], d["lm_eval_cli"]
    rows = [[m, repr(o[m]), repr(c[f"{m},none"]), str(d["equal"][m]).lower()] for m in ("acc", "acc_norm")]
    return (
        table(["metric", "llmprune", "lm-eval CLI", "equal"], rows, "lrrl") + f"\n\nOur scores: {d.get('ours_source')}."
    )


def _mrp_margin(r: dict) -> str:
    """MRP's layer error relative to SparseGPT's, one mrp_layer_timing.py row."""
    return f"{(r['err_mrp'] / r['err_sparsegpt'] - 1) * 100:+.1f} %"


def r_mrp_layer_timing(name: str, d: dict, data: dict) -> str:
    """benchmarks/mrp_layer_timing.py: per-layer seconds of SparseGPT and MRP, their ratio and
    layer errors (MRP's margin = its error relative to SparseGPT's)."""
    rows = [
        [
            r["shape"],
            r["setting"],
            f"{r['sparsegpt_s']:.3f}",
            f"{r['mrp_s']:.3f}",
            f"{r['ratio']:.2f}",
            f"{r['err_sparsegpt']:.4g}",
            f"{r['err_mrp']:.4g}",
            _mrp_margin(r),
        ]
        for r in d["rows"]
    ]
    a = d.get("args", {})
    head = (
        f"{d.get('threads', a.get('threads'))} thread(s), {a.get('precision', 'float32')}"
        + (f", MRP tol {a['mrp_tol'] or 'default (1e-3)'}" if "mrp_tol" in a else "")
        + f", median of {a.get('repeats')}"
        + ("" if not a.get("no_warmup") else ", no warm-up")
        + (
            f"; load average at the end {', '.join(f'{v:.1f}' for v in d['load_average_at_end'])}"
            if d.get("load_average_at_end")
            else ""
        )
    )
    stem = name.removesuffix(".json").replace("_", "-")
    return (
        head
        + ".\n\n"
        + block(
            stem,
            table(
                [
                    "shape",
                    "setting",
                    "SparseGPT s",
                    "MRP s",
                    "MRP / SparseGPT",
                    "err SparseGPT",
                    "err MRP",
                    "MRP margin",
                ],
                rows,
                "ll" + "r" * 6,
            ),
        )
    )


MRP_TIMING_DEFAULT_TOL = 1e-3  # mrp_layer_timing.py without --mrp-tol: pcg.TOL for float32


def mrp_tol_tables(data: dict) -> None:
    """The MRP stop trade-off, one block per family ``mrp_layer_timing_..._tolX.json`` (one file per
    ``--mrp-tol``, same shapes and threads; block ``mrp-layer-timing-...-tol``): one row per layer
    and setting, per tolerance MRP's time over SparseGPT's (same file, interleaved) and MRP's
    error margin below SparseGPT."""
    families: dict[str, list[tuple[float, str]]] = {}
    for n in data:
        if n.startswith("mrp_layer_timing") and "_tol" in n:
            tol = data[n]["args"].get("mrp_tol") or MRP_TIMING_DEFAULT_TOL
            families.setdefault(n[: n.rindex("_tol") + len("_tol")], []).append((tol, n))
    for prefix, members in families.items():
        members.sort()
        keys = [(r["shape"], r["setting"]) for r in data[members[0][1]]["rows"]]
        rows = []
        for shape, setting in keys:
            cells = [shape, setting]
            for _, n in members:
                r = next((r for r in data[n]["rows"] if (r["shape"], r["setting"]) == (shape, setting)), None)
                cells += ["-", "-"] if r is None else [f"{r['ratio']:.2f}", _mrp_margin(r)]
            rows.append(cells)
        head = ["shape", "setting"]
        for t, _ in members:
            head += [f"MRP/SparseGPT time, tol {t:g}", f"MRP margin, tol {t:g}"]
        block(prefix.replace("_", "-"), table(head, rows, "ll" + "r" * (2 * len(members))))


VOCAB_STAGES = ("1_scores", "2_refine", "3_reconstruct")


def r_vocab_scaling(name: str, d: dict, data: dict) -> str:
    """Time per million block weights by shape and method, and its ratio to the SmolLM2 shape
    (benchmarks/vocab_scaling.py); one table per label, SoBP's stage seconds where recorded."""
    out = []
    labels: list[str] = []
    for r in runs_of(d):
        if r.get("label", "") not in labels:
            labels.append(r.get("label", ""))
    for label in labels:
        rows = []
        for r in (r for r in runs_of(d) if r.get("label", "") == label):
            st = r.get("stage_seconds") or {}
            rows.append(
                [
                    r["shape"],
                    fnum(r["blocks"]),
                    fnum(r["vocab"]),
                    r["method"],
                    r["calib"],
                    secs(r["seconds"]),
                    fnum(r["seconds_per_m_block_params"], 2),
                    fnum(r.get("vs_smollm2_per_block_param"), 2),
                ]
                + [fnum(st.get(k), 1) for k in VOCAB_STAGES]
            )
        head = ["shape", "blocks", "vocab", "method", "calibration", "s", "s per M block weights", "vs SmolLM2 shape"]
        out.append(
            f"Label `{label or '(none)'}`:\n\n"
            + block(
                f"vocab-scaling-{label}" if label else "vocab-scaling",
                table(head + [f"SoBP {k} s" for k in VOCAB_STAGES], rows, "l" * 5 + "r" * 6),
            )
        )
    return "\n\n".join(out)


def r_generic(name: str, d: Any, data: dict) -> str:
    """Any other file: its runs as a table of their scalar fields, or its scalar fields."""
    if isinstance(d, dict) and runs_of(d):
        keys: list[str] = []
        for r in runs_of(d):
            keys += [k for k, v in r.items() if not isinstance(v, (dict, list)) and k not in keys]
        rows = [[fnum(r.get(k), 4) for k in keys] for r in runs_of(d)]
        return table(keys, rows, "l" * len(keys))
    items = [(k, v) for k, v in flat(d) if k.split(".")[0] not in ("protocol", "environment")]
    return table(["field", "value"], [[k, fnum(v, 4)] for k, v in items], "ll")


# file -> (section title, renderer, one-line description)
SECTIONS: dict[str, tuple[str, Callable[[str, Any, dict], str], str]] = {
    "unstructured_quick.json": (
        "Unstructured and N:M baselines (quick protocol)",
        r_unstructured,
        "Magnitude, Wanda and SparseGPT at 50 %, 70 %, 2:4 and 4:8 of block weights. `prune s` "
        "includes calibration; other jobs shared the two cores during these runs, so read the "
        "times as upper bounds. SparseGPT's 2:4 and 4:8 rows used an earlier N:M rule of llmprune (the published rule's "
        "rerun is below the table).",
    ),
    "mrp_vs_sparsegpt_quick.json": (
        "MRP against SparseGPT (quick protocol)",
        r_mrp,
        "Both methods of a setting ran in the same process, one after the other. The 2:4 and 4:8 rows are "
        f"taken from `{MRP_NM_RERUN}` where it has them (SparseGPT's published N:M rule, today's MRP solver).",
    ),
    MRP_NM_RERUN: (
        "MRP against SparseGPT at 2:4 and 4:8, rerun (quick protocol)",
        r_mrp,
        "SparseGPT with the published in-loop N:M group selection, MRP with today's iterative solver; "
        "both in one process, one after the other, one thread, with one other one-thread benchmark "
        "on the second core.",
    ),
    "structured_quick.json": (
        "Structured methods at 20/30/40 % (quick protocol)",
        r_structured,
        "SoBP and the structured baselines; 30/40 % baselines are in the next section. Three "
        "benchmark processes shared the two cores, one thread each (two, one per core, for the "
        "SoBP and ablation rows run after the stage-3 change), so the seconds are upper bounds; "
        "SoBP's and LLM-Pruner's peak RSS include a whole-model backward pass at seqlen 2048.",
    ),
    "structured_quick_baselines.json": (
        "Structured baselines at 30/40 % (quick protocol, second process)",
        r_structured,
        "Run in a second process with the same protocol.",
    ),
    "structured_ablation_quick.json": (
        "SoBP ablation at 30 % (quick protocol)",
        r_sobp_ablation,
        "Each stage switched off, the others on; the full row is structured_quick's.",
    ),
    "sobp_stage3.json": (
        "SoBP stage 3 studies",
        r_sobp_stage3,
        "Stage 1 fixed, stage 3 varied; 30 % of block weights.",
    ),
    "pg_seqlen512.json": (
        "PG, lr 0.05 (the earlier defaults), with init-only rows and baselines",
        r_pg,
        "All rows in one process, one thread, with other processes sharing the two cores: seconds "
        "are upper bounds, and later rows' peak RSS includes memory left resident by earlier runs.",
    ),
    "pg_seqlen512_keepbest.json": ("PG, lr 0.05 with keep-best 10", r_pg, ""),
    "pg_seqlen512_lr001.json": ("PG, lr 0.01 with keep-best 10 (today's defaults)", r_pg, ""),
    "disp_seqlen512.json": (
        "DISP against SoBP, PG, Wanda-sp and SparseGPT 2:4 (reduced protocol)",
        r_disp,
        "The budget is a fraction of all parameters; the other structured methods get the same "
        "parameter count as a block-weight ratio. Pruning ran on one thread with three or four "
        "processes sharing the two cores, so its seconds are upper bounds; peak RSS is process-wide "
        "and only the first pruned row's is that method's own. Speed columns: every saved model "
        "reloaded and measured in one interleaved benchmark afterwards (protocol `speed` above).",
    ),
    "standard.json": (
        "Structured methods at the standard protocol: every row",
        r_standard,
        "Written by `benchmarks/standard.py`, one row at a time. Peak RSS is each row's own (the "
        "high-water mark is reset before every row); `prune s` includes calibration; the last column is "
        "PG's keep-best record (top-k mask loss on its selection windows at the initialisation and for "
        "the mask shipped).",
    ),
    "disp50_bench.json": ("`llmprune bench` of the DISP 50 % model", r_bench, ""),
    "structured_speed.json": (
        "A 30 % structured plan: size and speed",
        r_bench,
        "A non-uniform plan saved, reloaded and measured against the dense model in one run.",
    ),
    "structured_speed_repeats.json": ("The same plan, repeated", r_speed_repeats, ""),
    "zeroshot_dense.json": (
        "Zero-shot, dense SmolLM2-135M (full sets)",
        r_zeroshot,
        "Seconds are wall time of one thread, with other jobs on the other core; HellaSwag was "
        "scored in parts in separate processes and joined from the parts' item counts.",
    ),
    "zeroshot_sobp20.json": ("Zero-shot, SoBP 20 % (full sets)", r_zeroshot, ""),
    "zeroshot_check.json": ("Our zero-shot scores against lm-eval's own CLI (first 100 items)", r_zeroshot_check, ""),
    "zeroshot_check_full.json": ("Our zero-shot scores against lm-eval's own CLI (full sets)", r_zeroshot_check, ""),
    "zeroshot_check_piqa_full.json": ("PIQA full set against lm-eval's own CLI", r_zeroshot_piqa, ""),
    "vocab_scaling.json": (
        "Time against vocabulary and shape (random-weight models of real shapes)",
        r_vocab_scaling,
        "One process per command, one thread. `vs SmolLM2 shape`: seconds per million decoder-block linear "
        "weights over the SmolLM2-shaped run of the same method, calibration and label. Rows labelled `after` "
        "ran at a load average of about 40 on 2 cores; later labels say their conditions in the note.",
    ),
}


def section_for(name: str) -> tuple[str, Callable, str]:
    """(title, renderer, description) of a results file; every mrp_layer_timing*.json shares one renderer."""
    if name in SECTIONS:
        return SECTIONS[name]
    if name.startswith("mrp_layer_timing"):
        return (f"MRP and SparseGPT per layer: {name}", r_mrp_layer_timing, MRP_TIMING_DESC)
    return (f"{name} (generic rendering)", r_generic, "")


MRP_TIMING_DESC = (
    "`benchmarks/mrp_layer_timing.py`: random layers of the given shapes (correlated inputs, uneven column "
    "scales, 4096 tokens), both solvers interleaved after a warm-up; wall seconds, medians."
)


def headline(data: dict) -> str:
    """One table, one row per method; each row names its protocol (legend below) and its dense reference."""
    u, m = data["unstructured_quick.json"], data["mrp_vs_sparsegpt_quick.json"]
    s, sb = data["structured_quick.json"], data["structured_quick_baselines.json"]
    pg, dp = data["pg_seqlen512_lr001.json"], data["disp_seqlen512.json"]
    A, B, C = short_protocol(u), short_protocol(s), short_protocol(pg)
    for other, same in ((m, A), (sb, B), (dp, C)):
        if short_protocol(other) != same:
            raise ValueError(f"headline: protocols differ ({short_protocol(other)} vs {same})")
    rows = []
    for meth in ("magnitude", "wanda", "sparsegpt"):
        rows.append(
            [
                f"`{meth}`",
                "unstructured",
                "50 %",
                ppl(find(u, meth, "0.5")["ppl"]),
                ppl(dense_ppl(u)),
                "A",
                "`unstructured_quick`",
            ]
        )
    rows.append(
        [
            "`mrp`",
            "unstructured",
            "50 %",
            ppl(find(m, "mrp", "0.5")["ppl"])
            + f" (SparseGPT {ppl(find(m, 'sparsegpt', '0.5')['ppl'])} in the same run)",
            ppl(dense_ppl(m)),
            "A",
            "`mrp_vs_sparsegpt_quick`",
        ]
    )
    for meth in ("sobp", "llm-pruner", "shortgpt", "flap", "wanda-sp"):
        src = s if meth == "sobp" else sb
        rows.append(
            [
                f"`{meth}`",
                "structured",
                "30 %",
                ppl(find(src, meth, "0.3")["ppl"]),
                ppl(dense_ppl(s)),
                "B",
                "`structured_quick" + ("`" if meth == "sobp" else "_baselines`"),
            ]
        )
    rows.append(
        [
            "`pg`",
            "structured",
            "30 %",
            ppl(find(pg, "pg", "0.3 keep-best 10")["ppl"]),
            ppl(dense_ppl(pg)),
            "C",
            "`pg_seqlen512_lr001`",
        ]
    )
    r = find(dp, "disp", "0.3 total")
    rows.append(
        [
            "`disp`",
            "structured",
            f"{r['achieved_ratio'] * 100:.1f} % (30 % of all parameters)",
            ppl(r["ppl"]) + f" (SoBP {ppl(find(dp, 'sobp', '0.3 total')['ppl'])} at the same size)",
            ppl(dense_ppl(dp)),
            "C",
            "`disp_seqlen512`",
        ]
    )
    legend = (
        f"Protocols (WikiText-2 perplexity, SmolLM2-135M, float32, CPU): A = {A}; B = {B}; C = {C}. "
        "JSON files in `benchmarks/results/`; full tables, commands and notes in [docs/results.md](docs/results.md)."
    )
    return (
        table(
            ["method", "kind", "block weights removed", "WikiText-2 ppl", "dense ppl", "protocol", "JSON"],
            rows,
            "llrrrll",
        )
        + "\n\n"
        + legend
    )


def build(data: dict) -> tuple[str, str, list[str]]:
    """(results.md text, README headline block, notes about files rendered generically)."""
    BLOCKS.clear()
    notes = []
    out = [
        "# Measured results",
        "",
        "<!-- Generated by benchmarks/make_results.py from benchmarks/results/*.json; do not edit by hand: "
        "run `make docs`. -->",
        "",
        "Every number on this page is read from a JSON file in `benchmarks/results/` by "
        "`benchmarks/make_results.py` (`make docs`). Each section names its file, the protocol recorded in it and "
        "the command that produced it. Reference machine unless a JSON says otherwise: 2 CPU cores, no GPU, "
        "SmolLM2-135M in float32. Seconds were measured on a shared 2-core machine; where other jobs shared the "
        "cores (see each note) read them as upper bounds. Peak RSS is the process-wide maximum, so a row can "
        "inherit an earlier row's peak.",
        "",
        "Ratio = fraction of decoder-block linear weights removed unless a section says otherwise.",
        "",
    ]
    mrp_tol_tables(data)
    summary = [standard_summary(data)]
    if "structured_quick.json" in data and "structured_quick_baselines.json" in data:
        summary.append(
            "## Structured methods, WikiText-2 perplexity by ratio\n\nFrom `structured_quick.json` and "
            "`structured_quick_baselines.json`: "
            + short_protocol(data["structured_quick.json"])
            + "; SoBP's stage 3 with the module target (details in their sections below).\n\n"
            + structured_pivot(data)
            + "\n"
        )
    if "pg_seqlen512_lr001.json" in data and "pg_seqlen512.json" in data:
        pgp = data["pg_seqlen512_lr001.json"]["protocol"]
        summary.append(
            "## PG against its initialisation, Wanda-sp and SoBP\n\nFrom `pg_seqlen512_lr001.json` (lr 0.01) "
            "and `pg_seqlen512.json` (the other columns), same protocol: "
            + short_protocol(data["pg_seqlen512_lr001.json"])
            + f"; {pgp['pg']['steps']} PG steps.\n\n"
            + pg_table(data)
            + "\n"
        )
    if "zeroshot_dense.json" in data and "zeroshot_sobp20.json" in data:
        zp = data["zeroshot_dense.json"]["protocol"]
        summary.append(
            "## Zero-shot, SoBP 20 % against dense\n\nFrom `zeroshot_dense.json` and "
            f"`zeroshot_sobp20.json`: full sets, {zp['num_fewshot']}-shot, {zp['dtype']}, batch "
            f"{zp['batch_size']}, lm-eval {zp['lm_eval']}.\n\n" + zeroshot_pair(data) + "\n"
        )
    out += summary
    for name in sorted(data, key=lambda n: (list(SECTIONS).index(n) if n in SECTIONS else len(SECTIONS), n)):
        d = data[name]
        title, render, desc = section_for(name)
        if render is r_generic:
            notes.append(f"{name}: no dedicated renderer, rendered generically")
        try:
            body = render(name, d, data)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            notes.append(f"{name}: its renderer failed ({type(exc).__name__}: {exc}), rendered generically")
            body = r_generic(name, d, data)
        sec = [f"## {title}", "", f"File: `benchmarks/results/{name}`." + (f" {desc}" if desc else ""), ""]
        first_eval = next((eval_line(r) for r in runs_of(d) if r.get("protocol")), "") if isinstance(d, dict) else ""
        sec += [f"- {line}" for line in (protocol_lines(d) if isinstance(d, dict) else [])]
        if first_eval:
            sec.append(f"- {first_eval}")
        sec += ["", command_block(name, d if isinstance(d, dict) else {}), "", body, ""]
        out += sec
    if SKIPPED:
        out += ["## Skipped files", ""] + [f"- `{s}`" for s in SKIPPED] + [""]
        notes += [f"skipped {s}" for s in SKIPPED]
    text = "\n".join(out).rstrip() + "\n"
    try:
        head = headline(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SystemExit(
            f"error: the README's headline table cannot be built from benchmarks/results "
            f"({type(exc).__name__}: {exc}): restore the file or update headline() in "
            f"benchmarks/make_results.py"
        ) from None
    return text, head, notes


SKIPPED: list[str] = []  # files that are not valid JSON, filled by load_results


def load_results() -> dict[str, Any]:
    data = {}
    SKIPPED.clear()
    for path in sorted(RESULTS.glob("*.json")):
        try:
            data[path.name] = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            SKIPPED.append(f"{path.name} (not valid JSON: {exc})")
    return data


MARK = re.compile(r"(<!-- results:([\w-]+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def fill_blocks(text: str, blocks: dict[str, str], where: str) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in blocks:
            raise SystemExit(
                f"error: {where} asks for results block {name!r}, which no renderer makes "
                f"(known: {', '.join(sorted(blocks))})"
            )
        return m.group(1) + blocks[name].rstrip() + "\n" + m.group(4)

    return MARK.sub(sub, text)


def outputs() -> dict[Path, str]:
    """Every generated file with its expected content."""
    data = load_results()
    results, head, notes = build(data)
    for n in notes:
        print(f"make_results: {n}", file=sys.stderr)
    blocks = dict(BLOCKS, headline=head)
    files = {RESULTS_MD: results}
    for path in [README] + sorted((ROOT / "docs").rglob("*.md")):
        if path == RESULTS_MD or not path.exists():
            continue
        old = path.read_text()
        new = fill_blocks(old, blocks, str(path.relative_to(ROOT)))
        if new != old or path == README:
            files[path] = new
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only check that the generated files are up to date")
    args = p.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    rel = ", ".join(str(p.relative_to(ROOT)) for p in stale)
    if args.check:
        if stale:
            print(f"error: out of date: {rel}: run `make docs`", file=sys.stderr)
            return 1
        print("generated docs are up to date")
    else:
        print(f"wrote {rel}" if stale else "generated docs were already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
