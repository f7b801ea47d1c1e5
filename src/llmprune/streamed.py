"""``prune_streamed``: prune a model larger than memory, block by block from disk.

The unstructured layer-wise methods (magnitude, Wanda, SparseGPT, MRP; the same
``prune_weight`` and statistics as :func:`llmprune.prune`) run on
:mod:`llmprune.engine.streaming`: only the embeddings/norm/LM head and one decoder block
are in memory at a time, each pruned block goes straight into its output shard, and a
killed run resumes from the last finished block (:mod:`llmprune.engine.resume`). The
output is a normal Hugging Face checkpoint (config, safetensors shards + index,
tokenizer, ``report.json``) that appears under its final name only when complete.

The structured methods that score units block by block on the dense model (Wanda-sp,
FLAP, ShortGPT) share the setup (:class:`StreamRun`) and run two passes over the blocks
(:mod:`llmprune.streamed_structured`); SoBP runs its stage 1 as a block-by-block forward
and backward pass, then stages 2-3 on a dense and a pruned stream (:mod:`llmprune.streamed_sobp`);
LLM-Pruner takes its weight gradients by the same backward pass, then removes units in a
second pass (:mod:`llmprune.streamed_llm_pruner`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import checks
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


def _streamable(cls: type) -> bool:
    """An unstructured layer-wise method, a structured one that scores units block by
    block (:class:`~llmprune.methods.structured.ScoredMethod`), SoBP or LLM-Pruner."""
    from .methods.llm_pruner import LLMPruner
    from .methods.sobp import SoBP
    from .methods.structured import ScoredMethod
    from .methods.unstructured import LayerwiseMethod

    return issubclass(cls, (LayerwiseMethod, ScoredMethod, SoBP, LLMPruner))


def _method(name: str, ratio: float | None, pattern: str | None, update: str | None, options: dict) -> Any:
    """The method ``name`` built and validated by its Config (``update`` is its ``update``
    option), if it can be streamed (:func:`_streamable`)."""
    from .methods import get_method, method_names
    from .methods.registry import methods

    cls = get_method(name)
    if not _streamable(cls):
        streamed = [n for n, c in methods().items() if _streamable(c)]
        if cls.whole_model:
            raise LlmpruneError(
                f"{cls.name} cannot be streamed block by block: it needs {cls.whole_model}; "
                f"`llmprune prune` runs it in memory (prune-streamed runs {', '.join(streamed)})"
            )
        raise LlmpruneError(
            f"streamed pruning runs {', '.join(streamed)}, not {name!r}: use `llmprune prune` "
            f"(the other methods: {', '.join(n for n in method_names() if n not in streamed)})"
        )
    if update is not None:
        options = dict(options, update=update)
    return cls.build(ratio, pattern, options)


def _nonzero(t: torch.Tensor) -> int:
    return int(torch.count_nonzero(t).item())


@dataclass
class StreamRun:
    """The state both streamed pipelines share: output and resume folders, the checkpoint
    reader, the ``meta`` skeleton with its blocks, the calibration stream."""

    t0: float
    out_path: Path
    partial: Path
    state: Any  # RunState
    prog: Any  # Progress
    resumed_from: int
    settings: dict
    source: Path
    config: Any
    reader: Any  # CheckpointReader
    tokenizer: Any
    calib: torch.Tensor | None
    calibration: dict | None  # dataset, samples, seqlen, seed
    model: nn.Module
    adapter: Any  # ModelAdapter
    blocks: list[nn.Module]
    prefixes: list[str]
    block_names: list[list[str]]
    outer: list[str]  # checkpoint tensors outside the blocks, as written (no tied LM head)
    in_blocks: set[str]
    params_total: int  # stored parameters of the dense model (a tied LM head counted once)
    dev: torch.device
    dtype: torch.dtype
    dtype_name: str
    device: str
    activations: str
    progress: bool
    on_block_done: Callable[[int], None] | None
    hidden: torch.Tensor | None = None
    hidden_name: str | None = None
    kwargs_list: list[dict] | None = None
    acts: Any = None  # DiskActivations

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def start_stream(self, position: int) -> None:
        """Capture block 0's calibration inputs (as the in-memory engine does) and make the
        inputs of block ``position`` current: the capture itself for block 0, else the
        committed state (``prog.hidden``). Nothing to do without calibration or when every
        block has run."""
        from .engine.layerwise import LayerwiseEngine
        from .engine.streaming import DiskActivations

        if self.calib is None or position >= self.n_blocks:
            return
        self.hidden_name = self.prog.hidden
        engine = LayerwiseEngine(self.model, self.adapter, device=self.dev, progress=False)
        first, self.kwargs_list = engine.capture(self.calib)
        if self.activations == "disk":
            self.acts = DiskActivations(self.state.dir, tuple(first.shape), first.dtype)
            if position == 0:
                self.hidden_name = self.acts.NAMES[0]
                self.hidden = self.acts.tensor(self.hidden_name, create=True)
                self.hidden.copy_(first)
                self.acts.flush(self.hidden_name)
            else:
                assert self.hidden_name is not None, "a resumed run records its hidden-state file"
                self.hidden = self.acts.tensor(self.hidden_name)
        elif position == 0:
            self.hidden = first
        else:
            assert self.hidden_name is not None, "a resumed run records its hidden-state file"
            self.hidden = self.state.load_hidden(self.hidden_name)

    def release_outer(self) -> None:
        """The embeddings / LM head are needed again only when they are written: release them."""
        from .engine.streaming import to_meta

        names = [n for n in self.model.state_dict(keep_vars=True) if not any(n.startswith(p) for p in self.prefixes)]
        to_meta(self.model, names)

    def read_block(self, i: int) -> nn.Module:
        """Block ``i`` with its checkpoint tensors (cast to the run's dtype) on the device."""
        from .engine.streaming import set_tensor

        block, prefix = self.blocks[i], self.prefixes[i]
        for name, value in self.reader.read(self.block_names[i], self.dev, self.dtype).items():
            set_tensor(block, name[len(prefix) :], value)
        still_meta = [n for n, t in block.state_dict(keep_vars=True).items() if t.device.type == "meta"]
        if still_meta:
            raise LlmpruneError(
                f"{self.source}: tensor {prefix}{still_meta[0]} is missing from the checkpoint: re-download the model"
            )
        return block

    def runner(self, i: int, keep_outputs: bool) -> Any:
        """A :class:`~llmprune.engine.streaming.StreamRunner` of block ``i`` on the current
        inputs (with ``--activations disk`` its outputs go into the other file when kept)."""
        from .engine.streaming import StreamRunner

        assert self.hidden is not None and self.kwargs_list is not None
        outputs = None
        if self.acts is not None and keep_outputs:
            assert self.hidden_name is not None
            outputs = self.acts.tensor(self.acts.other(self.hidden_name), create=True)
        return StreamRunner(self.blocks[i], self.hidden, self.kwargs_list[i], self.dev, outputs=outputs)

    def advance(self, i: int, next_hidden: torch.Tensor | None) -> None:
        """Make block ``i``'s outputs the inputs of block ``i + 1`` (flushed or saved in the
        state folder, before the commit)."""
        if next_hidden is None:
            return
        if self.acts is not None:
            assert self.hidden_name is not None
            self.hidden_name = self.acts.other(self.hidden_name)
            self.acts.flush(self.hidden_name)
        else:
            self.hidden_name = self.state.save_hidden(i + 1, next_hidden)
        self.hidden = next_hidden

    def commit(self, step: int) -> None:
        """Commit ``prog`` (the resume point), drop stale hidden-state files, report ``step``."""
        self.prog.hidden = self.hidden_name
        self.state.commit(self.prog)
        if self.acts is None:
            self.state.drop_stale({self.hidden_name} if self.hidden_name else set())
        if self.on_block_done is not None:
            self.on_block_done(step)

    def bar(self, start: int, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            range(start, total), desc=desc, disable=not self.progress, file=sys.stderr, initial=start, total=total
        )

    def finish_files(self, shard: str) -> tuple[dict[str, str], int]:
        """Write the tensors outside the blocks to ``shard``, the index, generation config
        and tokenizer; return the weight map and total size."""
        from .export.shards import write_index, write_shard

        outer_tensors = self.reader.read(self.outer, "cpu", self.dtype)
        write_shard(self.partial, shard, outer_tensors)
        weight_map = dict(self.prog.weight_map, **{k: shard for k in outer_tensors})
        total_size = self.prog.total_size + sum(t.numel() * t.element_size() for t in outer_tensors.values())
        write_index(self.partial, weight_map, total_size)
        if (self.source / "generation_config.json").is_file():
            shutil.copy2(self.source / "generation_config.json", self.partial / "generation_config.json")
        self.tokenizer.save_pretrained(str(self.partial))
        return weight_map, total_size

    def publish(self) -> None:
        shutil.rmtree(self.state.dir, ignore_errors=True)
        _publish(self.partial, self.out_path)


def _open(
    model_dir: str | os.PathLike | None,
    method: Any,
    out: str | os.PathLike,
    *,
    calib_samples: int,
    seqlen: int,
    seed: int,
    calib_dataset: str,
    data_dir: str | os.PathLike | None,
    calib_ids: torch.Tensor | None,
    dtype: str | torch.dtype | None,
    device: str,
    activations: str,
    resume: bool,
    force: bool,
    progress: bool,
    on_block_done: Callable[[int], None] | None,
) -> StreamRun:
    """Check the arguments and the checkpoint, set up the output and resume folders, draw
    the calibration windows, build the ``meta`` skeleton and read the tensors outside the
    blocks (the setup both pipelines share)."""
    from transformers import AutoConfig, AutoTokenizer

    from . import api
    from .engine.resume import Progress, RunState, fingerprint
    from .engine.streaming import CheckpointReader, build_skeleton, module_prefix, persistent_names, set_tensor
    from .export import check_output_dir
    from .modeling.modeling_llmprune import LAYOUT_KEY
    from .models import count_parameters, get_adapter

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
    needs_calib = method.needs_calibration
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
    if needs_calib:  # a window beyond the model's positions, as `llmprune prune` refuses it
        window = int(calib_ids.shape[-1]) if calib_ids is not None else seqlen
        checks.check_seqlen(SimpleNamespace(config=config), window)  # type: ignore[arg-type]

    partial = out_path.parent / f".{out_path.name}.partial"
    state = RunState(partial / "state") if partial.exists() and resume else None
    if partial.exists() and not resume:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    state = state or RunState(partial / "state")

    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    torch.manual_seed(seed)
    calib = None
    if needs_calib:
        calib = (
            calib_ids
            if calib_ids is not None
            else api.calibration_data(tokenizer, calib_samples, seqlen, seed, calib_dataset, data_dir)
        )
    ratio, pattern = method.reported_target()
    settings = fingerprint(
        model=str(source.resolve()),
        method=method.name,
        ratio=ratio,
        pattern=pattern,
        update=getattr(method, "update", None),
        options=method.options(),
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
    resumed_from = (prog.scored + prog.done) if prog is not None else 0
    if prog is None:
        prog = Progress(fingerprint=settings)
    else:
        RunState.restore_rng(prog)

    # -- skeleton and the tensors outside the blocks --------------------------------
    model = build_skeleton(config, torch_dtype)
    adapter = get_adapter(model)
    blocks = list(adapter.blocks())
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
    if adapter.tied_embeddings():  # save_pretrained never writes a tied LM head
        head = module_prefix(model, adapter.lm_head()) + "weight"
        outer = [n for n in outer if n != head]
    return StreamRun(
        t0=t0,
        out_path=out_path,
        partial=partial,
        state=state,
        prog=prog,
        resumed_from=resumed_from,
        settings=settings,
        source=source,
        config=config,
        reader=reader,
        tokenizer=tokenizer,
        calib=calib,
        calibration=None
        if calib is None
        else {
            "dataset": calib_dataset if calib_ids is None else "calib_ids",
            "samples": int(calib.shape[0]),
            "seqlen": int(calib.shape[1]),
            "seed": seed,
        },
        model=model,
        adapter=adapter,
        blocks=blocks,
        prefixes=prefixes,
        block_names=block_names,
        outer=outer,
        in_blocks=in_blocks,
        params_total=count_parameters(model),
        dev=dev,
        dtype=torch_dtype,
        dtype_name=dtype_name,
        device=str(device),
        activations=activations,
        progress=progress,
        on_block_done=on_block_done,
    )


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

    Unstructured methods (magnitude, wanda, sparsegpt, mrp) prune each block as it is read.
    The structured methods that score units block by block on the dense model (wanda-sp,
    flap, shortgpt) run two passes (:mod:`llmprune.streamed_structured`): pass 1 scores,
    the selection runs over all blocks, pass 2 removes the units; the output is written in
    the format ``llmprune.save`` chooses (stock config, DeciLM ``block_configs`` or the
    llmprune layout) with the same tensors. SoBP (:mod:`llmprune.streamed_sobp`) takes its
    stage-1 gradients by a forward and a backward pass over the blocks, selects as in
    memory, then refines and reconstructs each block on a pruned and a dense stream.
    LLM-Pruner (:mod:`llmprune.streamed_llm_pruner`) takes its weight gradients by the same
    backward pass, block by block, selects as in memory and removes the units in a second pass.

    ``dtype`` (default float32 on CPU, bfloat16 on CUDA) is the precision the blocks run
    in and are written in; statistics are accumulated in float32/float64 and the solvers
    factorise in float32/float64 whatever it is. ``activations="disk"`` keeps the two
    copies of the calibration activations in memory-mapped files next to the output.
    ``resume`` continues an unfinished run with the same settings from its last finished
    block (``False`` starts again). ``calib_ids`` ([n, L] token ids) replaces the
    calibration windows drawn from ``calib_dataset``. ``on_block_done(k)`` is called after
    each committed block (structured methods: pass 1's blocks ``0..n-1``, then pass 2's
    written blocks ``n, n+1, ...``; SoBP: stage 1's ``k``-th scored block, from the last
    block down, then stages 2-3's block ``i`` as ``n + i``; LLM-Pruner: pass 1's ``k``-th
    step from the last block down, then pass 2's written block ``j`` as ``n + j``). Other keywords go to the
    method (e.g. ``damp``, ``units``).
    """
    from .methods.llm_pruner import LLMPruner
    from .methods.sobp import SoBP
    from .methods.structured import ScoredMethod

    if calib_dataset == "self" and calib_ids is None:
        raise LlmpruneError(
            "prune-streamed cannot use --calib-dataset self: generating text needs the whole model in memory; "
            "generate the windows with llmprune.calibration_data(..., dataset='self', model=...) and pass calib_ids"
        )
    method_obj = _method(method, ratio, pattern, update, options)
    run = _open(
        model_dir,
        method_obj,
        out,
        calib_samples=calib_samples,
        seqlen=seqlen,
        seed=seed,
        calib_dataset=calib_dataset,
        data_dir=data_dir,
        calib_ids=calib_ids,
        dtype=dtype,
        device=device,
        activations=activations,
        resume=resume,
        force=force,
        progress=progress,
        on_block_done=on_block_done,
    )
    if isinstance(method_obj, ScoredMethod):
        from .streamed_structured import prune_structured

        return prune_structured(run, method_obj)
    if isinstance(method_obj, SoBP):
        from .streamed_sobp import prune_sobp

        return prune_sobp(run, method_obj)
    if isinstance(method_obj, LLMPruner):
        from .streamed_llm_pruner import prune_llm_pruner

        return prune_llm_pruner(run, method_obj)
    return _prune_unstructured(run, method_obj)


def _prune_unstructured(run: StreamRun, method_obj: Any) -> dict:
    """One pass: each block is read, calibrated, pruned by the method's ``prune_weight``,
    run to produce the next block's inputs, written to its shard and released."""
    from . import api
    from .engine.layerwise import peak_rss_mb
    from .engine.streaming import to_meta
    from .export.shards import shard_name, write_shard

    prog, adapter, dev = run.prog, run.adapter, run.dev
    sparsity, update = method_obj.sparsity, getattr(method_obj, "update", None)
    n_blocks = run.n_blocks
    if prog.done == 0:
        outer_state = [t for k, t in run.model.state_dict().items() if k in set(run.outer)]
        prog.nonzero_before = prog.nonzero = sum(_nonzero(t) for t in outer_state)
        prog.params = sum(t.numel() for t in outer_state)
        del outer_state
    run.start_stream(prog.done)
    run.release_outer()

    total = n_blocks + 1
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in run.bar(prog.done, n_blocks, f"{method_obj.name} (streamed)"):
        tb = time.perf_counter()
        prefix = run.prefixes[i]
        local = [n[len(prefix) :] for n in run.block_names[i]]
        block = run.read_block(i)
        prog.nonzero_before += sum(_nonzero(t) for t in block.state_dict().values())
        runner = run.runner(i, keep_outputs=i + 1 < n_blocks) if run.calib is not None else None
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
        tensors = {
            prefix + k: v.detach().to("cpu") for k, v in block.state_dict().items() if prefix + k in run.in_blocks
        }
        shard = shard_name(i + 1, total)
        write_shard(run.partial, shard, tensors)
        prog.weight_map.update({k: shard for k in tensors})
        prog.total_size += sum(t.numel() * t.element_size() for t in tensors.values())
        prog.nonzero += sum(_nonzero(t) for t in tensors.values())
        prog.params += sum(t.numel() for t in tensors.values())
        del tensors, runner
        to_meta(block, local)
        run.advance(i, next_hidden)
        prog.done = i + 1
        prog.block_seconds.append(time.perf_counter() - tb)
        run.commit(i)
    run.hidden = run.acts = None

    # -- the tensors outside the blocks, config, tokenizer, report --------------------
    _, total_size = run.finish_files(shard_name(total, total))
    config = run.config
    config.dtype = run.dtype
    config.save_pretrained(str(run.partial))
    linear_total = sum(e["shape"][0] * e["shape"][1] for e in prog.layers)
    pruned = sum(e["sparsity"] * e["shape"][0] * e["shape"][1] for e in prog.layers)
    report = {
        "method": method_obj.name,
        "ratio": sparsity.ratio,
        "pattern": f"{sparsity.n}:{sparsity.m}" if sparsity.is_nm else None,
        "update": update,
        "options": method_obj.options(),
        "model_type": config.model_type,
        "calibration": run.calibration,
        "params_before": prog.nonzero_before,
        "params_after": prog.nonzero,
        "params_note": "non-zero parameters (tied embeddings counted once); unstructured sparsity keeps tensor shapes",
        "stored_params": prog.params,
        "block_linear_params": linear_total,
        "block_sparsity": pruned / linear_total if linear_total else 0.0,
        "seconds": time.perf_counter() - run.t0,
        "peak_rss_mb": peak_rss_mb(),
        "peak_device_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "device": run.device,
        "dtype": run.dtype_name,
        "streamed": {
            "blocks": n_blocks,
            "resumed_from_block": run.resumed_from,
            "activations": run.activations,
            "block_seconds": prog.block_seconds,
            "shard_bytes": total_size,
        },
        "layers": prog.layers,
        "export": {"kind": "dense", "remote_code": False, "note": "same shapes as the original config"},
        "environment": api.environment(),
    }
    (run.partial / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    run.publish()
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
