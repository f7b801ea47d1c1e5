"""Bisection for budgets: the one root finder behind PG's projection and probability
shift and DISP's final logit shift (each searches a scalar shift whose kept size meets
a parameter budget)."""

from __future__ import annotations

from typing import Callable


def bisect(below: Callable[[float], bool], lo: float, hi: float, iters: int, tol: float = 0.0) -> tuple[float, float]:
    """Shrink ``[lo, hi]`` around the boundary of a monotone predicate: ``below(x)`` true
    moves ``lo`` up to ``x``, false moves ``hi`` down; at most ``iters`` halvings, fewer
    once ``hi − lo < tol``. Returns the final ``(lo, hi)``."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if below(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return lo, hi


def bisect_decreasing(f: Callable[[float], float], target: float, lo: float, hi: float, iters: int = 100) -> float:
    """``x`` in ``[lo, hi]`` with ``f(x) == target`` for a continuous non-increasing ``f``
    (``f(lo) >= target >= f(hi)``), by bisection."""
    lo, hi = bisect(lambda x: f(x) > target, lo, hi, iters, tol=1e-15)
    return 0.5 * (lo + hi)
