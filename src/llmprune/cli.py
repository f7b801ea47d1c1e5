"""Command line: ``llmprune prune | methods | eval | bench | report | export | demo``, thin over :mod:`llmprune.api`.

User mistakes print one line ``error: ...`` naming the fix and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import LlmpruneError


def _device(value: str) -> str:
    import torch

    if value.startswith("cuda") and not torch.cuda.is_available():
        raise LlmpruneError(f"device {value} requested but CUDA is not available: use --device cpu")
    if value != "cpu" and not value.startswith("cuda"):
        raise LlmpruneError(f"unknown device {value!r}: use cpu or cuda[:N]")
    return value


#: old per-method flags of ``llmprune prune``, still accepted for one release (hidden):
#: flag -> (method arg, value: None = the flag's argument, else the constant it stands for)
DEPRECATED_FLAGS: dict[str, tuple[str, object]] = {
    "--damp": ("damp", None),
    "--blocksize": ("blocksize", None),
    "--update": ("update", None),
    "--no-refine": ("refine", False),
    "--no-reconstruct": ("reconstruct", False),
    "--uniform": ("global_selection", False),
    "--checkpointing": ("checkpointing", True),
    "--refit-prior": ("refit_prior", None),
    "--refit-damp": ("refit_damp", None),
    "--refit-target": ("refit_target", None),
    "--allow-empty": ("allow_empty", True),
    "--steps": ("steps", None),
    "--lr": ("lr", None),
    "--batch-size": ("batch_size", None),
    "--samples-per-step": ("samples_per_step", None),
    "--budget": ("budget", None),
    "--pg-init": ("init", None),
    "--pg-units": ("units", None),
    "--pg-keep-best": ("keep_best", None),
    "--pg-select-samples": ("select_samples", None),
    "--offload": ("offload", True),
    "--disp-lambda": ("lam", None),
    "--disp-target": ("target", None),
    "--disp-estimator": ("estimator", None),
    "--disp-batch": ("batch_size", None),
    "--disp-bf16": ("autocast", None),
    "--disp-no-checkpointing": ("checkpointing", False),
    "--spec": ("spec", None),
}


def _deprecated_method_args(args: argparse.Namespace) -> dict[str, object]:
    """Method args given through the old flags; one deprecation line on stderr per flag."""
    out: dict[str, object] = {}
    for flag, (key, const) in DEPRECATED_FLAGS.items():
        value = getattr(args, "old_" + flag[2:].replace("-", "_"))
        if value is None or value is False:
            continue
        if flag == "--disp-bf16":
            if value == "auto":
                continue
            value = value == "on"
        elif const is not None:
            value = const
        shown = str(value).lower() if isinstance(value, bool) else value
        print(f"llmprune: {flag} is deprecated and will be removed: use --method-args {key}={shown}", file=sys.stderr)
        if key in out:
            raise LlmpruneError(f"{flag} sets {key} a second time: give each method option once")
        out[key] = value
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding ptb/, c4/, zeroshot/ (and optionally wikitext2/); WikiText-2 ships inside the package",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmprune", description="Retraining-free pruning of causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "prune",
        help="prune a model and write it to --out",
        description="Prune a model. Method options: --method-args key=value,... or a --recipe; "
        "`llmprune methods NAME` lists them. Data folder for c4/ptb calibration: "
        "environment variable LLMPRUNE_DATA_DIR.",
    )
    p.add_argument("--model", default=None, help="smollm2-135m (default, embedded), a local HF directory or a hub id")
    p.add_argument("--method", default=None, help="a method name: `llmprune methods` lists them")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ratio", type=str, help="fraction of block linear weights to remove (unstructured: [0, 0.99])")
    group.add_argument("--pattern", type=str, help="N:M sparsity, at most N non-zeros per M weights, e.g. 2:4")
    p.add_argument(
        "--method-args",
        default=None,
        metavar="K=V,...",
        help="method options, e.g. damp=0.01,blocksize=64 (see `llmprune methods NAME`)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        metavar="FILE",
        help="YAML recipe: method, ratio/pattern, method_args, calibration (flags override it); "
        "every output holds the recipe.yaml of its run",
    )
    p.add_argument(
        "--calib-dataset",
        default=None,
        help="wikitext2 (default, embedded), c4, ptb, or self: text the model generates itself "
        "(chat models: conversations in their chat template; use it for instruct models)",
    )
    p.add_argument("--calib-samples", type=int, default=None, help="calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=None, help="tokens per calibration window (default 2048)")
    p.add_argument("--seed", type=int, default=None, help="calibration sampling and method seed (default 0)")
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    p.add_argument(
        "--out",
        required=True,
        help="output directory (written atomically); a path ending in .gguf: one GGUF file for llama.cpp "
        "instead (f16; NAME.f32.gguf, NAME.q8_0.gguf, NAME.Q4_1.gguf, NAME.Q4_K_M.gguf for other types), "
        "the run's report in NAME.gguf.report.json",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--data-dir", default=None, help=argparse.SUPPRESS)
    for flag, (_key, const) in DEPRECATED_FLAGS.items():
        dest = "old_" + flag[2:].replace("-", "_")
        if const is None:
            p.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)
        else:
            p.add_argument(flag, dest=dest, action="store_true", help=argparse.SUPPRESS)

    ms = sub.add_parser("methods", help="list the methods, or one method's options")
    ms.add_argument("name", nargs="?", help="a method name: print its options, types, defaults and docs")

    e = sub.add_parser("eval", help="evaluate a model's perplexity and zero-shot accuracy")
    e.add_argument("model", help="a directory written by `llmprune prune`, any HF directory, or smollm2-135m")
    e.add_argument(
        "--ppl",
        default=None,
        help="comma list of wikitext2, ptb, c4 (default wikitext2, none when --zeroshot is given)",
    )
    e.add_argument(
        "--zeroshot",
        default=None,
        help="comma list of piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq, openbookqa "
        "(or all); reads DATA/zeroshot/<task>_<split>.jsonl, scored by lm-eval",
    )
    e.add_argument("--limit", type=int, default=None, help="zero-shot: only the first N items of each task")
    e.add_argument(
        "--items",
        default=None,
        metavar="START:END",
        help="zero-shot: only items START..END-1 of each task (split a long task; clipped to its length)",
    )
    e.add_argument("--batch-size", type=int, default=8, help="zero-shot: lm-eval batch size (default 8)")
    e.add_argument("--save", action="store_true", help="also merge the result into MODEL/eval.json (atomically)")
    e.add_argument("--seqlen", type=int, default=2048, help="window length (default 2048)")
    e.add_argument("--max-windows", type=int, default=None, help="evaluate only the first K windows")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_common(e)

    b = sub.add_parser("bench", help="measure prefill/decode tokens/s, time to first token and memory")
    b.add_argument("model", help="a model directory (e.g. written by `llmprune prune`) or smollm2-135m")
    b.add_argument("--vs", default=None, help="a second model measured in the same run (e.g. the dense one)")
    b.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (default 128)")
    b.add_argument("--new-tokens", type=int, default=64, help="greedy decode steps (default 64)")
    b.add_argument("--batch", type=int, default=8, help="the larger batch size (batch 1 is always measured)")
    b.add_argument("--trials", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.add_argument("--save", default=None, help="also write the JSON result to this file")
    _add_common(b)

    r = sub.add_parser("report", help="compare runs: report.md, report.json and PNG plots")
    r.add_argument("runs", nargs="+", help="run directories (report.json from prune, eval.json from eval --save)")
    r.add_argument("--out", default="report", help="output folder (default ./report)")

    x = sub.add_parser(
        "export", help="write a saved model in another format: a checkpoint vLLM serves, or a GGUF file for llama.cpp"
    )
    x.add_argument("src", help="a directory written by `llmprune prune`, any HF directory, or smollm2-135m")
    x.add_argument(
        "--format",
        required=True,
        help="vllm: DeciLM block_configs (per-block MLP widths, removed attention/MLP/blocks); stock: "
        "the family's own config (uniform widths); layout: llmprune's per-block layout (anything); "
        "gguf: one GGUF file for llama.cpp",
    )
    x.add_argument("--out", required=True, help="output directory (FILE.gguf for gguf), written atomically")
    x.add_argument("--force", action="store_true", help="replace an existing llmprune --out")
    x.add_argument("--dtype", default="float32", help="checkpoint formats: model dtype (float32, bfloat16, float16)")
    x.add_argument("--outtype", default="f32", help="gguf: f32 (default), f16 or q8_0")
    x.add_argument(
        "--quantize",
        default=None,
        help="gguf: re-quantize with llama.cpp to q4_1 or q4_k_m (needs llama-cpp-python: make llamacpp-env)",
    )

    d = sub.add_parser(
        "demo",
        help="prune the embedded model (SoBP 20 %%) and print before/after perplexity, parameters and decode speed",
    )
    d.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    d.add_argument("--method", default="sobp")
    d.add_argument("--ratio", default="0.2")
    d.add_argument("--calib-samples", type=int, default=8)
    d.add_argument("--calib-seqlen", type=int, default=512, help="calibration window length (demo-sized)")
    d.add_argument("--seqlen", type=int, default=2048, help="evaluation window length")
    d.add_argument("--eval-windows", type=int, default=4)
    d.add_argument(
        "--speed-trials", type=int, default=2, help="decode-speed trials, dense vs pruned (structured methods; 0 skips)"
    )
    d.add_argument("--out", default=None, help="also save the pruned model here")
    d.add_argument("--force", action="store_true")
    _add_common(d)
    from . import cli_streamed

    cli_streamed.add_parser(sub)
    return parser


def cmd_prune(args: argparse.Namespace) -> int:
    from . import api
    from .engine.distributed import is_main_process
    from .methods import build_method
    from .recipe import Recipe, load_recipe, parse_method_args

    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    method = args.method or recipe.method
    if not method:
        raise LlmpruneError("no method given: pass --method NAME (`llmprune methods` lists them) or --recipe FILE")
    if args.ratio is not None or args.pattern is not None:
        ratio, pattern = args.ratio, args.pattern  # the command line's target replaces the recipe's
    else:
        ratio, pattern = recipe.ratio, recipe.pattern
    options: dict[str, object] = dict(recipe.method_args)
    options.update(_deprecated_method_args(args))
    options.update(parse_method_args(args.method_args))
    m = build_method(method, ratio, pattern, options)  # every check, before the model is loaded
    gguf = _check_out(args.out, args.force, method=m)
    device = _device(args.device)
    calib = recipe.calibration

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else calib.get(key, default)

    model_name = args.model or recipe.model
    model, tok = api.load(model_name, dtype=args.dtype)
    _check_out(args.out, args.force, model=model, tokenizer=tok, model_name=model_name, gguf=gguf)  # before pruning
    report = api.prune(
        model,
        tok,
        m,
        calib_samples=int(pick(args.calib_samples, "samples", 128)),
        seqlen=int(pick(args.seqlen, "seqlen", 2048)),
        seed=int(pick(args.seed, "seed", 0)),
        device=device,
        calib_dataset=str(pick(args.calib_dataset, "dataset", "wikitext2")),
        data_dir=args.data_dir,
        progress=not args.quiet,
    )
    report.model = model_name or "smollm2-135m"
    if not is_main_process():  # torchrun: every rank holds the same pruned model; rank 0 saves it
        return 0
    api.save(model, tok, args.out, report, force=args.force)
    if report.unstructured is not None:
        print(
            f"{report.method} {report.pattern or report.ratio}: block sparsity "
            f"{report.unstructured.block_sparsity:.4f}, non-zero params {report.params_before:,} -> "
            f"{report.params_after:,}, {report.seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MiB"
        )
    else:
        print(
            f"{report.method}: {report.achieved_ratio:.1%} of block linear weights removed, parameters "
            f"{report.params_before:,} -> {report.params_after:,}, {report.seconds:.1f} s"
        )
    _print_export(report.export)
    print(f"saved to {args.out}")
    return 0


def _check_out(
    out: str,
    force: bool,
    method: Any = None,
    model: Any = None,
    tokenizer: Any = None,
    model_name: str | None = None,
    gguf: Any = None,
) -> Any:
    """Output checks: before loading (``model`` None) and, with the loaded ``model``, before
    pruning. A ``.gguf`` ``--out`` is one GGUF file (returns its target), else a directory."""
    from .export import check_output_dir
    from .export.gguf_out import check_gguf_model, check_gguf_out, is_gguf_out

    if not is_gguf_out(out):
        check_output_dir(out, force, model=model)
        return None
    if gguf is None:
        gguf = check_gguf_out(out, force, method=method)
    if model is not None:  # the report of a CLI run names the model: smollm2-135m when none is given
        check_gguf_model(model, tokenizer, gguf, model_name or "smollm2-135m")
    return gguf


def _print_export(record: dict | None) -> None:
    from .export.save import describe_export

    if record is not None:
        print(describe_export(record))
        if record.get("kind") == "gguf" and "report" in record:
            folder = Path(record["path"]).parent
            print(f"report: {folder / record['report']}, recipe: {folder / record['recipe']}")


def cmd_export(args: argparse.Namespace) -> int:
    if args.format.lower() == "gguf":
        from .export.gguf import describe, export_gguf

        print(describe(export_gguf(args.src, args.out, args.outtype, args.quantize, force=args.force)))
        return 0
    if args.outtype != "f32" or args.quantize is not None:
        raise LlmpruneError(f"--outtype and --quantize apply to --format gguf, not {args.format!r}: drop them")
    from .export.convert import convert

    _print_export(convert(args.src, args.out, args.format, force=args.force, dtype=args.dtype))
    print(f"saved to {args.out}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import get_method, methods

    if args.name is None:
        for name, cls in methods().items():
            print(f"{name:<12} {cls.kind:<12} {cls.summary}")
        print("options of one method: llmprune methods NAME")
        return 0
    cls = get_method(args.name)
    print(f"{cls.name} ({cls.kind}): {cls.summary}")
    fields = cls.Config.model_fields
    if not fields:
        print("  no options")
    for name, f in fields.items():
        from .methods.base import _type_name

        print(f"  {name:<18} {_type_name(f.annotation):<28} default {f.default!r:<10} {f.description or ''}")
    print(
        f"usage: llmprune prune --method {cls.name} --method-args "
        + ",".join(f"{n}=..." for n in list(fields)[:2])
        + (" ..." if len(fields) > 2 else "")
    )
    return 0


def _format_ppl(result: dict) -> str:
    lines = []
    for name, value in result["ppl"].items():
        proto = result["protocol"][name]
        lines.append(f"{name}: ppl {value:.4f}  [{json.dumps(proto, sort_keys=True)}]")
    return "\n".join(lines)


def _format_zeroshot(result: dict) -> str:
    from .eval.zeroshot import mean_accuracy

    lines = []
    for task, score in result.get("zeroshot", {}).items():
        norm = "" if score["acc_norm"] is None else f"  acc_norm {score['acc_norm']:.4f}"
        lines.append(
            f"{task}: acc {score['acc']:.4f}{norm}  n {score['n']}  "
            f"[{json.dumps(result['protocol'][task], sort_keys=True)}]"
        )
    if lines:
        lines.append(
            f"zero-shot mean acc {mean_accuracy(result['zeroshot']):.4f} over {len(result['zeroshot'])} task(s)"
        )
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from . import api

    device = _device(args.device)
    if args.zeroshot:
        from .eval.zeroshot import check_zeroshot

        check_zeroshot(args.zeroshot, args.data_dir, args.limit, args.batch_size, args.items)  # before loading
    if args.save and not Path(args.model).expanduser().is_dir():
        raise LlmpruneError(
            f"--save writes eval.json into the model directory, but {args.model} is not a "
            "directory: evaluate a saved model directory or drop --save"
        )
    model, tok = api.load(args.model, dtype=args.dtype, device=device)
    result = api.evaluate(
        model,
        tok,
        ppl=args.ppl,
        seqlen=args.seqlen,
        max_windows=args.max_windows,
        data_dir=args.data_dir,
        device=device,
        progress=not args.quiet,
        zeroshot=args.zeroshot,
        limit=args.limit,
        batch_size=args.batch_size,
        items=args.items,
    )
    result["model"] = args.model
    if args.save:
        from .eval.record import save_eval

        save_eval(args.model, result)
    text = "\n".join(t for t in (_format_ppl(result), _format_zeroshot(result)) if t)
    print(json.dumps(result) if args.json else text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    data = build_report(args.runs, args.out)
    print(
        f"wrote {Path(args.out) / 'report.md'}, report.json and {len(data['plots'])} plot(s) "
        f"comparing {len(data['runs'])} run(s)"
    )
    return 0


def _format_bench(result: dict) -> str:
    batch = result["protocol"]["batch_sizes"][-1]  # the *_b8 keys hold the --batch size (8 by default)
    keys = [
        ("prefill_tok_s_b1", "prefill tok/s b1"),
        ("prefill_tok_s_b8", f"prefill tok/s b{batch}"),
        ("decode_tok_s_b1", "decode tok/s b1"),
        ("decode_tok_s_b8", f"decode tok/s b{batch}"),
        ("ttft_s", "TTFT s"),
    ]
    lines = [
        "| model | params | weights MiB | " + " | ".join(k[1] for k in keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for name, m in result["models"].items():
        cells = [
            f"{m['metrics'][k]['median']:.4g} ({m['metrics'][k]['min']:.4g}-{m['metrics'][k]['max']:.4g})"
            for k, _ in keys
        ]
        lines.append(f"| {name} | {m['parameters']:,} | {m['weight_mb']:.1f} | " + " | ".join(cells) + " |")
    if "speedup" in result:
        sp = result["speedup"]
        lines.append(
            f"speedup of {sp['of']} vs {sp['vs']} (medians): "
            + ", ".join(f"{k} {v:.3f}x" for k, v in sp.items() if k not in ("of", "vs"))
        )
    lines.append("protocol: " + json.dumps(result["protocol"], sort_keys=True))
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import api
    from .eval.speed import benchmark

    device = _device(args.device)
    for name, value in (
        ("--prompt-len", args.prompt_len),
        ("--new-tokens", args.new_tokens),
        ("--batch", args.batch),
        ("--trials", args.trials),
    ):
        if value < 1:
            raise LlmpruneError(f"{name} {value} must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise LlmpruneError(f"--threads {args.threads} must be at least 1")
        import torch

        torch.set_num_threads(args.threads)
    models = {}
    model, _ = api.load(args.model, dtype=args.dtype, device=device)
    models[str(args.model)] = model
    if args.vs:
        other, _ = api.load(args.vs, dtype=args.dtype, device=device)
        models[str(args.vs) if str(args.vs) != str(args.model) else f"{args.vs} (vs)"] = other
    result = benchmark(
        models,
        device=device,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        batch=args.batch,
        trials=args.trials,
        warmup=args.warmup,
        seed=args.seed,
    )
    result["environment"] = api.environment()
    if args.save:
        from pathlib import Path

        Path(args.save).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result) if args.json else _format_bench(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Prune the embedded model (default: SoBP at 20 % of block weights, demo-sized
    calibration) and print perplexity, parameters and decode speed before and after."""
    import copy

    from . import api

    gguf = _check_out(args.out, args.force) if args.out else None
    device = _device(args.device)
    t0 = time.perf_counter()
    model, tok = api.load(args.model, dtype=args.dtype)
    if args.out:  # the demo's report names no model: as for the default one
        _check_out(args.out, args.force, model=model, tokenizer=tok, gguf=gguf)
    print(
        f"model: {args.model or 'SmolLM2-135M (embedded)'}, {sum(p.numel() for p in model.parameters()):,} parameters"
    )
    kw = dict(
        ppl="wikitext2", seqlen=args.seqlen, max_windows=args.eval_windows, device=device, progress=not args.quiet
    )
    dense = api.evaluate(model, tok, **kw)
    print(f"dense   {_format_ppl(dense)}")
    from .methods import get_method

    structured = get_method(args.method).kind == "structured"
    dense_model = copy.deepcopy(model) if structured and args.speed_trials > 0 else None
    options: dict[str, Any] = {}
    if args.method.lower() == "sobp":
        from .methods.sobp import STAGE3_MIN_TOKENS

        tokens = args.calib_samples * args.calib_seqlen
        if tokens < STAGE3_MIN_TOKENS:
            options["reconstruct"] = False
            print(
                f"sobp stages 1-2 only: stage 3 (reconstruction) helped on SmolLM2-135M only from about "
                f"{STAGE3_MIN_TOKENS:,} calibration tokens, and the demo uses {tokens:,}"
            )
    report = api.prune(
        model,
        tok,
        args.method,
        ratio=args.ratio,
        calib_samples=args.calib_samples,
        seqlen=args.calib_seqlen,
        device=device,
        progress=not args.quiet,
        **options,
    )
    print(
        f"pruned with {report.method} ratio {report.ratio} "
        f"(calibration {args.calib_samples} x {args.calib_seqlen} WikiText-2 train tokens, demo-sized), "
        f"{report.seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MiB"
    )
    pruned = api.evaluate(model, tok, **kw)
    print(f"pruned  {_format_ppl(pruned)}")
    if structured:
        print(
            f"parameters: {report.params_before:,} -> {report.params_after:,} "
            f"({1 - report.params_after / report.params_before:.1%} fewer; "
            f"block linears {report.achieved_ratio:.1%} removed)"
        )
    else:
        print(
            f"non-zero parameters: {report.params_before:,} -> {report.params_after:,} "
            f"(block linears {report.achieved_ratio:.1%} sparse; same tensor shapes, so no speedup)"
        )
    if dense_model is not None:
        from .eval.speed import benchmark

        speed = benchmark(
            {"pruned": model, "dense": dense_model},
            device=device,
            prompt_len=64,
            new_tokens=32,
            trials=args.speed_trials,
        )
        del dense_model
        m = {n: speed["models"][n]["metrics"] for n in ("dense", "pruned")}
        print(
            f"decode tokens/s (batch 1, median of {args.speed_trials}): dense {m['dense']['decode_tok_s_b1']['median']:.1f}"
            f" -> pruned {m['pruned']['decode_tok_s_b1']['median']:.1f} "
            f"({speed['speedup']['decode_tok_s_b1']:.2f}x); batch 8: {speed['speedup']['decode_tok_s_b8']:.2f}x"
        )
        report.speed = speed
    if args.out:
        report.eval = {"dense": dense, "pruned": pruned}
        api.save(model, tok, args.out, report, force=args.force)
        _print_export(report.export)
        print(f"saved to {args.out}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import cli_streamed

    if getattr(args, "quiet", False):  # transformers' own bars too ("Loading weights")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    handler = {
        "prune": cmd_prune,
        "eval": cmd_eval,
        "bench": cmd_bench,
        "demo": cmd_demo,
        "report": cmd_report,
        "methods": cmd_methods,
        "export": cmd_export,
        "prune-streamed": cli_streamed.cmd,
    }[args.command]
    try:
        return handler(args)
    except LlmpruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        from .checks import OUT_OF_MEMORY

        if not isinstance(exc, OUT_OF_MEMORY):
            raise
        print(
            f"error: out of memory ({type(exc).__name__}): lower --calib-samples/--seqlen/--batch-size, "
            "use --offload or a larger machine",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
