"""The math of PG pruning (Gao et al., 2024, "Bypass Back-propagation: Optimization-based
Structural Pruning for LLMs via Policy Gradient", arXiv 2406.10576): the budgeted
expected size of Bernoulli masks, the projection onto the budget, the variance-normalised
policy-gradient estimator with a moving-average baseline, and the cosine schedule.

Notation: ``s`` (N,) probabilities of keeping each unit, ``m ~ Bern(s)`` masks, ``c`` (N,)
the parameters each unit owns. With whole blocks as a unit family, a unit's weights are
kept only when its block is kept too, so the expected kept parameters are bilinear:
``E[P(m)] = Σ_u c_u · s_u · s_owner(u)`` (``owner`` gives each unit's block entry in ``s``,
``-1`` for the block entries themselves, whose ``c`` is the block's weights that belong
to no masked unit, 0 when groups and channels are both masked).
"""

from __future__ import annotations

import math
from collections import deque
import torch

from .budget import bisect_decreasing


def expected_kept(s: torch.Tensor, cost: torch.Tensor, owner: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_u c_u s_u`` (times ``s_owner(u)`` when units belong to maskable blocks)."""
    kept = s * cost
    if owner is not None:
        kept = kept * torch.where(owner >= 0, s[owner.clamp_min(0)], torch.ones_like(s))
    return kept.sum()


def project_budget(
    s: torch.Tensor, cost: torch.Tensor, budget: float, owner: torch.Tensor | None = None
) -> torch.Tensor:
    """Projection of ``s`` onto ``{0 ≤ s ≤ 1, E[P(m)] = budget}`` by a common shift ``v``:
    ``s ← clamp(s − v, 0, 1)`` with ``v`` found by bisection (the official code's
    projection; paper §3.3).

    Without block owners the constraint is linear, ``Σ c_u s_u = budget``, and the shift
    is the exact projection in the cost-weighted norm ``Σ_u c_u (s_u − y_u)²`` (KKT:
    ``c_u (s_u − y_u) + λ c_u = 0`` inside the box), which for one family of equal
    units is the plain Euclidean projection. With block owners the kept size is
    bilinear and non-increasing in ``v``, so the same bisection still lands exactly on
    the budget (a feasible point, no longer a Euclidean projection).
    ``budget`` outside ``[0, Σ c]`` gives all zeros / all ones.
    """
    s64, c64 = s.double(), cost.double()
    total = float(c64.sum())
    if budget >= total:
        return torch.ones_like(s)
    if budget <= 0:
        return torch.zeros_like(s)

    def kept(v: float) -> float:
        return float(expected_kept((s64 - v).clamp(0.0, 1.0), c64, owner))

    v = bisect_decreasing(kept, budget, float(s64.min()) - 1.0, float(s64.max()))
    return (s64 - v).clamp(0.0, 1.0).to(s.dtype)


def policy_gradient(
    losses: torch.Tensor,
    masks: torch.Tensor,
    s: torch.Tensor,
    baseline: float,
    baseline_weight: float = 1.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Variance-normalised policy-gradient estimate from ``K`` sampled masks (paper §3.2):

    ``g = 1/(K − α) · Σ_k (L_k − b)(m_k − s) / sqrt(s(1 − s) + ε)``.

    ``∇_s log p(m|s) = (m − s)/(s(1 − s))``; multiplying by ``s(1 − s)`` and dividing by
    its square root (the per-unit standard deviation) gives the normalised step that
    the official code takes, whose expectation is
    ``s(1 − s)/sqrt(s(1 − s) + ε) ⊙ ∇_s E_m[L]``.

    ``α`` (``baseline_weight``) is the weight that the *current* batch's mean loss has
    in the baseline ``b`` (a moving average updated before use): ``b = α·L̄ + rest``.
    Then ``E[Σ_k (L_k − b)(m_k − s)] = (K − α)·E[L (m − s)]``, so dividing by ``K − α``
    makes the estimate exactly unbiased. The official code divides by ``K − 1``, which
    is the same whenever ``α = 1`` (first step, or window 1: leave-one-out baseline).

    Shapes: ``losses`` (..., K), ``masks`` (..., K, N), ``s`` (N,), ``baseline`` a float or
    (...,): leading dimensions are independent draws (used by the tests).
    """
    K = losses.shape[-1]
    if K - baseline_weight <= 0:
        raise ValueError("policy_gradient needs K > baseline_weight (at least 2 samples per step)")
    b = torch.as_tensor(baseline, dtype=torch.float64)
    adv = (losses.double() - b[..., None])[..., None]
    g = (adv * (masks.double() - s.double())).sum(-2) / (K - baseline_weight)
    return (g / torch.sqrt(s.double() * (1 - s.double()) + eps)).to(s.dtype)


class MovingBaseline:
    """Moving average of the last ``window`` step losses (official code: window 5,
    updated with the current step's mean loss *before* it is used)."""

    def __init__(self, window: int = 5) -> None:
        self.values: deque[float] = deque(maxlen=max(1, window))

    def update(self, value: float) -> tuple[float, float]:
        """Add ``value``; return ``(baseline, weight of value in it)``."""
        self.values.append(float(value))
        n = len(self.values)
        return sum(self.values) / n, 1.0 / n


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """Cosine decay from ``lr`` at step 0 to 0 after ``steps`` steps."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(1, steps)))
