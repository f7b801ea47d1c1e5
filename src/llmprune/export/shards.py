"""Incremental safetensors output: one shard per decoder block, written as the block
finishes, plus the Hugging Face index (``model.safetensors.index.json``) at the end.

Each shard is written under a temporary name and renamed into place, so a shard on disk
is always complete; the streamed pipeline (:mod:`llmprune.engine.streaming`) records the
shards it has finished in its resume state and never rewrites them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

INDEX_NAME = "model.safetensors.index.json"


def shard_name(index: int, total: int) -> str:
    """``model-00003-of-00031.safetensors`` (1-based ``index``), the transformers naming."""
    return f"model-{index:05d}-of-{total:05d}.safetensors"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_shard(directory: Path, name: str, tensors: dict[str, torch.Tensor]) -> int:
    """Write ``tensors`` (CPU, contiguous) as ``directory/name`` atomically; return its size in bytes."""
    from safetensors.torch import save_file

    final = directory / name
    tmp = directory / f".{name}.tmp"
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    fsync_file(tmp)
    tmp.chmod(0o644)
    os.replace(tmp, final)
    return final.stat().st_size


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def write_index(directory: Path, weight_map: dict[str, str], total_size: int) -> None:
    """The index transformers reads to find each tensor's shard."""
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
