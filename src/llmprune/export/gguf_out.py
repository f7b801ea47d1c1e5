"""A GGUF file as the output of a pruning run: ``llmprune prune ... --out FILE.gguf`` and
``llmprune.save(model, tokenizer, "FILE.gguf", report)``.

The output kind follows the path: one ending in ``.gguf`` is a single GGUF file for
llama.cpp instead of a directory. Its type is **f16** (matrices float16, norms and biases
float32: llama.cpp's own converter default and what its CPU kernels run fast) unless the
name carries a type tag just before ``.gguf``, in the naming of GGUF files on the Hugging
Face Hub (case ignored): ``NAME.f32.gguf``, ``NAME.f16.gguf``, ``NAME.q8_0.gguf`` (written
here, as ``llmprune export --outtype``), ``NAME.Q4_1.gguf``, ``NAME.Q4_K_M.gguf``
(re-quantized by llama.cpp from an f32 file, as ``llmprune export --quantize``; needs
llama-cpp-python). A tag that looks like another GGML type (``Q5_K_M``, ``bf16``, ...) is a
one-line error.

The file equals what ``llmprune export DIR --format gguf --outtype T [--quantize Q]`` writes
from the directory the same run writes with ``--out DIR``: same tokenizer source
(:func:`~llmprune.export.gguf.source_gguf_for_run`), tensors and metadata. The run's
``report.json`` and ``recipe.yaml`` go next to it as ``FILE.gguf.report.json`` and
``FILE.gguf.recipe.yaml`` (the GGUF itself stays byte-identical to the export's). The three
are written under temporary names and renamed when complete, the GGUF last.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import LlmpruneError

if TYPE_CHECKING:
    from ..prune_report import PruneReport

DEFAULT_OUTTYPE = "f16"
#: type tag of the file name -> (outtype written by llmprune, llama.cpp re-quantization)
NAME_TYPES: dict[str, tuple[str, str | None]] = {
    "f32": ("f32", None),
    "f16": ("f16", None),
    "q8_0": ("q8_0", None),
    "q4_1": ("f32", "q4_1"),
    "q4_k_m": ("f32", "q4_k_m"),
}
#: a name component that looks like a GGML type (refused unless in :data:`NAME_TYPES`)
_TYPE_LIKE = re.compile(r"^(?:b?f\d+|i?q\d\w*|tq\d\w*|mxfp\d+)$", re.IGNORECASE)
_MARGIN_BYTES = 8 << 20


@dataclass(frozen=True)
class GgufTarget:
    """Where and how a run's GGUF is written."""

    path: Path
    outtype: str
    quantize: str | None = None

    @property
    def report(self) -> Path:
        return self.path.with_name(self.path.name + ".report.json")

    @property
    def recipe(self) -> Path:
        return self.path.with_name(self.path.name + ".recipe.yaml")

    @property
    def files(self) -> list[Path]:
        """Every file written, the GGUF last."""
        return [self.report, self.recipe, self.path]

    def export_command(self) -> str:
        """The two-step equivalent's second step."""
        cmd = f"llmprune export DIR --format gguf --outtype {self.outtype}"
        return cmd + (f" --quantize {self.quantize}" if self.quantize else "")


def is_gguf_out(out: object) -> bool:
    """``out`` names a GGUF file (ends in ``.gguf``, case ignored) rather than a directory."""
    return isinstance(out, (str, os.PathLike)) and Path(out).suffix.lower() == ".gguf"


def gguf_target(out: str | os.PathLike) -> GgufTarget:
    """The type named by ``out``'s type tag (see the module doc), or a one-line error."""
    path = Path(out).expanduser()
    stem = path.name[: -len(path.suffix)]
    tag = stem.rsplit(".", 1)[1] if "." in stem else ""
    if tag.lower() in NAME_TYPES:
        outtype, quantize = NAME_TYPES[tag.lower()]
        return GgufTarget(path, outtype, quantize)
    if _TYPE_LIKE.match(tag):
        raise LlmpruneError(
            f"unknown GGUF type {tag!r} in --out {path.name}: name the file NAME.gguf (f16) or "
            "NAME.TYPE.gguf with TYPE one of f32, f16, q8_0, Q4_1, Q4_K_M"
        )
    return GgufTarget(path, DEFAULT_OUTTYPE)


