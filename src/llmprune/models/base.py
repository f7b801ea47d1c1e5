"""The typed adapter interface: what a block, a head, a channel is in one model family.

Methods and the engine never branch on model names; they ask the adapter. One adapter
class covers every ``model_type`` whose module layout matches (e.g. LLaMA covers
Mistral, Qwen2 and SmolLM2). The design follows the per-family adapter idea of
SliceGPT's ``model_adapter.py`` and llmc's ``get_subsets_in_block``: each block
declares the groups of linears that read the same input, which is exactly what
statistics hooks (one Hessian per group) and slicing both need.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class AttentionSpec:
    """One block's attention: projections and head geometry (read from the weights)."""

    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (GQA grouping; 1 for plain multi-head attention)."""
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class MLPSpec:
    """One block's MLP. ``gate`` is None for plain two-layer MLPs (fc1/fc2)."""

    module: nn.Module
    up: nn.Linear
    down: nn.Linear
    gate: nn.Linear | None = None

    @property
    def channels(self) -> int:
        return self.up.out_features


@dataclass(frozen=True)
class LinearGroup:
    """Linears of one block that read the same input tensor (one shared Hessian)."""

    names: tuple[str, ...]
    linears: tuple[nn.Linear, ...] = field(repr=False)


class ModelAdapter(ABC):
    """Family-specific knowledge about a causal LM, behind one small interface."""

    #: ``config.model_type`` values this adapter understands.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: Human-readable family name used in messages.
    family: ClassVar[str] = ""

    def __init__(self, model: nn.Module) -> None:
        #: the transformers causal LM and its config (attributes are the family's, untyped)
        self.model: Any = model
        self.config: Any = self.model.config

    # -- whole-model structure -------------------------------------------------
    @abstractmethod
    def decoder(self) -> nn.Module:
        """The base model whose ``forward`` embeds tokens and runs the blocks."""

    @abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The decoder blocks, in order."""

    @abstractmethod
    def embeddings(self) -> nn.Embedding:
        """The token embedding."""

    @abstractmethod
    def final_norm(self) -> nn.Module | None:
        """The norm applied after the last block (None if the family has none)."""

    def lm_head(self) -> nn.Linear:
        return self.model.get_output_embeddings()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output: final norm, then the LM head (families
        with an output projection or logit soft-capping extend this)."""
        norm = self.final_norm()
        if norm is not None:
            hidden = norm(hidden)
        return self.lm_head()(hidden)

    def tied_embeddings(self) -> bool:
        """True when the LM head shares its weight tensor with the token embedding."""
        return self.lm_head().weight is self.embeddings().weight

    # -- one block --------------------------------------------------------------
    @abstractmethod
    def attention(self, block: nn.Module) -> AttentionSpec | None:
        """Attention projections and head geometry of ``block`` (None when surgery
        removed the block's attention entirely)."""

    @abstractmethod
    def mlp(self, block: nn.Module) -> MLPSpec:
        """MLP projections of ``block``."""

    @abstractmethod
    def norms(self, block: nn.Module) -> list[nn.Module]:
        """The normalisation modules inside ``block``."""

    def linear_groups(self, block: nn.Module) -> list[LinearGroup]:
        """Groups of linears sharing one input, in execution order.

        The default fits sequential pre-norm blocks (attention then MLP); parallel
        families (Phi) override it.
        """
        att, mlp = self.attention(block), self.mlp(block)
        groups = []
        if att is not None:
            groups += [
                LinearGroup(("q", "k", "v"), (att.q, att.k, att.v)),
                LinearGroup(("o",), (att.o,)),
            ]
        if mlp.gate is not None:
            groups.append(LinearGroup(("gate", "up"), (mlp.gate, mlp.up)))
        else:
            groups.append(LinearGroup(("up",), (mlp.up,)))
        groups.append(LinearGroup(("down",), (mlp.down,)))
        return groups

    def prunable_linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """Every linear of ``block`` that the unstructured methods prune, by short name."""
        out: dict[str, nn.Linear] = {}
        for group in self.linear_groups(block):
            out.update(zip(group.names, group.linears))
        return out

    # -- stock configs for uniformly pruned models -------------------------------
    def uniform_config(self, heads: int, kv_heads: int, head_dim: int, channels: int) -> dict | None:
        """Config overrides that make the *stock* family class build blocks with these
        widths, or None when its config cannot express them (then the checkpoint
        needs the llmprune layout). LLaMA-style configs by default."""
        return {
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "head_dim": head_dim,
            "intermediate_size": channels,
        }

    # -- counting ---------------------------------------------------------------
    def block_linear_params(self) -> int:
        """Weights of all decoder-block linears (the protocol's ratio denominator)."""
        return sum(lin.weight.numel() for block in self.blocks() for lin in self.prunable_linears(block).values())

    @staticmethod
    def head_geometry(q: nn.Linear, k: nn.Linear, head_dim: int) -> tuple[int, int]:
        """(num_heads, num_kv_heads) read from the projection widths, not the config,
        so that per-layer pruned widths are always described correctly."""
        if q.out_features % head_dim or k.out_features % head_dim:
            raise ValueError(
                f"projection widths {q.out_features}/{k.out_features} are not multiples of head_dim {head_dim}"
            )
        return q.out_features // head_dim, k.out_features // head_dim


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied LM head is counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_nonzero_parameters(model: nn.Module) -> int:
    """Unique parameters that are non-zero (what unstructured pruning reduces)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += int(torch.count_nonzero(p).item())
    return total


def stock_architecture(model: nn.Module) -> str:
    """The transformers class ``model`` is (or extends, after a layout reload)."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformers."):
            return cls.__name__
    return type(model).__name__
