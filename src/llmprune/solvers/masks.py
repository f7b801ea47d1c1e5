"""Mask selection from scores: exact counts whatever the ties.

Dequantized weights have many equal magnitudes, so masks are never built from a
threshold (``score <= t`` over-prunes on ties) but from sorted indices, with ties
broken by position.
"""

from __future__ import annotations

import torch

from ..errors import LlmpruneError


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the ``k`` lowest entries along the last dim (stable on ties).

    Selection, not a sort: the ``k``-th value ``t`` (``kthvalue``), every entry below
    ``t``, then the first entries equal to ``t`` by position until ``k`` are taken — the
    same set as the first ``k`` of a stable argsort, in linear time. Scores with NaN
    (ordered last, as by the sort) take the stable argsort itself.
    """
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k <= 0:
        return mask
    if k >= scores.shape[-1]:
        return ~mask
    if bool(torch.isnan(scores).any()):
        idx = torch.argsort(scores, dim=-1, stable=True)[..., :k]
        return mask.scatter_(-1, idx, True)
    t = torch.kthvalue(scores, k, dim=-1, keepdim=True).values
    below = scores < t
    at = scores == t
    need = k - below.sum(-1, keepdim=True)
    return below | (at & (torch.cumsum(at, dim=-1) <= need))


def row_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune ``int(ratio · cols)`` lowest-scored weights in every row (Wanda's rule)."""
    return _lowest(scores, int(ratio * scores.shape[-1]))


def count_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Prune exactly the ``k`` lowest-scored weights of the whole matrix."""
    return _lowest(scores.reshape(-1), k).reshape(scores.shape)


def layer_mask(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Prune ``round(ratio · numel)`` lowest-scored weights of the whole matrix."""
    return count_mask(scores, round(ratio * scores.numel()))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive input columns in each row."""
    rows, cols = scores.shape
    if cols % m:
        raise LlmpruneError(
            f"a layer with {cols} input columns cannot take an N:M pattern with M={m}: choose M dividing {cols}"
        )
    grouped = scores.reshape(rows, cols // m, m)
    return _lowest(grouped, m - n).reshape(rows, cols)
