"""Structured OBS: remove whole column groups of an output projection, greedily, with the
optimal update of the remaining columns (ZipLM-style; used by SoBP's stage 2).

For ``W`` (d_out × n) whose input has ``H = XXᵀ`` (dampened), removing the column set
``Q`` costs ``½ tr(W_:,Q [(H⁻¹)_QQ]⁻¹ W_:,Qᵀ)`` and the optimal update of the other
columns is ``δW = −W_:,Q [(H⁻¹)_QQ]⁻¹ (H⁻¹)_Q,:`` (Kurtic et al., ZipLM, NeurIPS 2023,
Eqs. 3-4; the group form of Hassibi & Stork's OBS). After each removal ``H⁻¹`` is
downdated, ``H⁻¹ ← H⁻¹ − H⁻¹_:,Q [(H⁻¹)_QQ]⁻¹ H⁻¹_Q,:``, so successive removals stay
exact: the final weights equal the least-squares optimum for the final removed set.
Singleton groups (MLP channels) take a low-rank path (:func:`_greedy_singletons`): the
downdated ``H⁻¹`` is kept as ``H⁻¹₀ − V Vᵀ`` (one column of ``V`` per removal), so a
removal costs ``O(n·k + d_out·n)`` instead of a dense ``n × n`` downdate.
"""

from __future__ import annotations

import torch

from .obs import dampen


def greedy_group_obs(
    W: torch.Tensor, H: torch.Tensor, groups: list[list[int]], n_remove: int, damp: float = 0.01, update: bool = True
) -> tuple[list[int], torch.Tensor]:
    """Remove ``n_remove`` of ``groups`` (lists of column indices) greedily by OBS cost.

    Returns the removed group indices (in removal order) and the updated weights
    (float32, removed columns exactly zero). ``update=False`` only ranks (no weight
    update, ``H⁻¹`` unchanged): the cheapest groups by their initial cost.
    """
    Wd = W.detach().double().clone()
    Hinv = torch.linalg.inv(dampen(H.double(), damp))
    alive = list(range(len(groups)))
    removed: list[int] = []
    steps = min(n_remove, len(groups))
    if all(len(g) == 1 for g in groups):
        cols = torch.tensor([g[0] for g in groups], dtype=torch.long, device=Wd.device)
        removed = _greedy_singletons(Wd, Hinv, cols, steps, update)
        steps = 0
    for _ in range(steps):
        costs = []
        for gi in alive:
            q = torch.tensor(groups[gi], dtype=torch.long)
            inv_qq = torch.linalg.inv(Hinv[q][:, q])
            wq = Wd[:, q]
            costs.append(0.5 * torch.einsum("ij,jk,ik->", wq, inv_qq, wq))
        best = alive[int(torch.argmin(torch.stack(costs)))]
        removed.append(best)
        alive.remove(best)
        if update:
            q = torch.tensor(groups[best], dtype=torch.long)
            inv_qq = torch.linalg.inv(Hinv[q][:, q])
            Wd -= Wd[:, q] @ inv_qq @ Hinv[q, :]
            Hinv -= Hinv[:, q] @ inv_qq @ Hinv[q, :]
    for gi in removed:  # later updates leave rounding residue on earlier removed columns
        Wd[:, torch.tensor(groups[gi], dtype=torch.long)] = 0
    return removed, Wd.float()


