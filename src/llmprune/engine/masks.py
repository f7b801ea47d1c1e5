"""Masks applied by hooks on an unmodified model: the one mechanism behind SoBP's
gradient masks, PG's sampled masks and DISP's selection vectors.

A mask is read when the module runs (``get()``), so a method changes masks between
forwards without re-registering anything; ``get()`` returning None leaves the module
alone. Inputs are multiplied before the module (``args[0] * m``), outputs after it
(``output * m``); ``repeat`` expands one value per unit to the unit's columns (e.g. one
per KV group to its ``group_size · head_dim`` ``o_proj`` input columns). With {0, 1}
masks the masked model computes exactly what the model with those units removed does.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

MaskFn = Callable[[], "torch.Tensor | None"]


def _expand(m: torch.Tensor, repeat: int, like: torch.Tensor) -> torch.Tensor:
    if repeat > 1:
        m = m.repeat_interleave(repeat)
    return m.to(device=like.device, dtype=like.dtype)  # masks may live off the compute device


class MaskHooks:
    """Registered mask hooks; :meth:`remove` (or leaving the ``with`` block) takes them off."""

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []

    def input_mask(self, module: nn.Module, get: MaskFn, repeat: int = 1) -> None:
        """Multiply ``module``'s first input by ``get()`` (expanded ``repeat`` times)."""

        def hook(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            m = get()
            if m is None:
                return None
            return (args[0] * _expand(m, repeat, args[0]),) + tuple(args[1:])

        self.handles.append(module.register_forward_pre_hook(hook))

    def output_mask(self, module: nn.Module, get: MaskFn) -> None:
        """Multiply ``module``'s output by ``get()``."""

        def hook(mod: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            m = get()
            return None if m is None else output * _expand(m, 1, output)

        self.handles.append(module.register_forward_hook(hook))

    def skip_block(self, block: nn.Module, skipped: Callable[[], bool]) -> None:
        """Make a decoder block return its input while ``skipped()`` is true."""

        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            if not skipped():
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden

        self.handles.append(block.register_forward_hook(hook, with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self) -> "MaskHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
