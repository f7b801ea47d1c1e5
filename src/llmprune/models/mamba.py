"""Adapter for Mamba (Gu & Dao 2023; ``MambaForCausalLM``, ``model_type == "mamba"``).

Layout: ``model.backbone.layers[i]`` is a ``MambaBlock`` — ``norm`` (RMSNorm), then
``mixer`` with four linears and a depthwise ``conv1d`` that stays dense; the backbone's
``embeddings`` and ``norm_f``; the LM head is tied to the embeddings by default.

What each linear reads (transformers' ``MambaMixer.forward``, the torch path that runs
on a CPU and the kernel path alike), so each is its own group with its own Hessian:

- ``in_proj``: the normed block input → ``[x, z]`` (2 · intermediate);
- ``x_proj``: ``silu(conv1d(x))`` → ``[dt (rank), B, C]``;
- ``dt_proj``: the first ``time_step_rank`` outputs of ``x_proj``. The mixer applies it
  as ``dt_proj.weight @ dt`` (and its bias inside the scan), never as a module, so no
  hook on ``dt_proj`` fires: its inputs are read from ``x_proj``'s output instead
  (:class:`TappedLinearGroup`);
- ``out_proj``: the gated scan output ``y · silu(z)``.

Mamba has no attention heads or MLP channels: structured pruning is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import LlmpruneError
from .base import AttentionSpec, LinearGroup, MLPSpec, ModelAdapter

#: ``(module, select)``: the group's input is ``select(args, output)`` of ``module``'s forward.
InputTap = tuple[nn.Module, Callable[[tuple, torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class TappedLinearGroup(LinearGroup):
    """A group whose linear is applied through its weight, not called as a module; the
    statistics hooks read its input from another module's forward (``input_tap``)."""

    input_tap: InputTap | None = field(default=None, repr=False, compare=False)


def _no_structured() -> LlmpruneError:
    return LlmpruneError(
        "structured pruning is not supported for mamba (no attention heads or MLP "
        "channels): use an unstructured method such as --method sparsegpt or mrp"
    )


class MambaAdapter(ModelAdapter):
    model_types = ("mamba",)
    family = "mamba"

    def decoder(self) -> nn.Module:
        return self.model.backbone

    def blocks(self) -> nn.ModuleList:
        return self.model.backbone.layers

    def embeddings(self) -> nn.Embedding:
        return self.model.backbone.embeddings

    def final_norm(self) -> nn.Module | None:
        return self.model.backbone.norm_f

    def attention(self, block: Any) -> AttentionSpec | None:
        raise _no_structured()

    def mlp(self, block: Any) -> MLPSpec:
        raise _no_structured()

    def norms(self, block: Any) -> list[nn.Module]:
        return [block.norm]

    def linear_groups(self, block: Any) -> list[LinearGroup]:
        mixer = block.mixer
        rank = mixer.dt_proj.in_features

        def dt_input(args: tuple, output: torch.Tensor) -> torch.Tensor:
            return output[..., :rank]

        return [
            LinearGroup(("in_proj",), (mixer.in_proj,)),
            LinearGroup(("x_proj",), (mixer.x_proj,)),
            TappedLinearGroup(("dt_proj",), (mixer.dt_proj,), input_tap=(mixer.x_proj, dt_input)),
            LinearGroup(("out_proj",), (mixer.out_proj,)),
        ]

    def uniform_config(self, heads: int, kv_heads: int, head_dim: int, channels: int) -> dict | None:
        return None
