"""``llmprune report RUN_DIR...``: compare pruning runs in ``report.md``, ``report.json``
and PNG plots.

Each run directory is read for:

- ``report.json`` (written by ``llmprune prune``, read as a
  :class:`~llmprune.prune_report.PruneReport`): method, ``ratio``/``pattern``,
  ``params_before``/``params_after``, ``prune_seconds``, ``peak_rss_mb``, per-layer
  entries and, when present, ``speed``. A directory without it (a dense model) is
  reported as method ``dense``, ratio 0.
- ``eval.json`` (written by ``llmprune eval RUN_DIR --save``): ``ppl``, ``zeroshot``,
  ``protocol``, merged over the ``eval.pruned`` section that ``llmprune demo --out``
  stores in ``report.json`` (eval.json wins where both have a dataset).
- ``bench.json`` (optional, ``llmprune bench RUN_DIR --save RUN_DIR/bench.json``):
  median prefill / decode tokens/s of the run's model.

Per-layer schema. Unstructured runs fill ``report["unstructured"]["layers"] = [{"block": i,
"linear": name, "shape": [out, in], "sparsity": s}, ...]``; the plot shows each
linear's sparsity per block. Structured runs fill::

    report["structured"]["layers_structured"] = [
        {"block": i,             # block index in the pruned model
         "heads": int,           # query heads kept (0: attention removed)
         "kv_heads": int,        # key/value heads kept
         "intermediate": int,    # MLP channels kept
         "hidden_in": int,       # residual dims the attention reads (hidden size if all)
         # optional: "attn_out", "mlp_in", "mlp_out" (residual dims written / read)
        }, ...]

and the plot shows those kept widths per block.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import LlmpruneError
from .eval.record import load_eval, merge_eval
from .prune_report import PruneReport

REPORT_FILE = "report.json"
BENCH_FILE = "bench.json"
_SPEED_KEYS = ("prefill_tok_s_b1", "decode_tok_s_b1", "ttft_s")
_WIDTH_PANELS = (
    ("attention heads", ("heads", "kv_heads")),
    ("MLP channels", ("intermediate",)),
    ("residual dims", ("hidden_in", "attn_out", "mlp_in", "mlp_out")),
)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LlmpruneError(f"{path} is not valid JSON ({exc}): re-create it") from None
    if not isinstance(data, dict):
        raise LlmpruneError(f"{path} is not a JSON object: re-create it")
    return data


def _speed(report: dict, bench: dict | None) -> dict | None:
    """Median speed metrics from ``bench.json`` (first model) or ``report["speed"]``."""
    if bench and isinstance(bench.get("models"), dict) and bench["models"]:
        metrics = next(iter(bench["models"].values())).get("metrics", {})
        out = {k: metrics[k]["median"] for k in _SPEED_KEYS if isinstance(metrics.get(k), dict)}
        if "speedup" in bench:
            out["speedup"] = {k: v for k, v in bench["speedup"].items() if k not in ("of", "vs")}
        return out or None
    speed = report.get("speed")
    return speed if isinstance(speed, dict) else None


def _zeroshot_means(zeroshot: dict) -> dict:
    from .eval.zeroshot import mean_accuracy

    return {"acc": mean_accuracy(zeroshot, "acc"), "acc_norm": mean_accuracy(zeroshot, "acc_norm")}


def load_run(run_dir: str | os.PathLike) -> dict:
    """One run's comparable numbers (see the module docstring for the sources)."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise LlmpruneError(
            f"run directory {run_dir} does not exist: pass directories written by "
            "`llmprune prune --out` or evaluated with `llmprune eval DIR --save`"
        )
    report = PruneReport.from_json(path / REPORT_FILE) if (path / REPORT_FILE).is_file() else None
    evaluation = load_eval(path)
    if report is None and evaluation is None:
        raise LlmpruneError(
            f"{path} has neither {REPORT_FILE} nor eval.json: run `llmprune prune --out {path}` "
            f"or `llmprune eval {path} --save` first"
        )
    stored = report.eval.get("pruned") if report is not None and isinstance(report.eval, dict) else None
    evaluation = merge_eval(stored if isinstance(stored, dict) else None, evaluation or {})
    zeroshot = evaluation.get("zeroshot") or {}
    speed_source = {"speed": report.speed} if report is not None else {}
    return {
        "run": path.name,
        "path": str(path),
        "method": report.method if report is not None else "dense",
        "ratio": (report.ratio or 0.0) if report is not None else 0.0,
        "pattern": report.pattern if report is not None else None,
        "params_before": report.params_before if report is not None else None,
        "params_after": report.params_after if report is not None else None,
        "params_note": report.params_note if report is not None else None,
        "ppl": evaluation.get("ppl") or {},
        "zeroshot": zeroshot,
        "zeroshot_mean": _zeroshot_means(zeroshot),
        "prune_seconds": report.prune_seconds if report is not None else None,
        "peak_rss_mb": report.peak_rss_mb if report is not None else None,
        "speed": _speed(speed_source, _read_json(path / BENCH_FILE)),
        "protocol": evaluation.get("protocol") or {},
        "layers": report.unstructured.layers if report is not None and report.unstructured is not None else [],
        "layers_structured": (
            report.structured.layers_structured if report is not None and report.structured is not None else []
        ),
    }


