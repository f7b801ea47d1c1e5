"""Loading llmprune checkpoints: the class that rebuilds their shapes, and a check
that the tensors on disk match the config before any weight is read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import LlmpruneError
from ..modeling.modeling_llmprune import LAYOUT_KEY, pruned_class


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LlmpruneError(f"{path}/config.json is unreadable ({type(exc).__name__}): re-create the checkpoint") from None


def causal_lm_class(path: Path) -> type | None:
    """The class to load ``path`` with: the layout-applying subclass for heterogeneous
    llmprune checkpoints, None (AutoModelForCausalLM) otherwise."""
    cfg = read_config(path)
    layout = cfg.get(LAYOUT_KEY)
    if not layout:
        return None
    import transformers

    base = getattr(transformers, str(layout.get("base_architecture")), None)
    if base is None:
        raise LlmpruneError(
            f"{path}: llmprune layout names base class {layout.get('base_architecture')!r}, which this "
            f"transformers {transformers.__version__} does not have: upgrade transformers"
        )
    return pruned_class(base)


def _disk_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except Exception as exc:
            raise LlmpruneError(f"cannot load model {path}: {file.name} is corrupt ({type(exc).__name__}); re-create the checkpoint") from None
    return shapes


def _layer_of(key: str) -> str:
    m = re.search(r"\.(?:layers|h|blocks)\.(\d+)\.", key)
    return f"layer {m.group(1)}" if m else "outside the decoder blocks"


def validate_checkpoint(path: Path, cls: type | None) -> None:
    """Compare every tensor in ``path/*.safetensors`` with the shapes the config builds;
    a mismatch is a one-line error naming the tensor and its layer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    disk = _disk_shapes(path)
    if not disk:
        return
    try:
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = cls(config) if cls is not None else AutoModelForCausalLM.from_config(config)
    except LlmpruneError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmpruneError(f"{path}/config.json does not build a model ({first}): the checkpoint is corrupt") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in disk.items():
        want = expected.get(key)
        if want is not None and want != shape:
            raise LlmpruneError(
                f"{path}: tensor {key} ({_layer_of(key)}) has shape {list(shape)} but the config builds "
                f"{list(want)}: the checkpoint's tensors do not match its config; re-export it"
            )
    missing = [k for k in expected if k not in disk and re.search(r"\.(layers|h|blocks)\.\d+\.", k)]
    if missing:
        raise LlmpruneError(
            f"{path}: tensor {missing[0]} ({_layer_of(missing[0])}) is missing from the checkpoint"
            f"{' (and ' + str(len(missing) - 1) + ' more)' if len(missing) > 1 else ''}: re-export it"
        )
