"""``prune_streamed``: prune a model larger than memory, block by block from disk.

The unstructured layer-wise methods (magnitude, Wanda, SparseGPT, MRP; the same
``prune_weight`` and statistics as :func:`llmprune.prune`) run on
:mod:`llmprune.engine.streaming`: only the embeddings/norm/LM head and one decoder block
are in memory at a time, each pruned block goes straight into its output shard, and a
killed run resumes from the last finished block (:mod:`llmprune.engine.resume`). The
output is a normal Hugging Face checkpoint (config, safetensors shards + index,
tokenizer, ``report.json``) that appears under its final name only when complete.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import LlmpruneError

ACTIVATIONS = ("memory", "disk")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype(device: str) -> str:
    """float32 on CPU, bfloat16 on CUDA."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def _check_device(device: str) -> torch.device:
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise LlmpruneError(f"device {device} requested but CUDA is not available: use device='cpu'")
    elif str(device) != "cpu":
        raise LlmpruneError(f"unknown device {device!r}: use cpu or cuda[:N]")
    return torch.device(device)


def _dtype(name: str | torch.dtype) -> tuple[str, torch.dtype]:
    if isinstance(name, torch.dtype):
        for key, value in DTYPES.items():
            if value == name:
                return key, value
    key = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(str(name), str(name))
    if key not in DTYPES:
        raise LlmpruneError(f"unknown dtype {name!r}: use float32, bfloat16 or float16")
    return key, DTYPES[key]


def _source_dir(model_dir: str | os.PathLike | None) -> Path:
    from .models.loading import resolve_model

    from .models.checkpoint import check_format, check_trusted

    source = Path(resolve_model(model_dir))
    if not source.is_dir():
        raise LlmpruneError(
            f"streaming reads a local checkpoint, and {model_dir!r} is not a directory: "
            "download the model first (e.g. huggingface-cli download) and pass its folder"
        )
    check_trusted(source)
    check_format(source)
    return source


def _method(
    name: str, ratio: float | None, pattern: str | None, update: str | None, options: dict
) -> tuple[Any, Any, str | None]:
    """The unstructured method ``name`` built and validated by its Config (``update`` is its
    ``update`` option)."""
    from .methods import get_method, method_names
    from .methods.unstructured import LayerwiseMethod

    cls = get_method(name)
    if not issubclass(cls, LayerwiseMethod):
        raise LlmpruneError(
            f"streamed pruning runs the unstructured methods "
            f"({', '.join(method_names('unstructured'))}), not {name!r}: use llmprune.prune "
            "for structured methods"
        )
    if update is not None:
        options = dict(options, update=update)
    method_obj = cls.build(ratio, pattern, options)
    assert isinstance(method_obj, LayerwiseMethod)
    return method_obj, method_obj.sparsity, getattr(method_obj, "update", None)


def _nonzero(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t).item())