def _unique_names(runs: list[dict]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        name = run["run"]
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            run["run"] = f"{name}-{seen[name]}"


def _setting(run: dict) -> str:
    if run["pattern"]:
        return str(run["pattern"])
    ratio = run["ratio"]
    return "-" if not ratio else f"{ratio:.3g}"


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return format(value, spec) if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _protocol_notes(runs: list[dict], keys: list[str]) -> list[str]:
    """One line per dataset/task: its protocol, or a warning when runs used different ones."""
    lines = []
    for key in keys:
        protocols = {
            json.dumps({k: v for k, v in r["protocol"][key].items() if k not in ("n",)}, sort_keys=True)
            for r in runs
            if key in r["protocol"]
        }
        if not protocols:
            continue
        first = sorted(protocols)[0]
        warn = "" if len(protocols) == 1 else f" **(runs differ: {len(protocols)} protocols, compare with care)**"
        lines.append(f"- `{key}`{warn}: `{first}`")
    return lines


def render_markdown(data: dict) -> str:
    """The human-readable comparison (tables, protocols, plots)."""
    runs, datasets, tasks = data["runs"], data["datasets"], data["tasks"]
    out = [
        "# llmprune report",
        "",
        f"{len(runs)} run(s). Perplexity: lower is better; zero-shot accuracy in %, higher is better.",
        "",
        "## Runs",
        "",
    ]
    head = (
        ["run", "method", "ratio / pattern", "params before", "params after"]
        + [f"ppl {d}" for d in datasets]
        + ["zero-shot mean acc", "prune s", "peak RSS MiB", "decode tok/s b1"]
    )
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in runs:
        speed = (r["speed"] or {}).get("decode_tok_s_b1")
        mean = _pct(r["zeroshot_mean"]["acc"])
        if r["zeroshot"] and len(r["zeroshot"]) < len(tasks):
            mean += f" ({len(r['zeroshot'])}/{len(tasks)} tasks)"
        cells = (
            [r["run"], r["method"], _setting(r), _fmt(r["params_before"]), _fmt(r["params_after"])]
            + [_fmt(r["ppl"].get(d), ".3f") for d in datasets]
            + [mean, _fmt(r["prune_seconds"], ".1f"), _fmt(r["peak_rss_mb"], ".0f"), _fmt(speed, ".1f")]
        )
        out.append("| " + " | ".join(cells) + " |")
    if tasks:
        out += ["", "## Zero-shot accuracy (acc / acc_norm, %)", ""]
        head = ["run"] + tasks + ["mean acc", "mean acc_norm"]
        out += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for r in runs:
            cells = [r["run"]]
            for t in tasks:
                score = r["zeroshot"].get(t)
                cells.append(
                    "–"
                    if score is None
                    else f"{_pct(score.get('acc'))} / {_pct(score.get('acc_norm'))} (n={score.get('n')})"
                )
            cells += [_pct(r["zeroshot_mean"]["acc"]), _pct(r["zeroshot_mean"]["acc_norm"])]
            out.append("| " + " | ".join(cells) + " |")
        out += [
            "",
            "Means are unweighted over the tasks a run has; acc_norm (length-normalised) exists "
            "only where lm-eval defines it (not winogrande, boolq).",
        ]
    if any(r["speed"] for r in runs):
        out += [
            "",
            "## Speed (medians from bench.json)",
            "",
            "| run | " + " | ".join(_SPEED_KEYS) + " |",
            "|---|" + "---:|" * len(_SPEED_KEYS),
        ]
        for r in runs:
            if r["speed"]:
                out.append(f"| {r['run']} | " + " | ".join(_fmt(r["speed"].get(k), ".4g") for k in _SPEED_KEYS) + " |")
    notes = _protocol_notes(runs, datasets + tasks)
    if notes:
        out += ["", "## Protocols", ""] + notes
    if data["plots"]:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in data["plots"]]
    return "\n".join(out) + "\n"


