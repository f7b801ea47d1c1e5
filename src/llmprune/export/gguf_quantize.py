"""Re-quantize a GGUF file with llama.cpp's own quantizer (``llama_model_quantize``
through the ``llama-cpp-python`` bindings), written atomically."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from ..errors import LlmpruneError

#: ``--quantize`` name -> llama.cpp ``llama_ftype`` constant name.
QUANT_TYPES = {
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
}


def check_quantize(name: str) -> str:
    value = str(name).lower()
    if value not in QUANT_TYPES:
        raise LlmpruneError(f"unknown --quantize {name!r}: use one of {', '.join(QUANT_TYPES)}")
    return value


def llama_cpp_module():
    """The ``llama_cpp`` bindings, or a one-line error naming how to get them."""
    try:
        import llama_cpp
    except ImportError:
        raise LlmpruneError(
            "re-quantizing with llama.cpp needs llama-cpp-python: run `make llamacpp-env` and use "
            ".venv-llamacpp/bin/llmprune (or pip install llama-cpp-python)"
        ) from None
    return llama_cpp


def quantize_gguf(
    src: str | os.PathLike, out: str | os.PathLike, qtype: str, threads: int | None = None, force: bool = False
) -> dict:
    """Quantize ``src`` into ``out`` with llama.cpp (``qtype``: q4_1, q4_k_m, q8_0)."""
    from .atomic import atomic_file, check_out_file

    qtype = check_quantize(qtype)
    llama_cpp = llama_cpp_module()
    path = check_out_file(out, force)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype])
    params.nthread = int(threads or os.cpu_count() or 1)
    with atomic_file(path) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise LlmpruneError(
                f"llama.cpp could not quantize {Path(src).name} to {qtype} (status {rc}): see its log above"
            )
    return {"quantize": qtype, "bytes": path.stat().st_size}
