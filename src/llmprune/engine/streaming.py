"""Streamed layer-wise execution: the model never exists in memory as a whole.

The model is built on the ``meta`` device from its config (parameters only; buffers such
as rotary tables are real), the tensors outside the decoder blocks (embeddings, final
norm, LM head) are read once, and each block's tensors are read from the safetensors
shards only when that block runs (:class:`CheckpointReader`, one memory map per block,
closed afterwards so its pages leave the process). The block is materialised on the
compute device, calibrated and pruned exactly as in :class:`~llmprune.engine.layerwise.LayerwiseEngine`
(same capture, same :class:`~llmprune.engine.layerwise.BlockRunner`), run to produce the
next block's inputs, written to its output shard and turned back into ``meta`` tensors.
Peak host memory is therefore the non-block tensors + one block (+ its statistics and
the solver's work space) + two copies of the calibration activations (N × L × d), which
can live in memory-mapped files instead (:class:`DiskActivations`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..errors import LlmpruneError
from .layerwise import BlockRunner

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointReader:
    """Tensor names → shard files of a Hugging Face safetensors checkpoint; reads a
    subset of tensors with one memory map per shard, released after the read."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        index = self.dir / INDEX_FILE
        single = self.dir / SINGLE_FILE
        if index.is_file():
            try:
                self.weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError) as exc:
                raise LlmpruneError(f"{index} is unreadable ({type(exc).__name__}): re-create the checkpoint") from None
        elif single.is_file():
            from safetensors import safe_open

            with safe_open(str(single), framework="pt") as f:
                self.weight_map = {k: SINGLE_FILE for k in f.keys()}
        else:
            raise LlmpruneError(
                f"{self.dir} has no {SINGLE_FILE} or {INDEX_FILE}: streaming needs a safetensors "
                "checkpoint (re-save the model with save_pretrained)"
            )
        for file in set(self.weight_map.values()):
            if not (self.dir / file).is_file():
                raise LlmpruneError(f"{self.dir}: shard {file} named by the index is missing: re-download the model")

    def names(self) -> list[str]:
        return list(self.weight_map)

    def read(
        self, names: list[str], device: torch.device | str = "cpu", dtype: torch.dtype | None = None
    ) -> dict[str, torch.Tensor]:
        """Copies of ``names`` (cast to ``dtype`` when floating point) on ``device``."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self.weight_map[name], []).append(name)
        out: dict[str, torch.Tensor] = {}
        for file, keys in by_file.items():
            with safe_open(str(self.dir / file), framework="pt", device="cpu") as f:
                for key in keys:
                    t = f.get_tensor(key)
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    out[key] = t.to(device)
        return out


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside the context is created on ``meta`` (no memory,
    no initialisation cost); buffers stay real so computed tables (rotary
    frequencies) are correct. Ties made inside are broken: call ``tie_weights`` after."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_skeleton(config: Any, dtype: torch.dtype) -> nn.Module:
    """The causal LM of ``config`` with every parameter on ``meta``, in eval mode."""
    from transformers import AutoModelForCausalLM

    try:
        with parameters_on_meta():
            model: nn.Module = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmpruneError(f"config.json does not build a causal LM ({first}): check the model directory") from None
    return model.eval()


def set_tensor(root: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter or buffer ``name`` (dotted, relative to ``root``) by ``value``."""
    path, _, leaf = name.rpartition(".")
    module = root.get_submodule(path) if path else root
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    elif leaf in module._buffers:
        module._buffers[leaf] = value
    else:
        raise LlmpruneError(
            f"checkpoint tensor {name} is not a parameter or buffer of the model built from "
            "config.json: the checkpoint does not match its config"
        )


def persistent_names(module: nn.Module) -> list[str]:
    """Names in ``module.state_dict()`` (parameters and persistent buffers), without building it."""
    return list(module.state_dict(keep_vars=True).keys())


def to_meta(module: nn.Module, names: list[str]) -> None:
    """Release the storage of ``names`` (parameters/persistent buffers) of ``module``."""
    for name in names:
        path, _, leaf = name.rpartition(".")
        sub = module.get_submodule(path) if path else module
        p = sub._parameters.get(leaf)
        b = sub._buffers.get(leaf)
        if p is not None:
            sub._parameters[leaf] = nn.Parameter(
                torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=False
            )
        elif b is not None:
            sub._buffers[leaf] = torch.empty(b.shape, dtype=b.dtype, device="meta")


def module_prefix(model: nn.Module, module: nn.Module) -> str:
    """``"model.layers.3."`` for the block ``module`` of ``model``."""
    for name, sub in model.named_modules():
        if sub is module:
            return name + "." if name else ""
    raise ValueError("module is not part of the model")


class DiskActivations:
    """Two memory-mapped files holding the calibration activations (N × L × d): the
    inputs of the current block and the outputs it writes; they swap after each block.
    ``names`` (default :data:`NAMES`) names the pair, so that a run can keep several
    streams; :meth:`tensor` also maps other files of the same shape in the directory.

    The bytes of either file are the tensor in its dtype (bfloat16 included, through a
    ``uint8`` map viewed as the dtype)."""

    NAMES = ("acts-a.bin", "acts-b.bin")

    def __init__(
        self, directory: Path, shape: tuple[int, ...], dtype: torch.dtype, names: tuple[str, str] = NAMES
    ) -> None:
        self.dir = directory
        self.shape = tuple(shape)
        self.dtype = dtype
        self.names = names
        self.nbytes = int(np.prod(self.shape)) * torch.empty((), dtype=dtype).element_size()
        self._maps: dict[str, np.memmap] = {}

    def tensor(self, name: str, create: bool = False) -> torch.Tensor:
        """The activations in file ``name`` (created when ``create``, else it must exist whole)."""
        path = self.dir / name
        whole = path.is_file() and path.stat().st_size == self.nbytes
        if not create and not whole:
            raise LlmpruneError(
                f"activation file {path} is missing or truncated: pass resume=False (--no-resume) to start again"
            )
        mm = np.memmap(path, dtype=np.uint8, mode="r+" if whole else "w+", shape=(self.nbytes,))
        self._maps[name] = mm
        return torch.from_numpy(mm).view(self.dtype).view(self.shape)

    def other(self, name: str) -> str:
        return self.names[1 - self.names.index(name)]

    def flush(self, name: str) -> None:
        self._maps[name].flush()

    def remove(self, name: str) -> None:
        """Unmap file ``name`` and delete it."""
        self._maps.pop(name, None)
        (self.dir / name).unlink(missing_ok=True)


class StreamRunner(BlockRunner):
    """:class:`BlockRunner` whose block outputs go into a given tensor (e.g. a memory map)
    instead of a new one; the per-sample computation is BlockRunner's."""

    def __init__(
        self,
        block: nn.Module,
        inputs: torch.Tensor,
        kwargs: dict,
        device: torch.device,
        outputs: torch.Tensor | None = None,
    ) -> None:
        super().__init__(block, inputs, kwargs, device)
        self.outputs = outputs

    def forward(self, keep_outputs: bool = True, stop_after: nn.Module | None = None) -> torch.Tensor | None:
        if not keep_outputs or self.outputs is None:
            return super().forward(keep_outputs, stop_after)
        with torch.inference_mode():
            for i in range(self.inputs.shape[0]):
                out = self.block(self.inputs[i : i + 1].to(self.device), **self.kwargs)
                out = out[0] if isinstance(out, tuple) else out
                self.outputs[i : i + 1] = out.to(self.outputs.device)
        self.last_outputs = self.outputs
        return self.outputs
