"""Numerical cores against brute force on tiny problems."""

from __future__ import annotations

import pytest
import torch

from llmprune.engine.stats import InputStats
from llmprune.errors import LlmpruneError
from llmprune.solvers import Sparsity, layer_mask, nm_mask, row_mask, sparsegpt_prune
from llmprune.solvers.obs import dampen


def _problem(rows: int = 6, cols: int = 16, tokens: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    X = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ torch.randn(
        cols, cols, generator=g, dtype=torch.float64
    )
    H = 2 * X.T @ X / tokens
    return W, X, H


def _least_squares(W: torch.Tensor, H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Brute force: per row, min (w - v) H (w - v)ᵀ over v with v[mask] = 0."""
    out = torch.zeros_like(W)
    for r in range(W.shape[0]):
        keep = (~mask[r]).nonzero().flatten()
        out[r, keep] = torch.linalg.solve(H[keep][:, keep], H[keep] @ W[r])
    return out


def _loss(W: torch.Tensor, V: torch.Tensor, H: torch.Tensor) -> float:
    D = W - V
    return float(torch.einsum("ri,ij,rj->", D, H, D))


def test_sparsegpt_one_weight_per_row_equals_obs_optimum() -> None:
    """Removing one weight (first column processed first) is exactly OBS = least squares."""
    W, _, H = _problem()
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[:, 0] = True
    Hd = dampen(H, 0.01)
    out = sparsegpt_prune(W, Hd.float(), None, damp=0.0, mask=mask).double()
    ref = _least_squares(W, Hd, mask)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_sparsegpt_loss_between_optimum_and_no_update() -> None:
    W, _, H = _problem(cols=32)
    s = Sparsity(ratio=0.5)
    out = sparsegpt_prune(W.float(), H.float(), s, blocksize=8).double()
    mask = out == 0
    optimum = _loss(W, _least_squares(W, H + 1e-9 * torch.eye(32, dtype=H.dtype), mask), H)
    no_update = _loss(W, W.masked_fill(mask, 0), H)
    got = _loss(W, out, H)
    assert optimum <= got * (1 + 1e-6)
    assert got < no_update


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_sparsegpt_exact_layer_sparsity(ratio: float) -> None:
    W, _, H = _problem(rows=8, cols=40)
    out = sparsegpt_prune(W.float(), H.float(), Sparsity(ratio=ratio), blocksize=16)
    assert int((out == 0).sum()) == round(ratio * W.numel())


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 5)])
def test_sparsegpt_nm_pattern(n: int, m: int) -> None:
    W, _, H = _problem(rows=5, cols=40)
    out = sparsegpt_prune(W.float(), H.float(), Sparsity(n=n, m=m), blocksize=16)
    groups = (out != 0).reshape(5, -1, m).sum(-1)
    assert int(groups.max()) <= n and int((out == 0).sum()) >= (m - n) * W.numel() // m


def _published_sparsegpt_nm(W: torch.Tensor, H: torch.Tensor, n: int, m: int, damp: float = 0.01):
    """SparseGPT's N:M loop as published, plainly: no blocks, no lazy updates, float64.

    ``U`` is the upper Cholesky factor of ``(H + λI)⁻¹``. Column ``j`` in order: when ``j``
    starts a group of ``m``, each row prunes the ``m − n`` lowest ``w² / U_jj²`` of the group
    on the weights as they are now; then ``err = (w_j − q_j) / U_jj`` and
    ``W[:, j:] −= err · U[j, j:]``.
    """
    W = W.double().clone()
    rows, cols = W.shape
    Hd = H.double() + damp * torch.diag(H).double().mean() * torch.eye(cols, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.linalg.inv(Hd), upper=True)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for j in range(cols):
        if j % m == 0:
            for r in range(rows):
                scores = [float(W[r, j + t] ** 2 / U[j + t, j + t] ** 2) for t in range(m)]
                for t in sorted(range(m), key=lambda t: scores[t])[: m - n]:
                    mask[r, j + t] = True
        q = W[:, j].masked_fill(mask[:, j], 0.0)
        err = (W[:, j] - q) / U[j, j]
        W[:, j:] -= err.unsqueeze(1) * U[j, j:].unsqueeze(0)
        W[:, j] = q
    return W, mask


@pytest.mark.parametrize(
    "n,m,blocksize,seed", [(2, 4, 16, 0), (2, 4, 128, 1), (4, 8, 16, 2), (4, 8, 8, 3), (1, 4, 12, 4), (3, 5, 20, 5)]
)
def test_sparsegpt_nm_equals_published_loop(n: int, m: int, blocksize: int, seed: int) -> None:
    """Masks and weights equal the plain published loop (group chosen in the loop, on updated weights)."""
    W, _, H = _problem(rows=12, cols=40, seed=seed)
    ref, ref_mask = _published_sparsegpt_nm(W, H, n, m)
    out = sparsegpt_prune(W.float(), H.float(), Sparsity(n=n, m=m), blocksize=blocksize).double()
    assert torch.equal(out == 0, ref_mask)
    assert torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(W.abs().max()))


def test_masks_exact_under_ties() -> None:
    scores = torch.ones(4, 12)  # all tied: a threshold rule would prune everything
    assert row_mask(scores, 0.5).sum(1).tolist() == [6, 6, 6, 6]
    assert int(layer_mask(scores, 0.25).sum()) == 12
    nm = nm_mask(scores, 2, 4)
    assert nm.reshape(4, 3, 4).sum(-1).eq(2).all()


@pytest.mark.parametrize("seed", range(6))
def test_lowest_selection_equals_a_stable_sort(seed: int) -> None:
    """The linear-time selection picks exactly the first k of a stable argsort: many
    ties (dequantized weights), infinities, NaN (ordered last), every k from 0 to all."""
    from llmprune.solvers.masks import _lowest

    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4 if seed % 2 else 1000, (3, 5, 17), generator=g).float()
    if seed == 4:
        scores[0, 0, :3] = float("inf")
        scores[1, 2, 5] = -float("inf")
    if seed == 5:
        scores[2, 1, [0, 7]] = float("nan")
    for k in range(scores.shape[-1] + 2):
        ref = torch.zeros_like(scores, dtype=torch.bool)
        idx = torch.argsort(scores, dim=-1, stable=True)[..., : max(k, 0)]
        ref.scatter_(-1, idx, True)
        assert torch.equal(_lowest(scores, k), ref), k


def test_row_mask_picks_lowest() -> None:
    scores = torch.tensor([[5.0, 1.0, 3.0, 2.0], [0.0, 9.0, 8.0, 7.0]])
    assert row_mask(scores, 0.5).tolist() == [[False, True, False, True], [True, False, False, True]]


def test_nm_mask_rejects_indivisible_columns() -> None:
    with pytest.raises(LlmpruneError, match="M=4"):
        nm_mask(torch.ones(2, 6), 2, 4)


def test_input_stats_match_explicit_products() -> None:
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(1, 7, 5, generator=g) for _ in range(3)]
    acc = InputStats(5, hessian=True, dtype=torch.float64)
    for b in batches:
        acc.add(b)
    X = torch.cat([b.reshape(-1, 5) for b in batches]).double()
    assert torch.allclose(acc.hessian, 2 * X.T @ X / X.shape[0])
    assert torch.allclose(acc.column_norms().double(), (X.pow(2).sum(0) / X.shape[0]).sqrt(), atol=1e-6)


def test_input_stats_nan_is_a_clear_error() -> None:
    acc = InputStats(3, hessian=True)
    acc.add(torch.tensor([[float("nan"), 1.0, 2.0]]))
    with pytest.raises(LlmpruneError, match="NaN"):
        acc.check_finite("block0.q")


@pytest.mark.parametrize(
    "kwargs,msg",
    [
        ({"ratio": "1.5"}, "outside"),
        ({"ratio": "-0.1"}, "outside"),
        ({"ratio": "abc"}, "not a number"),
        ({"pattern": "4:2"}, "invalid"),
        ({"pattern": "2-4"}, "not N:M"),
        ({"pattern": "0:4"}, "invalid"),
        ({}, "exactly one"),
    ],
)
def test_sparsity_parse_errors(kwargs: dict, msg: str) -> None:
    with pytest.raises(LlmpruneError, match=msg):
        Sparsity.parse(**kwargs)


def test_sparsity_parse_ok() -> None:
    assert Sparsity.parse(pattern="2:4").fraction == 0.5
    assert Sparsity.parse(ratio="0.7").ratio == 0.7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_obs_singletons_follow_brute_force_greedy(seed: int) -> None:
    """The low-rank singleton path: every pick is the column whose removal (with the ones
    already removed) leaves the smallest least-squares error, and the final weights are
    the least-squares fit on the kept columns."""
    from llmprune.solvers.group_obs import greedy_group_obs

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(10, 60, generator=g, dtype=torch.float64)
    X = X + 0.5 * torch.randn(1, 60, generator=g, dtype=torch.float64)  # correlated inputs
    W = torch.randn(4, 10, generator=g, dtype=torch.float64)
    removed, W_new = greedy_group_obs(W, X @ X.T, [[c] for c in range(10)], 6, damp=0.0)

    def fit(gone):
        keep = [c for c in range(10) if c not in gone]
        V = torch.linalg.lstsq(X[keep].T, (W @ X).T).solution.T
        return keep, V, float(((W @ X - V @ X[keep]) ** 2).sum())

    gone: list[int] = []
    for _ in range(6):
        gone.append(min((c for c in range(10) if c not in gone), key=lambda c: fit(gone + [c])[2]))
    assert removed == gone
    keep, V, _ = fit(gone)
    torch.testing.assert_close(W_new[:, keep].double(), V, rtol=1e-4, atol=1e-5)
    assert W_new[:, gone].abs().max() == 0
    ranked, W_same = greedy_group_obs(W, X @ X.T, [[c] for c in range(10)], 6, damp=0.0, update=False)
    Hinv = torch.linalg.inv(X @ X.T)
    assert ranked == torch.argsort(W.pow(2).sum(0) / Hinv.diagonal())[:6].tolist()
    assert torch.equal(
        W_same[:, [c for c in range(10) if c not in ranked]], W.float()[:, [c for c in range(10) if c not in ranked]]
    )
