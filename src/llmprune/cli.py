"""Command line: ``llmprune prune | eval | bench | report | demo``, thin over :mod:`llmprune.api`.

User mistakes print one line ``error: ...`` naming the fix and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import LlmpruneError


def _device(value: str) -> str:
    import torch

    if value.startswith("cuda") and not torch.cuda.is_available():
        raise LlmpruneError(f"device {value} requested but CUDA is not available: use --device cpu")
    if value != "cpu" and not value.startswith("cuda"):
        raise LlmpruneError(f"unknown device {value!r}: use cpu or cuda[:N]")
    return value


def _refit_damp(value: str) -> float | str:
    if value == "heldout":
        return value
    try:
        damp = float(value)
    except ValueError:
        damp = -1.0
    if not damp > 0:
        raise LlmpruneError(f"--refit-damp {value!r}: use 'heldout' or a positive number such as 0.01")
    return damp


def _structured_names() -> set[str]:
    from .methods.structured import structured_methods

    return set(structured_methods())


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    p.add_argument("--data-dir", default=None,
                   help="folder holding ptb/, c4/, zeroshot/ (and optionally wikitext2/); WikiText-2 ships inside the package")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmprune", description="Retraining-free pruning of causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model and write it to --out")
    p.add_argument("--model", default=None, help="smollm2-135m (default, embedded), a local HF directory or a hub id")
    p.add_argument("--method", required=True, help="magnitude, wanda, sparsegpt, mrp (unstructured); wanda-sp, flap, shortgpt, sobp, disp, pg (structured); manual (--spec)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ratio", type=str, help="fraction of block linear weights to remove, in [0, 0.99]")
    group.add_argument("--pattern", type=str, help="N:M sparsity, at most N non-zeros per M weights, e.g. 2:4")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--calib-dataset", default="wikitext2", help="wikitext2 (default, embedded), c4, ptb")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration window (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--damp", type=float, default=None, help="SparseGPT dampening (default 0.01)")
    p.add_argument("--blocksize", type=int, default=None, help="SparseGPT column block (default 128)")
    p.add_argument("--update", choices=("none", "sparsegpt", "mrp"), default=None,
                   help="magnitude/wanda: compensate the mask with SparseGPT's or MRP's weight update")
    p.add_argument("--no-refine", action="store_true", help="sobp: skip stage 2 (local greedy OBS refinement)")
    p.add_argument("--no-reconstruct", action="store_true", help="sobp: skip stage 3 (module-wise reconstruction)")
    p.add_argument("--uniform", action="store_true", help="sobp: same counts in every layer (no global allocation)")
    p.add_argument("--checkpointing", action="store_true", help="sobp: activation checkpointing in stage 1")
    p.add_argument("--refit-prior", choices=("current", "zero"), default=None,
                   help="sobp stage 3: ridge the least-squares refit towards the stage-2 weights (current, "
                        "default) or towards zero")
    p.add_argument("--refit-damp", default=None, metavar="{heldout,FLOAT}",
                   help="sobp stage 3: ridge dampening of the refit (default: --damp), or 'heldout' to choose it per "
                        "module by two-fold cross-validation on the calibration samples (may keep stage-2 weights)")
    p.add_argument("--refit-target", choices=("auto", "module", "stream"), default=None,
                   help="sobp stage 3: reproduce the dense residual stream (stream: also cancels the error the pruned "
                        "stream brings into each block) or the dense module outputs (module); auto (default): stream "
                        "unless a block normalises its module outputs (Gemma 2/3), module there")
    p.add_argument("--allow-empty", action="store_true", help="structured: a layer may lose all heads or channels")
    p.add_argument("--steps", type=int, default=None, help="disp: hypernetwork training steps (default 200); "
                   "pg: policy-gradient steps (default 200)")
    p.add_argument("--lr", type=float, default=None, help="disp: hypernetwork AdamW learning rate (default 1e-2); "
                   "pg: learning rate of the keep probabilities, cosine decay (default 0.01)")
    p.add_argument("--batch-size", type=int, default=None, help="pg: calibration windows per forward (default 1)")
    p.add_argument("--samples-per-step", type=int, default=None, help="pg: masks sampled per batch, K >= 2 (default 2)")
    p.add_argument("--budget", choices=("family", "params"), default=None,
                   help="pg: keep ratio per unit family (default, official code) or one parameter budget across "
                        "KV groups, channels and whole blocks")
    p.add_argument("--pg-init", choices=("wanda-sp", "constant", "random"), default=None,
                   help="pg: initial keep probabilities (default wanda-sp)")
    p.add_argument("--pg-units", default=None,
                   help="pg: comma list of groups, channels, blocks (default groups,channels; all three with --budget params)")
    p.add_argument("--pg-keep-best", type=int, default=None, metavar="N",
                   help="pg: every N steps score the top-k mask on --pg-select-samples calibration windows and "
                        "ship the best one seen, the initialisation included (our option; default 10; 0 = off, the paper)")
    p.add_argument("--pg-select-samples", type=int, default=None,
                   help="pg: calibration windows that score the top-k mask for --pg-keep-best (default 4)")
    p.add_argument("--offload", action="store_true",
                   help="pg, disp: only the running block on --device during each forward (and DISP's recomputation in "
                        "the backward pass): models larger than device memory")
    p.add_argument("--disp-lambda", type=float, default=None, help="disp: weight of the parameter loss (default 16)")
    p.add_argument("--disp-target", default=None,
                   help="disp: --ratio is a fraction of 'total' parameters (default, the paper's) or of 'block' "
                        "linear weights")
    p.add_argument("--disp-estimator", default=None, help="disp: hard-mask gradient 'st' (default) or 'reinmax'")
    p.add_argument("--disp-batch", type=int, default=None, help="disp: calibration windows per step (default 1)")
    p.add_argument("--disp-bf16", default="auto", choices=("auto", "on", "off"),
                   help="disp: bf16 autocast of the frozen model (auto: on for CUDA with bf16, off on CPU)")
    p.add_argument("--disp-no-checkpointing", action="store_true",
                   help="disp: keep all activations instead of per-block gradient checkpointing")
    p.add_argument("--spec", default=None, help="--method manual: YAML/JSON plan of what to remove per layer")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    _add_common(p)

    e = sub.add_parser("eval", help="evaluate a model's perplexity and zero-shot accuracy")
    e.add_argument("model", help="a directory written by `llmprune prune`, any HF directory, or smollm2-135m")
    e.add_argument("--ppl", default=None,
                   help="comma list of wikitext2, ptb, c4 (default wikitext2, none when --zeroshot is given)")
    e.add_argument("--zeroshot", default=None,
                   help="comma list of piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq, openbookqa "
                        "(or all); reads DATA/zeroshot/<task>_<split>.jsonl, scored by lm-eval")
    e.add_argument("--limit", type=int, default=None, help="zero-shot: only the first N items of each task")
    e.add_argument("--items", default=None, metavar="START:END",
                   help="zero-shot: only items START..END-1 of each task (split a long task; clipped to its length)")
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

    d = sub.add_parser("demo", help="prune the embedded model (SoBP 20 %%) and print before/after perplexity, "
                                    "parameters and decode speed")
    d.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    d.add_argument("--method", default="sobp")
    d.add_argument("--ratio", default="0.2")
    d.add_argument("--calib-samples", type=int, default=8)
    d.add_argument("--calib-seqlen", type=int, default=512, help="calibration window length (demo-sized)")
    d.add_argument("--seqlen", type=int, default=2048, help="evaluation window length")
    d.add_argument("--eval-windows", type=int, default=4)
    d.add_argument("--speed-trials", type=int, default=2,
                   help="decode-speed trials, dense vs pruned (structured methods; 0 skips)")
    d.add_argument("--out", default=None, help="also save the pruned model here")
    d.add_argument("--force", action="store_true")
    _add_common(d)
    from . import cli_streamed

    cli_streamed.add_parser(sub)
    return parser


def cmd_prune(args: argparse.Namespace) -> int:
    from . import api
    from .export import check_output_dir
    from .solvers.sparsity import Sparsity

    if args.method.lower() == "manual":
        from .surgery import load_plan

        if args.ratio is not None or args.pattern is not None:
            raise LlmpruneError("--method manual takes --spec FILE, not --ratio/--pattern")
        if args.spec is None:
            raise LlmpruneError("--method manual needs --spec FILE listing what to remove per layer")
        load_plan(args.spec)  # validate before loading anything
    elif args.method.lower() in _structured_names():
        if args.pattern is not None or args.ratio is None:
            raise LlmpruneError(f"{args.method} is structured: give --ratio R (fraction of block weights), not --pattern")
        Sparsity.parse(ratio=args.ratio)
    else:
        Sparsity.parse(ratio=args.ratio, pattern=args.pattern)  # validate before loading anything
    from .methods.update import check_update

    check_update(args.method, args.update)
    check_output_dir(args.out, args.force)
    device = _device(args.device)
    options = {k: v for k, v in (("damp", args.damp), ("blocksize", args.blocksize), ("spec", args.spec))
               if v is not None}
    if args.method.lower() == "sobp":
        options.update(refine=not args.no_refine, reconstruct=not args.no_reconstruct,
                       global_selection=not args.uniform, checkpointing=args.checkpointing)
        if args.refit_prior is not None:
            options["refit_prior"] = args.refit_prior
        if args.refit_damp is not None:
            options["refit_damp"] = _refit_damp(args.refit_damp)
        if args.refit_target is not None:
            options["refit_target"] = args.refit_target
    elif args.no_refine or args.no_reconstruct or args.uniform or args.checkpointing or args.refit_prior or \
            args.refit_damp or args.refit_target:
        raise LlmpruneError("--no-refine/--no-reconstruct/--uniform/--checkpointing/--refit-prior/--refit-damp/"
                            "--refit-target are SoBP options: use --method sobp")
    disp_flags = (args.disp_lambda, args.disp_target, args.disp_estimator, args.disp_batch)
    if args.method.lower() == "disp":
        from .methods.disp import DISP

        options.update({k: v for k, v in (("steps", args.steps), ("lr", args.lr), ("lam", args.disp_lambda),
                                          ("target", args.disp_target), ("estimator", args.disp_estimator),
                                          ("batch_size", args.disp_batch)) if v is not None})
        options["checkpointing"] = not args.disp_no_checkpointing
        if args.offload:
            options["offload"] = True
        if args.disp_bf16 != "auto":
            options["autocast"] = args.disp_bf16 == "on"
        DISP(float(args.ratio), **options)  # validate before loading anything
    elif any(v is not None for v in disp_flags) or args.disp_no_checkpointing or args.disp_bf16 != "auto":
        raise LlmpruneError("--disp-* options belong to --method disp")
    pg_flags = {k: v for k, v in (("batch_size", args.batch_size), ("samples_per_step", args.samples_per_step),
                                  ("budget", args.budget), ("init", args.pg_init), ("units", args.pg_units),
                                  ("keep_best", args.pg_keep_best), ("select_samples", args.pg_select_samples),
                                  ("offload", (args.offload or None) if args.method.lower() != "disp" else None))
                if v is not None}
    if args.method.lower() == "pg":
        from .methods.pg import PG

        options.update(pg_flags)
        options.update({k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None})
        try:
            PG(float(args.ratio), **options)  # validate before loading anything
        except TypeError as exc:
            raise LlmpruneError(f"bad option for method pg: {exc}") from None
    elif pg_flags:
        raise LlmpruneError("--batch-size/--samples-per-step/--budget/--pg-init/--pg-units/--pg-keep-best/--pg-select-samples/--offload "
                            "belong to --method pg (--offload also to --method disp)")
    if args.allow_empty:
        options["allow_empty"] = True
    model, tok = api.load(args.model, dtype=args.dtype)
    check_output_dir(args.out, args.force, model=model)  # free space for this model, before pruning
    report = api.prune(model, tok, args.method, ratio=args.ratio, pattern=args.pattern,
                       calib_samples=args.calib_samples, seqlen=args.seqlen, seed=args.seed, device=device,
                       calib_dataset=args.calib_dataset, data_dir=args.data_dir, progress=not args.quiet,
                       update=args.update, **options)
    report["model"] = args.model or "smollm2-135m"
    from .methods.disp import is_main_process

    if not is_main_process():  # torchrun: every rank holds the same pruned model; rank 0 saves it
        return 0
    api.save(model, tok, args.out, report, force=args.force)
    if "block_sparsity" in report:
        print(f"{report['method']} {report['pattern'] or report['ratio']}: block sparsity "
              f"{report['block_sparsity']:.4f}, non-zero params {report['params_before']:,} -> "
              f"{report['params_after']:,}, {report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MiB")
    else:
        print(f"{report['method']}: {report.get('achieved_ratio', report['ratio']):.1%} of block linear weights removed, parameters "
              f"{report['params_before']:,} -> {report['params_after']:,}, {report['seconds']:.1f} s")
    print(f"saved to {args.out}")
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
        lines.append(f"{task}: acc {score['acc']:.4f}{norm}  n {score['n']}  "
                     f"[{json.dumps(result['protocol'][task], sort_keys=True)}]")
    if lines:
        lines.append(f"zero-shot mean acc {mean_accuracy(result['zeroshot']):.4f} over {len(result['zeroshot'])} task(s)")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from . import api

    device = _device(args.device)
    if args.zeroshot:
        from .eval.zeroshot import check_zeroshot

        check_zeroshot(args.zeroshot, args.data_dir, args.limit, args.batch_size, args.items)  # before loading
    if args.save and not Path(args.model).expanduser().is_dir():
        raise LlmpruneError(f"--save writes eval.json into the model directory, but {args.model} is not a "
                            "directory: evaluate a saved model directory or drop --save")
    model, tok = api.load(args.model, dtype=args.dtype, device=device)
    result = api.evaluate(model, tok, ppl=args.ppl, seqlen=args.seqlen, max_windows=args.max_windows,
                          data_dir=args.data_dir, device=device, progress=not args.quiet,
                          zeroshot=args.zeroshot, limit=args.limit, batch_size=args.batch_size, items=args.items)
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
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and {len(data['plots'])} plot(s) "
          f"comparing {len(data['runs'])} run(s)")
    return 0


def _format_bench(result: dict) -> str:
    batch = result["protocol"]["batch_sizes"][-1]  # the *_b8 keys hold the --batch size (8 by default)
    keys = [("prefill_tok_s_b1", "prefill tok/s b1"), ("prefill_tok_s_b8", f"prefill tok/s b{batch}"),
            ("decode_tok_s_b1", "decode tok/s b1"), ("decode_tok_s_b8", f"decode tok/s b{batch}"),
            ("ttft_s", "TTFT s")]
    lines = ["| model | params | weights MiB | " + " | ".join(k[1] for k in keys) + " |",
             "|---|---:|---:|" + "---:|" * len(keys)]
    for name, m in result["models"].items():
        cells = [f"{m['metrics'][k]['median']:.4g} ({m['metrics'][k]['min']:.4g}-{m['metrics'][k]['max']:.4g})"
                 for k, _ in keys]
        lines.append(f"| {name} | {m['parameters']:,} | {m['weight_mb']:.1f} | " + " | ".join(cells) + " |")
    if "speedup" in result:
        sp = result["speedup"]
        lines.append(f"speedup of {sp['of']} vs {sp['vs']} (medians): " + ", ".join(
            f"{k} {v:.3f}x" for k, v in sp.items() if k not in ("of", "vs")))
    lines.append("protocol: " + json.dumps(result["protocol"], sort_keys=True))
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import api
    from .eval.speed import benchmark

    device = _device(args.device)
    for name, value in (("--prompt-len", args.prompt_len), ("--new-tokens", args.new_tokens),
                        ("--batch", args.batch), ("--trials", args.trials)):
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
    result = benchmark(models, device=device, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                       batch=args.batch, trials=args.trials, warmup=args.warmup, seed=args.seed)
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
    from .export import check_output_dir

    if args.out:
        check_output_dir(args.out, args.force)
    device = _device(args.device)
    t0 = time.perf_counter()
    model, tok = api.load(args.model, dtype=args.dtype)
    if args.out:
        check_output_dir(args.out, args.force, model=model)
    print(f"model: {args.model or 'SmolLM2-135M (embedded)'}, {sum(p.numel() for p in model.parameters()):,} parameters")
    kw = dict(ppl="wikitext2", seqlen=args.seqlen, max_windows=args.eval_windows, device=device,
              progress=not args.quiet)
    dense = api.evaluate(model, tok, **kw)
    print(f"dense   {_format_ppl(dense)}")
    structured = args.method.lower() in _structured_names()
    dense_model = copy.deepcopy(model) if structured and args.speed_trials > 0 else None
    options = {}
    if args.method.lower() == "sobp":
        from .methods.sobp import STAGE3_MIN_TOKENS

        tokens = args.calib_samples * args.calib_seqlen
        if tokens < STAGE3_MIN_TOKENS:
            options["reconstruct"] = False
            print(f"sobp stages 1-2 only: stage 3 (reconstruction) helped on SmolLM2-135M only from about "
                  f"{STAGE3_MIN_TOKENS:,} calibration tokens, and the demo uses {tokens:,}")
    report = api.prune(model, tok, args.method, ratio=args.ratio, calib_samples=args.calib_samples,
                       seqlen=args.calib_seqlen, device=device, progress=not args.quiet, **options)
    print(f"pruned with {report['method']} ratio {report['ratio']} "
          f"(calibration {args.calib_samples} x {args.calib_seqlen} WikiText-2 train tokens, demo-sized), "
          f"{report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MiB")
    pruned = api.evaluate(model, tok, **kw)
    print(f"pruned  {_format_ppl(pruned)}")
    if structured:
        print(f"parameters: {report['params_before']:,} -> {report['params_after']:,} "
              f"({1 - report['params_after'] / report['params_before']:.1%} fewer; "
              f"block linears {report['achieved_ratio']:.1%} removed)")
    else:
        print(f"non-zero parameters: {report['params_before']:,} -> {report['params_after']:,} "
              f"(block linears {report['block_sparsity']:.1%} sparse; same tensor shapes, so no speedup)")
    if dense_model is not None:
        from .eval.speed import benchmark

        speed = benchmark({"pruned": model, "dense": dense_model}, device=device, prompt_len=64, new_tokens=32,
                          trials=args.speed_trials)
        del dense_model
        m = {n: speed["models"][n]["metrics"] for n in ("dense", "pruned")}
        print(f"decode tokens/s (batch 1, median of {args.speed_trials}): dense {m['dense']['decode_tok_s_b1']['median']:.1f}"
              f" -> pruned {m['pruned']['decode_tok_s_b1']['median']:.1f} "
              f"({speed['speedup']['decode_tok_s_b1']:.2f}x); batch 8: {speed['speedup']['decode_tok_s_b8']:.2f}x")
        report["speed"] = speed
    if args.out:
        report["eval"] = {"dense": dense, "pruned": pruned}
        api.save(model, tok, args.out, report, force=args.force)
        print(f"saved to {args.out}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import cli_streamed

    handler = {"prune": cmd_prune, "eval": cmd_eval, "bench": cmd_bench, "demo": cmd_demo,
               "report": cmd_report, "prune-streamed": cli_streamed.cmd}[args.command]
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
        print(f"error: out of memory ({type(exc).__name__}): lower --calib-samples/--seqlen/--batch-size, "
              "use --offload or a larger machine", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
