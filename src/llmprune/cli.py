"""Command line: ``llmprune prune | eval | demo``, thin over :mod:`llmprune.api`.

User mistakes print one line ``error: ...`` naming the fix and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from .errors import LlmpruneError


def _device(value: str) -> str:
    import torch

    if value.startswith("cuda") and not torch.cuda.is_available():
        raise LlmpruneError(f"device {value} requested but CUDA is not available: use --device cpu")
    if value != "cpu" and not value.startswith("cuda"):
        raise LlmpruneError(f"unknown device {value!r}: use cpu or cuda[:N]")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="compute device: cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="float32", help="model dtype: float32, bfloat16, float16")
    p.add_argument("--data-dir", default=None,
                   help="folder holding ptb/ and c4/ (and optionally wikitext2/); WikiText-2 ships inside the package")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmprune", description="Retraining-free pruning of causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model and write it to --out")
    p.add_argument("--model", default=None, help="smollm2-135m (default, embedded), a local HF directory or a hub id")
    p.add_argument("--method", required=True, help="magnitude, wanda, sparsegpt")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--ratio", type=str, help="fraction of block linear weights to remove, in [0, 0.99]")
    group.add_argument("--pattern", type=str, help="N:M sparsity, at most N non-zeros per M weights, e.g. 2:4")
    p.add_argument("--calib-samples", type=int, default=128, help="calibration windows (default 128)")
    p.add_argument("--calib-dataset", default="wikitext2", help="wikitext2 (default, embedded), c4, ptb")
    p.add_argument("--seqlen", type=int, default=2048, help="tokens per calibration window (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--damp", type=float, default=None, help="SparseGPT dampening (default 0.01)")
    p.add_argument("--blocksize", type=int, default=None, help="SparseGPT column block (default 128)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    _add_common(p)

    e = sub.add_parser("eval", help="evaluate a model's perplexity")
    e.add_argument("model", help="a directory written by `llmprune prune`, any HF directory, or smollm2-135m")
    e.add_argument("--ppl", default="wikitext2", help="comma list of wikitext2, ptb, c4 (default wikitext2)")
    e.add_argument("--seqlen", type=int, default=2048, help="window length (default 2048)")
    e.add_argument("--max-windows", type=int, default=None, help="evaluate only the first K windows")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _add_common(e)

    d = sub.add_parser("demo", help="prune the embedded model and print before/after perplexity")
    d.add_argument("--method", default="sparsegpt")
    d.add_argument("--ratio", default="0.5")
    d.add_argument("--calib-samples", type=int, default=16)
    d.add_argument("--seqlen", type=int, default=2048)
    d.add_argument("--eval-windows", type=int, default=8)
    d.add_argument("--out", default=None, help="also save the pruned model here")
    d.add_argument("--force", action="store_true")
    _add_common(d)
    return parser


def cmd_prune(args: argparse.Namespace) -> int:
    from . import api
    from .export import check_output_dir
    from .solvers.sparsity import Sparsity

    Sparsity.parse(ratio=args.ratio, pattern=args.pattern)  # validate before loading anything
    check_output_dir(args.out, args.force)
    device = _device(args.device)
    options = {k: v for k, v in (("damp", args.damp), ("blocksize", args.blocksize)) if v is not None}
    model, tok = api.load(args.model, dtype=args.dtype)
    report = api.prune(model, tok, args.method, ratio=args.ratio, pattern=args.pattern,
                       calib_samples=args.calib_samples, seqlen=args.seqlen, seed=args.seed, device=device,
                       calib_dataset=args.calib_dataset, data_dir=args.data_dir, progress=not args.quiet,
                       **options)
    report["model"] = args.model or "smollm2-135m"
    api.save(model, tok, args.out, report, force=args.force)
    print(f"{report['method']} {report['pattern'] or report['ratio']}: block sparsity "
          f"{report['block_sparsity']:.4f}, non-zero params {report['params_before']:,} -> "
          f"{report['params_after']:,}, {report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MiB")
    print(f"saved to {args.out}")
    return 0


def _format_ppl(result: dict) -> str:
    lines = []
    for name, value in result["ppl"].items():
        proto = result["protocol"][name]
        lines.append(f"{name}: ppl {value:.4f}  [{json.dumps(proto, sort_keys=True)}]")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from . import api

    device = _device(args.device)
    model, tok = api.load(args.model, dtype=args.dtype, device=device)
    result = api.evaluate(model, tok, ppl=args.ppl, seqlen=args.seqlen, max_windows=args.max_windows,
                          data_dir=args.data_dir, device=device, progress=not args.quiet)
    result["model"] = args.model
    print(json.dumps(result) if args.json else _format_ppl(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import api
    from .export import check_output_dir

    if args.out:
        check_output_dir(args.out, args.force)
    device = _device(args.device)
    t0 = time.perf_counter()
    model, tok = api.load(None, dtype=args.dtype)
    print(f"model: SmolLM2-135M (embedded), {sum(p.numel() for p in model.parameters()):,} parameters")
    kw = dict(ppl="wikitext2", seqlen=args.seqlen, max_windows=args.eval_windows, device=device,
              progress=not args.quiet)
    dense = api.evaluate(model, tok, **kw)
    print(f"dense   {_format_ppl(dense)}")
    report = api.prune(model, tok, args.method, ratio=args.ratio, calib_samples=args.calib_samples,
                       seqlen=args.seqlen, device=device, progress=not args.quiet)
    print(f"pruned with {report['method']} ratio {report['ratio']} "
          f"(calibration {args.calib_samples} x {args.seqlen} WikiText-2 train tokens, demo-sized), "
          f"{report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MiB")
    pruned = api.evaluate(model, tok, **kw)
    print(f"pruned  {_format_ppl(pruned)}")
    print(f"non-zero parameters: {report['params_before']:,} -> {report['params_after']:,} "
          f"(block linears {report['block_sparsity']:.1%} sparse)")
    if args.out:
        report["eval"] = {"dense": dense, "pruned": pruned}
        api.save(model, tok, args.out, report, force=args.force)
        print(f"saved to {args.out}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"prune": cmd_prune, "eval": cmd_eval, "demo": cmd_demo}[args.command]
    try:
        return handler(args)
    except LlmpruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