def check_gguf_out(out: str | os.PathLike, force: bool = False, method: Any = None) -> GgufTarget:
    """Every check that needs no model, before it is loaded: the type tag, llama-cpp-python
    for the llama.cpp types, existing outputs (refused without ``force``), a writable
    parent, and what ``method`` is known to produce (a manual plan with residual subsets)."""
    from .atomic import _check_writable, _existing_ancestor, check_out_file, sweep_stale

    target = gguf_target(out)
    if target.quantize is not None:
        from .gguf_quantize import llama_cpp_module

        llama_cpp_module()
    check_out_file(target.path, force)
    for side in (target.report, target.recipe):
        if side.is_dir():
            raise LlmpruneError(f"{side} is a directory; it would hold the run's report: choose another --out")
        if side.exists() and not force:
            raise LlmpruneError(f"{side} already exists: choose another --out or pass --force")
    for path in target.files:
        sweep_stale(path)
    _check_writable(_existing_ancestor(target.path.resolve().parent), target.path)
    if method is not None:
        _check_method(method)
    return target


def _check_method(method: Any) -> None:
    plan = getattr(method, "plan", None)  # --method manual: the plan is known before pruning
    for i, edit in sorted(getattr(plan, "layers", {}).items()):
        residual = getattr(edit, "residual", None) or {}
        if any(v is not None for v in residual.values()):
            raise LlmpruneError(
                f"GGUF output: the plan's layer {i} keeps a subset of the residual stream, which no llama.cpp "
                "architecture can express: prune to a directory (--out DIR) instead"
            )
    if getattr(method, "name", None) == "disp":
        print(
            "warning: DISP usually keeps subsets of the residual stream, which llama.cpp cannot run; "
            "if this run does, nothing is written after pruning: use --out DIR to keep the result",
            file=sys.stderr,
        )


def _n_params(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = t.data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel()
    return total


def check_gguf_model(model: nn.Module, tokenizer: Any, target: GgufTarget, model_name: str | None) -> Path | None:
    """Checks that need the loaded model, before pruning: a family, RoPE and activation
    llama.cpp runs; a tokenizer GGUF can hold (unless it comes from the shipped GGUF);
    free space for the file. Returns the GGUF whose tokenizer will be carried over."""
    from .atomic import _check_free_space, _existing_ancestor
    from .gguf import source_gguf_for_run
    from .gguf_plan import check_family
    from .gguf_vocab import check_hf_vocab

    check_family(model)
    source = source_gguf_for_run(model_name, tokenizer)
    if source is None:
        hf: Any = model  # a transformers model
        check_hf_vocab(tokenizer, int(hf.get_input_embeddings().weight.shape[0]))
    n = _n_params(model)
    need = n * (4 if target.outtype == "f32" else 2) + (n * 2 if target.quantize else 0) + _MARGIN_BYTES
    _check_free_space(_existing_ancestor(target.path.resolve().parent), target.path, need)
    return source


def save_gguf(
    model: nn.Module,
    tokenizer: Any,
    out: str | os.PathLike,
    report: PruneReport | dict | None,
    force: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write ``model`` as the GGUF ``out`` names (type from its name), with the report and
    recipe next to it when ``report`` is given; returns the ``export`` record (also set on
    ``report``). Refused with one line, nothing written, when llama.cpp cannot run the model."""
    import yaml

    from ..checks import check_finite_model
    from ..prune_report import PruneReport
    from .atomic import atomic_files
    from .gguf import source_gguf_for_run, write_gguf, write_quantized_gguf

    given = report if isinstance(report, dict) else None
    if isinstance(report, dict):
        report = PruneReport.from_dict(report)
    target = check_gguf_out(out, force)
    check_finite_model(model, f"save to {out}")
    # as `llmprune export DIR` decides from DIR/report.json (no report: no shipped tokenizer)
    source = source_gguf_for_run(report.model, tokenizer) if report is not None else None
    files = target.files if report is not None else [target.path]
    with atomic_files(files, force) as tmps:
        gguf_tmp = tmps[-1]
        if target.quantize is None:
            info = write_gguf(model, tokenizer, gguf_tmp, target.outtype, source_gguf=source, force=True)
        else:
            info = write_quantized_gguf(
                model,
                tokenizer,
                gguf_tmp,
                target.quantize,
                target.outtype,
                source_gguf=source,
                force=True,
                threads=threads,
            )
        info["path"] = str(target.path)
        record: dict[str, Any] = {"kind": "gguf", **info}
        if report is not None:
            record.update({"report": target.report.name, "recipe": target.recipe.name})
            report.export = record
            tmps[0].write_text(report.to_json())
            tmps[1].write_text(yaml.safe_dump(report.to_recipe(), sort_keys=False))
            for tmp in tmps[:2]:
                tmp.chmod(0o644)
        gguf_tmp.chmod(0o644)
    if given is not None:
        given["export"] = record
    return record
