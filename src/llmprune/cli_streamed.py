"""``llmprune prune-streamed``: the command line of :func:`llmprune.prune_streamed`."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune-streamed",
        help="prune a model larger than memory block by block from disk (magnitude, wanda, sparsegpt, mrp; "
        "wanda-sp, flap, shortgpt in two passes; sobp, llm-pruner); resumable",
    )
    p.add_argument(
        "--model", default=None, help="local Hugging Face directory with safetensors (default: SmolLM2-135M)"
    )
    p.add_argument(
        "--method",
        required=True,
        help="magnitude, wanda, sparsegpt, mrp (unstructured); wanda-sp, flap, shortgpt, sobp, llm-pruner (structured)",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--ratio", type=float, help="fraction of block linear weights to remove")
    group.add_argument("--pattern", type=str, help="N:M sparsity, e.g. 2:4 (unstructured methods)")
    p.add_argument(
        "--method-args",
        default=None,
        metavar="K=V,...",
        help="method options as for `llmprune prune`, e.g. units=servable,bias_compensation=false",
    )
    p.add_argument("--out", required=True, help="output directory (appears only when complete)")
    p.add_argument("--calib-samples", type=int, default=128)
    p.add_argument("--calib-dataset", default="wikitext2")
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--damp", type=float, default=None)
    p.add_argument("--blocksize", type=int, default=None)
    p.add_argument("--update", choices=("none", "sparsegpt", "mrp"), default=None)
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16 (default float32 on cpu, bfloat16 on cuda)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--activations",
        choices=("memory", "disk"),
        default="memory",
        help="keep the calibration activations in memory or in memory-mapped files",
    )
    p.add_argument("--no-resume", action="store_true", help="discard an unfinished run of --out instead of resuming it")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true")


def cmd(args: argparse.Namespace) -> int:
    from .export.save import describe_export
    from .recipe import parse_method_args
    from .streamed import prune_streamed

    options: dict[str, object] = dict(parse_method_args(args.method_args))
    for key, value in (("damp", args.damp), ("blocksize", args.blocksize)):
        if value is not None:
            options[key] = value
    report = prune_streamed(
        args.model,
        args.method,
        args.out,
        ratio=args.ratio,
        pattern=args.pattern,
        calib_samples=args.calib_samples,
        seqlen=args.seqlen,
        seed=args.seed,
        calib_dataset=args.calib_dataset,
        data_dir=args.data_dir,
        dtype=args.dtype,
        device=args.device,
        activations=args.activations,
        resume=not args.no_resume,
        force=args.force,
        progress=not args.quiet,
        update=args.update,
        **options,
    )
    if report.get("kind") == "structured":  # a PruneReport: the streamed record is in details
        streamed = report["details"]["streamed"]
        resumed = streamed["resumed_from_block"]
        how = f"({streamed['passes']}; " if "passes" in streamed else "in two passes ("
        print(
            f"pruned {streamed['blocks']} blocks with {report['method']} streamed {how}"
            f"{'resumed at step ' + str(resumed) + ', ' if resumed else ''}{streamed['kept_blocks']} blocks kept, "
            f"{report['structured']['achieved_ratio']:.1%} of block linear weights removed, {streamed['dtype']}), "
            f"{report['seconds']:.1f} s, peak RSS {report['peak_rss_mb']:.0f} MiB; saved to {args.out}"
        )
        print(describe_export(report["export"]))
        return 0
    resumed = report["streamed"]["resumed_from_block"]
    print(
        f"pruned {report['streamed']['blocks']} blocks with {report['method']} streamed "
        f"({'resumed at block ' + str(resumed) + ', ' if resumed else ''}block linears "
        f"{report['block_sparsity']:.1%} sparse, {report['dtype']}), {report['seconds']:.1f} s, "
        f"peak RSS {report['peak_rss_mb']:.0f} MiB; saved to {args.out}"
    )
    return 0
