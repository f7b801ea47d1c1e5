"""Write a (pruned) model as a GGUF file that llama.cpp runs, with the ``gguf`` package.

Tensor names and metadata keys follow the GGUF specification and llama.cpp's
``llama``/``qwen2``/``deci`` loaders (:mod:`llmprune.export.gguf_plan` says which
architecture and why). Outtypes: ``f32`` (everything float32), ``f16`` (matrices float16,
norms and biases float32) and ``q8_0`` (matrices whose rows split into 32-value blocks
quantized with ``gguf.quants``, the rest float16). Re-quantization to Q4_1/Q4_K_M is
llama.cpp's own (:mod:`llmprune.export.gguf_quantize`).

The file is written under a temporary name next to ``out`` and renamed when complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import LlmpruneError
from .atomic import atomic_file, check_out_file
from .gguf_plan import PAIRED_ROPE, GgufPlan, plan_gguf, rope_pairs_permutation, rope_theta

OUTTYPES = ("f32", "f16", "q8_0")
#: FFN widths are padded with zero channels to a multiple of this (exact): llama.cpp quantizes
#: a matrix's rows in 32-value blocks (Q8_0, Q4_1, Q5_0, the fallback of the 256-value K types)
#: and keeps an ``ffn_down`` whose rows do not split in float16; its fast CPU matrix kernels
#: (llamafile sgemm) also want such widths (an f16 SoBP export ran prompts ~30 % slower unpadded).
FF_MULTIPLE = 32


def check_outtype(outtype: str) -> str:
    value = str(outtype).lower()
    if value not in OUTTYPES:
        raise LlmpruneError(f"unknown --outtype {outtype!r}: use one of {', '.join(OUTTYPES)}")
    return value


class _Tensors:
    """Adds tensors to a GGUF writer in the requested outtype."""

    def __init__(self, writer, outtype: str) -> None:
        self.writer, self.outtype = writer, outtype

    def add(self, name: str, t: torch.Tensor) -> None:
        import gguf

        arr = t.detach().to("cpu", torch.float32).contiguous().numpy()
        if arr.ndim == 1 or self.outtype == "f32":
            self.writer.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
        elif self.outtype == "q8_0" and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            self.writer.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            self.writer.add_tensor(name, arr.astype(np.float16))


def _file_type(outtype: str) -> int:
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[outtype]


def _weight(module: nn.Module | None) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise LlmpruneError("GGUF export: the model has no final norm weight; llama.cpp's architectures need one")
    return weight.data


def _add_hparams(w: Any, model: nn.Module, plan: GgufPlan, outtype: str) -> None:
    hf: Any = model
    cfg = hf.config
    heads = [layer.heads for layer in plan.layers]
    kv = [layer.kv_heads for layer in plan.layers]
    ff = [layer.ff for layer in plan.layers]
    w.add_context_length(int(getattr(cfg, "max_position_embeddings", 2048)))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(len(plan.layers))
    w.add_feed_forward_length(ff if plan.per_layer else ff[0])
    w.add_head_count(heads if plan.per_layer else heads[0])
    w.add_head_count_kv(kv if plan.per_layer else kv[0])
    w.add_key_length(plan.head_dim)
    w.add_value_length(plan.head_dim)
    w.add_rope_dimension_count(plan.head_dim)
    w.add_rope_freq_base(rope_theta(cfg))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(int(hf.get_input_embeddings().weight.shape[0]))
    w.add_file_type(_file_type(outtype))


def _add_layer(t: _Tensors, n: int, block: nn.Module, adapter, layer, plan: GgufPlan) -> None:
    att, mlp = adapter.attention(block), adapter.mlp(block)
    norms = adapter.norms(block)
    p = f"blk.{n}"
    paired = plan.arch in PAIRED_ROPE
    if layer.dummy_attention:
        hidden, d = norms[0].weight.shape[0], plan.head_dim
        t.add(f"{p}.attn_norm.weight", torch.ones(hidden))
        for name in ("attn_q", "attn_k", "attn_v"):
            t.add(f"{p}.{name}.weight", torch.zeros(d, hidden))
        t.add(f"{p}.attn_output.weight", torch.zeros(hidden, d))
    elif layer.attention:
        t.add(f"{p}.attn_norm.weight", norms[0].weight)
        for name, lin, nh in (("attn_q", att.q, layer.heads), ("attn_k", att.k, layer.kv_heads), ("attn_v", att.v, 0)):
            w, b = lin.weight.data, None if lin.bias is None else lin.bias.data
            if paired and nh:
                w = rope_pairs_permutation(w, nh)
                b = None if b is None else rope_pairs_permutation(b, nh)
            t.add(f"{p}.{name}.weight", w)
            if b is not None:
                t.add(f"{p}.{name}.bias", b)
        t.add(f"{p}.attn_output.weight", att.o.weight.data)
        if att.o.bias is not None:
            t.add(f"{p}.attn_output.bias", att.o.bias.data)
    t.add(f"{p}.ffn_norm.weight", norms[1].weight)
    if layer.zero_ffn:
        hidden = norms[1].weight.shape[0]
        t.add(f"{p}.ffn_gate.weight", torch.zeros(layer.ff, hidden))
        t.add(f"{p}.ffn_up.weight", torch.zeros(layer.ff, hidden))
        t.add(f"{p}.ffn_down.weight", torch.zeros(hidden, layer.ff))
        return
    pad = layer.ff_pad  # zero channels: gate/up rows (and biases) and down columns, exact
    for name, lin in (("ffn_gate", mlp.gate), ("ffn_up", mlp.up)):
        t.add(f"{p}.{name}.weight", _pad(lin.weight.data, pad, 0))
        if lin.bias is not None:
            t.add(f"{p}.{name}.bias", _pad(lin.bias.data, pad, 0))
    t.add(f"{p}.ffn_down.weight", _pad(mlp.down.weight.data, pad, 1))
    if mlp.down.bias is not None:
        t.add(f"{p}.ffn_down.bias", mlp.down.bias.data)


def _pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """``t`` with ``n`` zero slices appended along ``dim``."""
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def write_gguf(
    model: nn.Module,
    tokenizer,
    out: str | os.PathLike,
    outtype: str = "f32",
    source_gguf: str | os.PathLike | None = None,
    force: bool = False,
    ff_multiple: int = FF_MULTIPLE,
) -> dict:
    """Write ``model`` to ``out`` (.gguf); tokenizer metadata from ``source_gguf`` when
    given (the file the model was converted from), else built from ``tokenizer``.
    ``ff_multiple``: pad FFN widths with zero channels to a multiple of it (default
    :data:`FF_MULTIPLE`; 1: the pruned widths as they are).
    Returns what was written: architecture, per-layer widths, notes, bytes."""
    import gguf

    from ..models import get_adapter
    from .gguf_vocab import add_hf_vocab, carry_over

    outtype = check_outtype(outtype)
    path = check_out_file(out, force)
    adapter = get_adapter(model)
    plan = plan_gguf(model, adapter, ff_multiple)
    blocks = adapter.blocks()
    embed = adapter.embeddings().weight
    n_vocab = int(embed.shape[0])
    with atomic_file(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), plan.arch)
        _add_hparams(w, model, plan, outtype)
        if source_gguf is not None:
            tokenizer_from = str(Path(source_gguf).name)
            carry_over(w, Path(source_gguf), n_vocab)
        else:
            tokenizer_from = "huggingface tokenizer"
            add_hf_vocab(w, tokenizer, n_vocab)
        t = _Tensors(w, outtype)
        t.add("token_embd.weight", embed.data)
        t.add("output_norm.weight", _weight(adapter.final_norm()))
        if not adapter.tied_embeddings():
            t.add("output.weight", adapter.lm_head().weight.data)
        for n, layer in enumerate(plan.layers):
            _add_layer(t, n, blocks[layer.block], adapter, layer, plan)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return {
        "path": str(path),
        "arch": plan.arch,
        "outtype": outtype,
        "bytes": path.stat().st_size,
        "tokenizer_from": tokenizer_from,
        "notes": plan.notes,
        "layers": [
            {
                "block": lp.block,
                "heads": lp.heads,
                "kv_heads": lp.kv_heads,
                "ff": lp.ff,
                **({"ff_pad": lp.ff_pad} if lp.ff_pad else {}),
            }
            for lp in plan.layers
        ],
    }


def source_gguf_for(src: str | os.PathLike | None, tokenizer) -> Path | None:
    """The GGUF the model at ``src`` was converted from, when llmprune knows it: the
    default model's shipped file, for the default model itself and for llmprune outputs
    whose report names it (or names no model) and whose vocabulary equals that file's."""
    from ..models.loading import DEFAULT_MODEL, _gguf_path

    default = src is None or str(src).lower() in (DEFAULT_MODEL, "default")
    if default:
        return _gguf_path()
    report = Path(src).expanduser() / "report.json"  # type: ignore[arg-type]
    if not report.is_file():
        return None
    try:
        model_name = json.loads(report.read_text()).get("model")
    except (OSError, json.JSONDecodeError):
        return None
    return source_gguf_for_run(model_name, tokenizer)


