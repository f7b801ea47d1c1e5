"""Loading llmprune checkpoints: the class that rebuilds their shapes, and a check
that the tensors on disk match the config before any weight is read."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import LlmpruneError
from ..modeling.modeling_llmprune import LAYOUT_KEY, pruned_class


def read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LlmpruneError(
            f"{path}/config.json is unreadable ({type(exc).__name__}): re-create the checkpoint"
        ) from None


def causal_lm_class(path: Path) -> type | None:
    """The class to load ``path`` with: the layout-applying subclass for heterogeneous
    llmprune checkpoints, None (AutoModelForCausalLM) otherwise."""
    return checkpoint_loader(path)[0]


def checkpoint_loader(path: Path) -> tuple[type | None, Any]:
    """``(class, config)`` to load ``path`` with: the layout-applying subclass of the stock
    family class for heterogeneous checkpoints (``llmprune_layout``, or DeciLM
    ``block_configs`` rebuilt as the family plus a layout, see
    :func:`llmprune.models.decilm.internal_config`), and the config to build it from
    when it is not the checkpoint's own; ``(None, None)`` for plain checkpoints."""
    from .decilm import internal_config, is_decilm

    cfg = read_config(path)
    config = None
    if is_decilm(cfg):
        config = internal_config(cfg, path)
        layout = getattr(config, LAYOUT_KEY)
    else:
        layout = cfg.get(LAYOUT_KEY)
    if not layout:
        return None, None
    if not isinstance(layout, dict):
        raise LlmpruneError(
            f"{path}/config.json: {LAYOUT_KEY} is not a mapping: the checkpoint is corrupt; re-export it"
        )
    import transformers

    base = getattr(transformers, str(layout.get("base_architecture")), None)
    if not (isinstance(base, type) and issubclass(base, transformers.PreTrainedModel)):
        raise LlmpruneError(
            f"{path}: llmprune layout names base class {layout.get('base_architecture')!r}, which this "
            f"transformers {transformers.__version__} does not have: upgrade transformers"
        )
    return pruned_class(base), config


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


def _disk_tensors(path: Path) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """``name -> (shape, safetensors dtype, file)`` of every tensor in ``path/*.safetensors``."""
    from safetensors import safe_open

    tensors: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    piece = f.get_slice(key)
                    tensors[key] = (tuple(piece.get_shape()), str(piece.get_dtype()), file)
        except Exception as exc:
            raise LlmpruneError(
                f"cannot load model {path}: {file.name} is corrupt ({type(exc).__name__}); re-create the checkpoint"
            ) from None
    return tensors


def _layer_of(key: str) -> str:
    m = re.search(r"\.(?:layers|h|blocks)\.(\d+)\.", key)
    return f"layer {m.group(1)}" if m else "outside the decoder blocks"


def check_trusted(path: Path) -> None:
    """Refuse a checkpoint that only loads by running its own Python code (``auto_map`` with a
    ``model_type`` transformers does not know). llmprune never executes checkpoint code: its
    own heterogeneous checkpoints (``llmprune_layout``, DeciLM ``block_configs``) are rebuilt by
    :func:`checkpoint_loader` from the stock family class, without the checkpoint's code."""
    from .decilm import is_decilm

    cfg = read_config(path)
    if not cfg.get("auto_map") or cfg.get(LAYOUT_KEY) or is_decilm(cfg):
        return
    from transformers import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise LlmpruneError(
            f"{path} needs its own Python code (config.json auto_map, model_type {model_type!r} unknown to "
            "transformers), and llmprune never runs checkpoint code: use a model of a family transformers supports"
        )


def check_format(path: Path) -> None:
    """safetensors is the supported weight format: pickled ``.bin`` weights can run code when read."""
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickled:
        raise LlmpruneError(
            f"{path} holds only pickled weights ({pickled[0]}), and llmprune reads only safetensors: convert it "
            "once with transformers (load it yourself, then model.save_pretrained(dir, safe_serialization=True))"
        )


def _quantized(config: Any) -> bool:
    return getattr(config, "quantization_config", None) is not None