def _prune_streamed(
    model_dir: str | os.PathLike | None,
    method: str,
    out: str | os.PathLike,
    ratio: float | None = None,
    pattern: str | None = None,
    *,
    calib_samples: int = 128,
    seqlen: int = 2048,
    seed: int = 0,
    calib_dataset: str = "wikitext2",
    data_dir: str | os.PathLike | None = None,
    calib_ids: torch.Tensor | None = None,
    dtype: str | torch.dtype | None = None,
    device: str = "cpu",
    activations: str = "memory",
    resume: bool = True,
    force: bool = False,
    progress: bool = True,
    update: str | None = None,
    on_block_done: Callable[[int], None] | None = None,
    **options: Any,
) -> dict:
    """Prune the checkpoint in ``model_dir`` (None: the default SmolLM2-135M) block by block
    from disk and write the pruned checkpoint to ``out``; return the report.

    ``dtype`` (default float32 on CPU, bfloat16 on CUDA) is the precision the blocks run
    in and are written in; statistics are accumulated in float32/float64 and the solvers
    factorise in float32/float64 whatever it is. ``activations="disk"`` keeps the two
    copies of the calibration activations in memory-mapped files next to the output.
    ``resume`` continues an unfinished run with the same settings from its last finished
    block (``False`` starts again). ``calib_ids`` ([n, L] token ids) replaces the
    calibration windows drawn from ``calib_dataset``. ``on_block_done(i)`` is called after
    block ``i`` is committed. Other keywords go to the method (e.g. ``damp``).
    """
    from transformers import AutoConfig

    from . import api
    from .engine.layerwise import LayerwiseEngine, peak_rss_mb
    from .engine.resume import Progress, RunState, fingerprint
    from .engine.streaming import (
        CheckpointReader,
        DiskActivations,
        StreamRunner,
        build_skeleton,
        module_prefix,
        persistent_names,
        set_tensor,
        to_meta,
    )
    from .export import check_output_dir
    from .modeling.modeling_llmprune import LAYOUT_KEY
    from .export.shards import shard_name, write_index, write_shard
    from .models import get_adapter

    t0 = time.perf_counter()
    out_path = check_output_dir(Path(out), force)
    dev = _check_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LlmpruneError(
            "prune-streamed runs in one process; under torchrun use `llmprune prune` (data-parallel "
            "calibration), or run prune-streamed without torchrun"
        )
    dtype_name, torch_dtype = _dtype(dtype if dtype is not None else default_dtype(device))
    if activations not in ACTIVATIONS:
        raise LlmpruneError(f"activations={activations!r}: use 'memory' or 'disk'")
    method_obj, sparsity, update = _method(method, ratio, pattern, update, options)
    needs_calib = method_obj.needs_calibration
    if needs_calib and calib_ids is None:
        api._validate_calibration(calib_samples, seqlen)
    source = _source_dir(model_dir)
    config = AutoConfig.from_pretrained(str(source), trust_remote_code=False)
    if getattr(config, LAYOUT_KEY, None):
        raise LlmpruneError(
            f"{source} is a structurally pruned llmprune checkpoint with per-block widths: "
            "prune it in memory with llmprune.prune"
        )
    reader = CheckpointReader(source)

    partial = out_path.parent / f".{out_path.name}.partial"
    state = RunState(partial / "state") if partial.exists() and resume else None
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    state = state or RunState(partial / "state")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    torch.manual_seed(seed)
    calib = None
    if needs_calib:
        calib = (
            calib_ids
            if calib_ids is not None
            else api.calibration_data(tokenizer, calib_samples, seqlen, seed, calib_dataset, data_dir)
        )
    settings = fingerprint(
        model=str(source.resolve()),
        method=method.lower(),
        ratio=sparsity.ratio,
        pattern=pattern,
        update=update,
        options=method_obj.options(),
        dtype=dtype_name,
        device=dev.type,
        activations=activations,
        calibration=None
        if calib is None
        else {
            "dataset": calib_dataset if calib_ids is None else "calib_ids",
            "shape": list(calib.shape),
            "seed": seed,
            "sum": int(calib.long().sum()),
        },
    )
    prog = state.load(settings) if resume else None
    resumed_from = prog.done if prog is not None else 0
    if prog is None:
        prog = Progress(fingerprint=settings)
    else:
        RunState.restore_rng(prog)

    # -- skeleton and the tensors outside the blocks --------------------------------
    model = build_skeleton(config, torch_dtype)
    adapter = get_adapter(model)
    blocks = adapter.blocks()
    n_blocks = len(blocks)
    prefixes = [module_prefix(model, b) for b in blocks]
    names = reader.names()
    block_names = [[n for n in names if n.startswith(p)] for p in prefixes]
    in_blocks = {n for group in block_names for n in group}
    outer = [n for n in names if n not in in_blocks]
    expected = set(persistent_names(model))
    unknown = [n for n in names if n not in expected]
    if unknown:
        raise LlmpruneError(
            f"{source}: tensor {unknown[0]} is not in the model config.json builds: "
            "the checkpoint does not match its config (re-save it with save_pretrained)"
        )
    for name, value in reader.read(outer, "cpu", torch_dtype).items():
        set_tensor(model, name, value)
    hf: Any = model
    hf.tie_weights()
    missing = [
        n
        for n, t in model.state_dict(keep_vars=True).items()
        if t.device.type == "meta" and not any(n.startswith(p) for p in prefixes)
    ]
    if missing:
        raise LlmpruneError(f"{source}: tensor {missing[0]} is missing from the checkpoint: re-download the model")
    if prog.done == 0:
        outer_state = [t for k, t in model.state_dict().items() if k in set(outer)]
        prog.nonzero_before = prog.nonzero = sum(_nonzero(t) for t in outer_state)
        prog.params = sum(t.numel() for t in outer_state)
        del outer_state

    # -- calibration inputs of the first unfinished block ----------------------------
    hidden = kwargs_list = acts = None
    hidden_name = prog.hidden
    if calib is not None and prog.done < n_blocks:
        engine = LayerwiseEngine(model, adapter, device=dev, progress=False)
        first, kwargs_list = engine.capture(calib)
        if activations == "disk":
            acts = DiskActivations(state.dir, tuple(first.shape), first.dtype)
            if prog.done == 0:
                hidden_name = acts.NAMES[0]
                hidden = acts.tensor(hidden_name, create=True)
                hidden.copy_(first)
                acts.flush(hidden_name)
            else:
                assert hidden_name is not None, "a resumed run records its hidden-state file"
                hidden = acts.tensor(hidden_name)
            del first
        elif prog.done == 0:
            hidden = first
        else:
            assert hidden_name is not None, "a resumed run records its hidden-state file"
            hidden = state.load_hidden(hidden_name)
    # the embeddings / LM head are needed again only when they are written: release them
    to_meta(model, [n for n in model.state_dict(keep_vars=True) if not any(n.startswith(p) for p in prefixes)])

    # -- the blocks -------------------------------------------------------------------
    total = n_blocks + 1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    from tqdm.auto import tqdm

    bar = tqdm(
        range(prog.done, n_blocks),
        desc=f"{method_obj.name} (streamed)",
        disable=not progress,
        file=sys.stderr,
        initial=prog.done,
        total=n_blocks,
    )
    for i in bar:
        tb = time.perf_counter()
        block, prefix = blocks[i], prefixes[i]
        local = [n[len(prefix) :] for n in block_names[i]]
        for name, value in reader.read(block_names[i], dev, torch_dtype).items():
            set_tensor(block, name[len(prefix) :], value)
        still_meta = [n for n, t in block.state_dict(keep_vars=True).items() if t.device.type == "meta"]
        if still_meta:
            raise LlmpruneError(
                f"{source}: tensor {prefix}{still_meta[0]} is missing from the checkpoint: re-download the model"
            )
        prog.nonzero_before += sum(_nonzero(t) for t in block.state_dict().values())
        runner = None
        if calib is not None:
            outputs = None
            assert hidden is not None and kwargs_list is not None
            if acts is not None and i + 1 < n_blocks:
                assert hidden_name is not None
                outputs = acts.tensor(acts.other(hidden_name), create=True)
            runner = StreamRunner(block, hidden, kwargs_list[i], dev, outputs=outputs)
        stats = runner.collect(adapter.linear_groups(block), hessian=method_obj.needs_hessian) if runner else None
        for name, lin in adapter.prunable_linears(block).items():
            # each linear's statistics are released once it is pruned (shared ones with the last user)
            new = method_obj.prune_weight(lin.weight.data.to(dev), stats.pop(name) if stats is not None else None)
            with torch.no_grad():
                lin.weight.copy_(new.to(lin.weight.dtype))
            zeros = int((lin.weight == 0).sum())
            prog.layers.append(
                {"block": i, "linear": name, "shape": list(lin.weight.shape), "sparsity": zeros / lin.weight.numel()}
            )
        del stats
        next_hidden = None
        if runner is not None and i + 1 < n_blocks:
            next_hidden = runner.forward(keep_outputs=True)
        tensors = {prefix + k: v.detach().to("cpu") for k, v in block.state_dict().items() if prefix + k in in_blocks}
        shard = shard_name(i + 1, total)
        write_shard(partial, shard, tensors)
        prog.weight_map.update({k: shard for k in tensors})
        prog.total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        prog.nonzero += sum(_nonzero(t) for t in tensors.values())
        prog.params += sum(t.numel() for t in tensors.values())
        del tensors, runner
        to_meta(block, local)
        if next_hidden is not None:
            if acts is not None:
                assert hidden_name is not None
                hidden_name = acts.other(hidden_name)
                acts.flush(hidden_name)
            else:
                hidden_name = state.save_hidden(i + 1, next_hidden)
            hidden = next_hidden
        prog.done, prog.hidden = i + 1, hidden_name
        prog.block_seconds.append(time.perf_counter() - tb)
        state.commit(prog)
        if acts is None:
            state.drop_stale({hidden_name} if hidden_name else set())
        if on_block_done is not None:
            on_block_done(i)
    del hidden, acts

    # -- the tensors outside the blocks, config, tokenizer, report --------------------
    outer_tensors = reader.read(outer, "cpu", torch_dtype)
    shard = shard_name(total, total)
    write_shard(partial, shard, outer_tensors)
    weight_map = dict(prog.weight_map, **{k: shard for k in outer_tensors})
    total_size = prog.total_size + sum(t.numel() * t.element_size() for t in outer_tensors.values())
    write_index(partial, weight_map, total_size)
    config.dtype = torch_dtype
    config.save_pretrained(str(partial))
    if (source / "generation_config.json").is_file():
        shutil.copy2(source / "generation_config.json", partial / "generation_config.json")
    tokenizer.save_pretrained(str(partial))
    linear_total = sum(e["shape"][0] * e["shape"][1] for e in prog.layers)
    pruned = sum(e["sparsity"] * e["shape"][0] * e["shape"][1] for e in prog.layers)
    report = {
        "method": method_obj.name,
        "ratio": sparsity.ratio,
        "pattern": f"{sparsity.n}:{sparsity.m}" if sparsity.is_nm else None,
        "update": update,
        "options": method_obj.options(),
        "model_type": config.model_type,
        "calibration": None
        if calib is None
        else {
            "dataset": calib_dataset if calib_ids is None else "calib_ids",
            "samples": int(calib.shape[0]),
            "seqlen": int(calib.shape[1]),
            "seed": seed,
        },
        "params_before": prog.nonzero_before,
        "params_after": prog.nonzero,
        "params_note": "non-zero parameters (tied embeddings counted once); unstructured sparsity keeps tensor shapes",
        "stored_params": prog.params,
        "block_linear_params": linear_total,
        "block_sparsity": pruned / linear_total if linear_total else 0.0,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "device": str(device),
        "dtype": dtype_name,
        "streamed": {
            "blocks": n_blocks,
            "resumed_from_block": resumed_from,
            "activations": activations,
            "block_seconds": prog.block_seconds,
            "shard_bytes": total_size,
        },
        "layers": prog.layers,
        "export": {"kind": "dense", "remote_code": False, "note": "same shapes as the original config"},
        "environment": api.environment(),
    }
    (partial / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(state.dir, ignore_errors=True)
    _publish(partial, out_path)
    return report


@functools.wraps(_prune_streamed)
def prune_streamed(
    model_dir: str | os.PathLike | None, method: str, out: str | os.PathLike, *args: Any, **kwargs: Any
) -> dict:
    try:
        return _prune_streamed(model_dir, method, out, *args, **kwargs)
    except BaseException:
        # a run that failed before committing a block leaves nothing behind; a later failure
        # keeps the partial directory for resume
        partial = Path(out).expanduser()
        partial = partial.parent / f".{partial.name}.partial"
        if partial.is_dir() and not (partial / "state" / "progress.json").is_file():
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _publish(partial: Path, out: Path) -> None:
    """Rename the finished ``partial`` directory to ``out`` (an existing ``out``, allowed by
    ``force``, is moved aside first and removed after)."""
    partial.chmod(0o755)
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(trash / out.name)
        partial.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        partial.rename(out)