def source_gguf_for_run(model_name: str | None, tokenizer) -> Path | None:
    """What :func:`source_gguf_for` picks for an llmprune output whose ``report.json`` names
    ``model_name``: the default model's shipped GGUF when the run pruned it (or names no
    model) and ``tokenizer``'s vocabulary equals that file's, else ``None`` (vocabulary
    built from ``tokenizer``). ``llmprune prune --out FILE.gguf`` decides with it, so the
    file equals ``llmprune export`` of the same run's output directory."""
    from ..models.loading import DEFAULT_MODEL, _gguf_path

    if model_name not in (None, DEFAULT_MODEL, "default"):
        return None
    try:
        path = _gguf_path()
    except LlmpruneError:
        return None
    return path if _same_vocab(path, tokenizer) else None


def _same_vocab(path: Path, tokenizer) -> bool:
    from .gguf_vocab import metadata

    field = metadata(path).get("tokenizer.ggml.tokens")
    if field is None:
        return False
    tokens = field[0]
    vocab = tokenizer.get_vocab()
    return len(vocab) == len(tokens) and all(tokens[i] == text for text, i in vocab.items())


def write_quantized_gguf(
    model: nn.Module,
    tokenizer,
    out: str | os.PathLike,
    qtype: str,
    outtype: str = "f16",
    source_gguf: str | os.PathLike | None = None,
    force: bool = False,
    threads: int | None = None,
) -> dict:
    """Write ``model`` as an ``outtype`` GGUF under a temporary name (FFN widths padded to
    :data:`FF_MULTIPLE`) and let llama.cpp quantize it to ``qtype`` into ``out``."""
    from .gguf_quantize import check_quantize, llama_cpp_module, quantize_gguf

    outtype = check_outtype(outtype)
    qtype = check_quantize(qtype)
    llama_cpp_module()
    path = check_out_file(out, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.float-", suffix=".gguf", dir=path.parent)
    os.close(fd)
    floating = Path(name)
    try:
        info = write_gguf(model, tokenizer, floating, outtype, source_gguf=source_gguf, force=True)
        info["float_bytes"] = info.pop("bytes")
        info.update(quantize_gguf(floating, path, qtype, threads=threads, force=force))
    finally:
        if floating.exists():
            floating.unlink()
    info["path"] = str(path)
    return info


def export_gguf(
    src: str | os.PathLike | None,
    out: str | os.PathLike,
    outtype: str = "f32",
    quantize: str | None = None,
    force: bool = False,
    threads: int | None = None,
) -> dict:
    """``llmprune export SRC --format gguf``: load ``src`` (a model spec or llmprune
    output), write it as GGUF, optionally re-quantize it with llama.cpp into ``out``."""
    from ..checks import check_model_spec
    from ..models.loading import load_model_and_tokenizer
    from .gguf_quantize import check_quantize, llama_cpp_module

    outtype = check_outtype(outtype)
    qtype = check_quantize(quantize) if quantize is not None else None
    if qtype is not None:
        llama_cpp_module()  # fail before loading the model
    path = check_out_file(out, force)
    check_model_spec(src)
    model, tok = load_model_and_tokenizer(src)
    source = source_gguf_for(src, tok)
    if qtype is None:
        return write_gguf(model, tok, path, outtype, source_gguf=source, force=force)
    return write_quantized_gguf(model, tok, path, qtype, outtype, source_gguf=source, force=force, threads=threads)


def describe(info: dict) -> str:
    """One line per fact for the CLI: what was written, how, and its size."""
    layers = info["layers"]
    widths = {(lp["heads"], lp["kv_heads"], lp["ff"]) for lp in layers}
    shape = (
        f"{len(layers)} layers, heads/kv/ffn {layers[0]['heads']}/{layers[0]['kv_heads']}/{layers[0]['ff']}"
        if len(widths) == 1
        else f"{len(layers)} layers with per-layer widths"
    )
    lines = [
        f"wrote {info['path']}: llama.cpp architecture {info['arch']}, {shape}, {info['outtype']}"
        + (f" re-quantized by llama.cpp to {info['quantize']}" if "quantize" in info else "")
        + f", {info['bytes'] / 2**20:.1f} MiB; tokenizer from {info['tokenizer_from']}"
    ]
    lines += [f"note: {n}" for n in info["notes"]]
    return "\n".join(lines)
