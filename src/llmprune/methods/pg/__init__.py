"""PG: structural pruning by policy gradient over Bernoulli masks, forward passes only
(Gao et al., 2024, "Bypass Back-propagation: Optimization-based Structural Pruning for
LLMs via Policy Gradient", arXiv 2406.10576; official code
ethanygao/backprop-free_LLM_pruning).

Every prunable unit ``u`` (KV group, MLP channel, and, our addition, whole block) gets a
keep probability ``s_u``; masks ``m ~ Bern(s)`` are sampled for every forward and applied
by hooks on the unmodified model (:class:`UnitMasks`). The problem (paper Eq. 3)
``min_s E_m[L(x; m)]  s.t.  budget, 0 ≤ s ≤ 1`` is solved with forward passes only:

1. ``K`` (``samples_per_step``) masks per batch, one forward each, loss ``L_k``;
2. baseline ``b`` = moving average of the step losses (window 5, updated before use);
3. ``g = 1/(K − α) Σ_k (L_k − b)(m_k − s) / sqrt(s(1 − s) + ε)`` (paper Eq. 8 with the
   official code's variance normalisation; ``α`` the current batch's weight in ``b``,
   which makes the estimate unbiased), :func:`llmprune.solvers.policy_gradient.policy_gradient`;
4. SGD step ``s ← s − η_t g`` with a cosine schedule;
5. projection onto the budget: ``s ← clamp(s − v, 0, 1)`` with ``v`` found by bisection.

``budget="family"`` (official) keeps the expected number of KV groups and of channels each
at ``1 − ratio`` of their count; ``"params"`` keeps one expected parameter count,
``Σ_u c_u s_u s_block(u) = (1 − ratio)·P``. ``init``: Wanda-sp scores (official),
z-scored per layer and shifted onto the budget (:mod:`.selection`), constant or random.
The final masks are deterministic top-k selections under the budget
(:func:`select_family`, :func:`select_params`), removed physically.
``keep_best=N`` (our option; 0 is the paper) scores the top-k mask every ``N`` steps on
``select_samples`` windows and ships the best one seen, the initialisation included.
``offload`` streams blocks to the device; under ``torchrun`` every rank samples its own
masks and the gradients of ``s`` are averaged (:mod:`llmprune.engine.distributed`).
Measurements and the choice of defaults: docs/methods/pg.md.
"""

from .layout import Layout, UnitMasks, build_layout
from .method import PG, PGConfig
from .selection import select_family, select_params, shift_to_budget, wanda_sp_scores

__all__ = [
    "Layout",
    "PG",
    "PGConfig",
    "UnitMasks",
    "build_layout",
    "select_family",
    "select_params",
    "shift_to_budget",
    "wanda_sp_scores",
]
