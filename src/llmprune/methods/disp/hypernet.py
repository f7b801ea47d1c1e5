"""DISP's mask hypernetwork and its binary relaxations (Gao et al., "DISP-LLM:
Dimension-Independent Structural Pruning for Large Language Models", NeurIPS 2024,
arXiv 2410.11988).

The hypernetwork maps *fixed* random inputs ``z_i`` (one 32-d vector per selection
vector, never trained) through a 1-layer bidirectional GRU (64 units per direction),
``LayerNorm`` and ``GELU`` to one linear head per selection vector, whose output
``a_i`` has one logit per prunable dimension. Masks are then drawn from the relaxed
Bernoulli ("Gumbel-sigmoid"):

    s = sigmoid((a + n + b) / T),    b = 3 (so that every dimension starts kept), T = 0.4,

and hard masks are ``round(s)`` with a gradient estimator:

- ``"st"``: straight-through, ``hard − sg(s) + s`` (what the official code does);
- ``"reinmax"``: ReinMax (Liu et al., "Bridging Discrete and Backpropagation:
  Straight-Through and Beyond", NeurIPS 2023), the second-order
  estimator the paper names, written for one binary variable (a two-class softmax with
  logits ``[θ, 0]``, ``θ = a + b``).

Noise: as in the official code, ``n`` is a single Gumbel sample ``−log(−log u)``
(its left tail is thin, so with the offset every dimension starts kept: P(n < −3) ≈
2e-9). ReinMax assumes ``hard ~ Bernoulli(sigmoid(θ))``, so its hard sample uses logistic
noise (the difference of two Gumbels, the binary Gumbel-softmax of Jang et al. 2017),
and its own temperature τ = 1: the estimate is ``(2·π1(1−π1) − ½·π0(1−π0))·∂L/∂D``, and
with the Gumbel-sigmoid's τ = 0.4 the first term vanishes for the saturated logits every
dimension starts with, so the gradient changes sign. A consequence of the logistic noise: the
initial hard samples drop about sigmoid(−3) ≈ 4.7 % of every vector, so
``ce_masks="hard"`` with ReinMax starts from a badly damaged model; keep the default
soft masks for the cross-entropy with ReinMax.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class DispHypernet(nn.Module):
    """``z_i`` (fixed) → bi-GRU → LayerNorm → GELU → ``Linear_i`` → logits ``a_i``.

    ``sizes[i]`` is the length of selection vector ``i``; the GRU runs over the
    sequence of all vectors in model order (block 0's five vectors, then block 1's...),
    so that the masks of different layers are coupled, as in the paper.
    """

    def __init__(self, sizes: Sequence[int], input_dim: int = 32, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        if not sizes:
            raise ValueError("the hypernetwork needs at least one selection vector")
        self.sizes = [int(n) for n in sizes]
        gen = torch.Generator().manual_seed(seed)
        # Fixed random inputs: a buffer, not a parameter (never trained, saved with the state).
        self.register_buffer("z", torch.randn(len(self.sizes), 1, input_dim, generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.gru = nn.GRU(input_dim, hidden, num_layers=1, bidirectional=True)
            self.norm = nn.LayerNorm(2 * hidden)
            self.heads = nn.ModuleList(nn.Linear(2 * hidden, n, bias=False) for n in self.sizes)

    def forward(self) -> list[torch.Tensor]:
        """The logits ``a_i`` of every selection vector (float32)."""
        out, _ = self.gru(self.z)  # (num_vectors, 1, 2·hidden)
        h = F.gelu(self.norm(out[:, 0]))
        return [head(h[i]) for i, head in enumerate(self.heads)]


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(like.shape, generator=generator, device="cpu" if generator is not None else like.device)
    return u.to(like.device).clamp(1e-10, 1 - 1e-7)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``−log(−log u)``, ``u ~ U(0, 1)`` (the official code's noise)."""
    return (-torch.log(-torch.log(_uniform(like, generator)))).to(like.dtype)


def logistic_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``log u − log(1 − u)``, ``u ~ U(0, 1)``: the difference of two Gumbel samples."""
    u = _uniform(like, generator)
    return (torch.log(u) - torch.log1p(-u)).to(like.dtype)


def soft_mask(logits: torch.Tensor, noise: torch.Tensor, temperature: float, offset: float) -> torch.Tensor:
    """The relaxed sample ``sigmoid((a + n + b)/T)`` (Gumbel-sigmoid)."""
    return torch.sigmoid((logits + noise + offset) / temperature)


def hard_mask(
    logits: torch.Tensor,
    noise: torch.Tensor,
    temperature: float,
    offset: float,
    estimator: str = "st",
    reinmax_temperature: float = 1.0,
) -> torch.Tensor:
    """A {0, 1} sample whose gradient is the chosen estimator's: ``"st"`` (pass
    :func:`gumbel_noise`; ``temperature`` is the Gumbel-sigmoid's) or ``"reinmax"`` (pass
    :func:`logistic_noise`; ``reinmax_temperature`` is ReinMax's own τ)."""
    theta = logits + offset
    if estimator == "st":  # noise: gumbel_noise
        s = torch.sigmoid((theta + noise) / temperature)
        return (s > 0.5).to(s.dtype) - s.detach() + s
    if estimator == "reinmax":  # noise: logistic_noise
        hard = (theta + noise > 0).to(theta.dtype)  # D ~ Bernoulli(sigmoid(θ))
        p0 = torch.sigmoid(theta)
        p1 = 0.5 * (hard + torch.sigmoid(theta / reinmax_temperature))
        p1v = p1.detach()
        # softmax(sg(ln π1 − θ) + θ) for two classes: value π1, Jacobian π1(1 − π1)
        p1 = p1v + p1v * (1 - p1v) * (theta - theta.detach())
        p2 = 2 * p1 - 0.5 * p0
        return p2 - p2.detach() + hard
    raise ValueError(f"unknown estimator {estimator!r}")


def deterministic_keep(logits: torch.Tensor, offset: float, shift: float = 0.0) -> torch.Tensor:
    """The noise-free hard mask ``a + b + shift > 0`` (bool); never empty (the largest
    logit is kept when nothing else is, as the official code does)."""
    keep = (logits.detach() + offset + shift) > 0
    if not bool(keep.any()):
        keep = torch.zeros_like(keep)
        keep[int(torch.argmax(logits.detach()))] = True
    return keep