def _greedy_singletons(
    Wd: torch.Tensor, Hinv: torch.Tensor, cols: torch.Tensor, n_remove: int, update: bool
) -> list[int]:
    """Greedy OBS over single columns ``cols``, updating ``Wd`` (float64) in place.

    Removing column ``c`` costs ``½‖W_:,c‖² / [H⁻¹]_cc`` with the current weights and
    downdated ``H⁻¹``; the removal updates ``W ← W − W_:,c h_cᵀ / h_c`` with ``h = H⁻¹_:,c``
    and downdates ``H⁻¹ ← H⁻¹ − h hᵀ / h_c``. The downdate is kept as ``H⁻¹₀ − V Vᵀ``
    (``v = h / √h_c``): the current column is ``H⁻¹₀_:,c − V V_c,:ᵀ`` and the diagonal is
    maintained by ``−v²``, the same arithmetic as the dense downdate. Ties: lowest index.
    """
    n = Hinv.shape[0]
    diag = Hinv.diagonal()[cols].clone()
    dead = torch.zeros(cols.numel(), dtype=torch.bool, device=Wd.device)
    V = Hinv.new_zeros(n, n_remove) if update else None
    removed: list[int] = []
    every = cols.numel() == Wd.shape[1] and bool((cols == torch.arange(cols.numel(), device=cols.device)).all())
    for k in range(n_remove):
        sq = torch.linalg.vector_norm(Wd if every else Wd[:, cols], dim=0).square()
        cost = 0.5 * sq / diag
        cost[dead] = float("inf")
        best = int(torch.argmin(cost))
        removed.append(best)
        dead[best] = True
        if V is not None:  # update
            c = int(cols[best])
            h = Hinv[:, c] - V[:, :k] @ V[c, :k]
            Wd.addr_(Wd[:, c] / h[c], h, alpha=-1.0)  # in place, no rows × n temporary
            v = h / h[c].sqrt()
            V[:, k] = v
            diag -= v[cols].square()
    return removed


def least_squares_refit(
    YZ: torch.Tensor, ZZ: torch.Tensor, damp: float = 0.01, prior: torch.Tensor | None = None
) -> torch.Tensor:
    """``argmin_W ‖Y − W Z‖² + λ‖W − W₀‖²`` from the accumulated ``Y Zᵀ`` and ``Z Zᵀ``:
    ``W = (Y Zᵀ + λ W₀)(Z Zᵀ + λI)⁻¹`` with ``λ = damp · mean(diag(ZZᵀ))`` (SoBP stage 3).

    ``prior`` is ``W₀``; ``None`` means zero (plain ridge). Ridge towards zero shrinks
    every weakly excited input direction to zero; towards the current weights it only
    limits how far the refit moves them, as the dampening of an OBS update does.
    """
    ZZ = ZZ.double()
    A = dampen(ZZ, damp)
    rhs = YZ.double()
    if prior is not None:
        rhs = rhs + prior.double() * (A.diagonal() - ZZ.diagonal())[None, :]  # λ per input (dead inputs: 1 + λ)
    L = torch.linalg.cholesky(A)
    return torch.cholesky_solve(rhs.T, L).T.float()


def heldout_refit(
    folds: list[dict], damps: tuple[float, ...], prior: torch.Tensor, refit_prior: torch.Tensor | None
) -> tuple[float | None, dict]:
    """Choose the stage-3 dampening by two-fold cross-validation on calibration samples.

    ``folds[f]`` holds one fold's sums ``YZ`` (Y Zᵀ), ``ZZ`` (Z Zᵀ), ``YY`` (‖Y‖²) and ``n``.
    For every ``damp`` the refit (:func:`least_squares_refit`, ridge towards
    ``refit_prior``) is fitted on one fold and scored on the other,
    ``‖Y_v − W Z_v‖² = YY_v − 2⟨W, YZ_v⟩ + ⟨W ZZ_v, W⟩``; the candidate ``None`` keeps the
    current weights ``prior`` (no refit). Returns the damp with the lowest summed held-out
    error (``None``: keep) and every candidate's error relative to keeping.
    """

    def err(W: torch.Tensor, f: dict) -> float:
        W = W.double()
        return float(f["YY"] - 2 * (W * f["YZ"].double()).sum() + ((W @ f["ZZ"].double()) * W).sum())

    errors: dict = {"keep": sum(err(prior, f) for f in folds)}
    for damp in damps:
        total = 0.0
        for t in range(2):
            fit, val = folds[t], folds[1 - t]
            W = least_squares_refit(fit["YZ"] / fit["n"], fit["ZZ"] / fit["n"], damp, prior=refit_prior)
            total += err(W, val)
        errors[damp] = total
    best = min(errors, key=lambda k: errors[k])
    base = errors["keep"] if errors["keep"] > 0 else 1.0
    return (None if best == "keep" else best), {str(k): v / base for k, v in errors.items()}