def _check_index_buffers(path: Path, model: Any, disk: dict) -> None:
    """Layout index buffers (``in_index``/``out_index``) must be unique and inside the residual width."""
    from safetensors import safe_open

    hidden = getattr(model.config, "hidden_size", None)
    for key, (_shape, _, file) in disk.items():
        if not key.endswith((".in_index", ".out_index")):
            continue
        owner = model.get_submodule(key.rsplit(".", 1)[0]) if "." in key else None
        bound = getattr(owner, "full_out", None) if key.endswith(".out_index") else None
        bound = bound or hidden
        with safe_open(str(file), framework="pt") as f:
            index = f.get_tensor(key)
        if index.is_floating_point() or index.numel() == 0:
            continue
        if bound is not None and (int(index.min()) < 0 or int(index.max()) >= bound):
            raise LlmpruneError(
                f"{path}: index buffer {key} ({_layer_of(key)}) holds values outside [0, {bound}): "
                "the checkpoint is corrupt; re-export it"
            )
        if index.unique().numel() != index.numel():
            raise LlmpruneError(
                f"{path}: index buffer {key} ({_layer_of(key)}) repeats residual indices: "
                "the checkpoint is corrupt; re-export it"
            )


def validate_checkpoint(path: Path, cls: type | None, config: Any = None) -> None:
    """Check every tensor of ``path/*.safetensors`` against the model the config builds,
    before any weight is read: each tensor the model needs present with its shape and a
    floating dtype (unless the config declares quantization), no unexpected tensors, and
    layout index buffers in range and unique. ``config`` replaces the checkpoint's own (a
    DeciLM ``block_configs`` checkpoint read as family + layout, which leaves out the tensors
    of removed parts). Every problem is one line naming the tensor."""
    from transformers import AutoConfig, AutoModelForCausalLM

    check_trusted(path)
    check_format(path)
    disk = _disk_tensors(path)
    if not disk:
        return
    rebuilt = config is not None
    try:
        if config is None:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
        with torch.device("meta"):
            model = (
                cls(config) if cls is not None else AutoModelForCausalLM.from_config(config, trust_remote_code=False)
            )
    except LlmpruneError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmpruneError(f"{path}/config.json does not build a model ({first}): the checkpoint is corrupt") from None
    state = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in state.items()}
    for key, (shape, _, _) in disk.items():
        want = expected.get(key)
        if want is not None and want != shape:
            raise LlmpruneError(
                f"{path}: tensor {key} ({_layer_of(key)}) has shape {list(shape)} but the config builds "
                f"{list(want)}: the checkpoint's tensors do not match its config; re-export it"
            )
    # tied tensors (lm_head = embed_tokens) are one tensor: any of their names on disk will do
    aliases: dict[int, list[str]] = {}
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False)
    ):
        aliases.setdefault(id(tensor), []).append(name)
    names_of = {name: names for names in aliases.values() for name in names}
    missing = [
        k
        for k in expected
        if k not in disk
        and not any(a in disk for a in names_of.get(k, [k]))
        and not (rebuilt and _absent_by_design(k, expected[k], config))
    ]
    if missing:
        raise LlmpruneError(
            f"{path}: tensor {missing[0]} ({_layer_of(missing[0])}) is missing from the checkpoint"
            f"{' (and ' + str(len(missing) - 1) + ' more)' if len(missing) > 1 else ''}: re-export it"
        )
    ignored = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_unexpected", None) or [])]
    unexpected = [
        k
        for k in disk
        if k not in expected
        and not k.endswith("rotary_emb.inv_freq")  # older exports
        and not any(p.search(k) for p in ignored)
    ]
    if unexpected:
        raise LlmpruneError(
            f"{path}: tensor {unexpected[0]} is not part of the model its config builds"
            f"{' (and ' + str(len(unexpected) - 1) + ' more)' if len(unexpected) > 1 else ''}: the checkpoint does "
            "not match its config; re-export it"
        )
    if not _quantized(config):
        for key, (_, dtype, _) in disk.items():
            if key in state and state[key].is_floating_point() and dtype not in _FLOAT_DTYPES:
                raise LlmpruneError(
                    f"{path}: tensor {key} ({_layer_of(key)}) is stored as {dtype}, but the config declares no "
                    "quantization: the checkpoint is corrupt; re-export it in a floating dtype"
                )
    _check_index_buffers(path, model, disk)


def _absent_by_design(key: str, shape: tuple[int, ...], config: Any) -> bool:
    """Tensors a DeciLM ``block_configs`` checkpoint leaves out: empty ones (a removed
    MLP) and the norms of a removed attention or MLP, which have no effect."""
    layout = getattr(config, LAYOUT_KEY, None) or {}
    m = re.search(r"\.layers\.(\d+)\.", key)
    if not layout or m is None:
        return False
    spec = layout["layers"][int(m.group(1))]
    if 0 in shape:
        return True
    if key.endswith("input_layernorm.weight"):
        return "no_attention" in spec
    down = spec.get("linears", {}).get("mlp.down_proj")
    return key.endswith("post_attention_layernorm.weight") and down is not None and down["shape"][1] == 0