def _plot_layers(run: dict, path: Path) -> bool:
    """Kept widths per block (structured) or per-linear sparsity per block (unstructured)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if run["layers_structured"]:
        rows = sorted(run["layers_structured"], key=lambda e: e["block"])
        panels = [
            (title, [k for k in keys if any(e.get(k) is not None for e in rows)]) for title, keys in _WIDTH_PANELS
        ]
        panels = [(title, keys) for title, keys in panels if keys]
        fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False)
        blocks = [e["block"] for e in rows]
        for ax, (title, keys) in zip(axes[:, 0], panels):
            width = 0.8 / len(keys)
            for j, key in enumerate(keys):
                ax.bar(
                    [b - 0.4 + width * (j + 0.5) for b in blocks],
                    [e.get(key) or 0 for e in rows],
                    width=width,
                    label=key,
                )
            ax.set_ylabel(title)
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes[-1, 0].set_xlabel("block")
        axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.suptitle(f"{run['run']}: kept widths per block")
    elif run["layers"]:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = list(dict.fromkeys(e["linear"] for e in run["layers"]))
        for name in names:
            entries = sorted((e for e in run["layers"] if e["linear"] == name), key=lambda e: e["block"])
            ax.plot([e["block"] for e in entries], [e["sparsity"] for e in entries], marker=".", label=name)
        ax.set_xlabel("block")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("sparsity")
        ax.set_ylim(0, 1)
        ax.legend(fontsize="small", ncol=4)
        ax.set_title(f"{run['run']}: per-layer sparsity")
    else:
        return False
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _plot_ppl_vs_ratio(runs: list[dict], datasets: list[str], path: Path) -> bool:
    """Perplexity (log scale) against ratio, one line per method, one panel per dataset."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        methods = list(dict.fromkeys(r["method"] for r in runs if dataset in r["ppl"]))
        for method in methods:
            points = sorted(
                (r["ratio"] or 0.0, r["ppl"][dataset]) for r in runs if r["method"] == method and dataset in r["ppl"]
            )
            style = dict(linestyle="none", marker="*", markersize=12) if method == "dense" else dict(marker="o")
            ax.plot([p[0] for p in points], [p[1] for p in points], label=method, **style)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("ratio (fraction of block linear weights removed)")
        ax.set_ylabel(f"{dataset} perplexity")
        ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def build_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Write ``report.md``, ``report.json`` and plots into ``out``; returns the JSON data."""
    if not run_dirs:
        raise LlmpruneError("no run directory given: pass one or more directories written by `llmprune prune`")
    import matplotlib

    matplotlib.use("Agg")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    datasets = list(dict.fromkeys(d for r in runs for d in r["ppl"]))
    tasks = list(dict.fromkeys(t for r in runs for t in r["zeroshot"]))
    out_dir = Path(out).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise LlmpruneError(f"--out {out} exists and is not a directory: choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if _plot_ppl_vs_ratio(runs, datasets, out_dir / "ppl_vs_ratio.png"):
        plots.append("ppl_vs_ratio.png")
    for r in runs:
        name = "layers_" + "".join(c if c.isalnum() or c in "-_." else "_" for c in r["run"]) + ".png"
        if _plot_layers(r, out_dir / name):
            plots.append(name)
    data = {
        "runs": [
            {k: v for k, v in r.items() if k not in ("layers", "layers_structured")}
            | {"layers_structured": r["layers_structured"] or None}
            for r in runs
        ],
        "datasets": datasets,
        "tasks": tasks,
        "plots": plots,
    }
    (out_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown({**data, "runs": runs}))
    return data
