"""MRP: the exact multiple removal problem (Zhao et al., "Pruning Foundation Models for
High Accuracy without Retraining", Findings of EMNLP 2024, §3).

For one output row ``w`` (1 × n) of a linear layer with Hessian ``H = 2XXᵀ + λI`` and a
set ``P`` of ``q`` weights to remove, the paper solves

    min_δw ½ δw H δwᵀ   s.t.  δw E_P = −w_P                     (MRP, Eq. 6)
    δw* = −w_P (E_Pᵀ H⁻¹ E_P)⁻¹ E_Pᵀ H⁻¹                          (Eq. 8)
    L*  = ½ w_P (E_Pᵀ H⁻¹ E_P)⁻¹ w_Pᵀ                             (Eq. 9)

so every remaining weight of the row moves (SparseGPT only moves weights to the right of
the current column). ``q = 1`` is OBS (Hassibi & Stork 1993). The constrained optimum is
the least-squares solution ``min ‖(w − v)X‖²`` over ``v`` with ``v_P = 0``, i.e. the kept
weights ``K`` solve ``v_K H_KK = (w H)_K``; both forms give the same vector (the Schur
complement identity ``((H⁻¹)_PP)⁻¹ = H_PP − H_PK H_KK⁻¹ H_KP``), and :func:`mrp_update`
solves whichever system is smaller (``q × q`` with ``H⁻¹`` or ``(n−q) × (n−q)`` with
``H``), so 70 % sparsity costs a 0.3 n system, not a 0.7 n one. This is our departure
for speed; the result is the paper's ``δw*`` to rounding.

Mask selection (the paper follows SparseGPT's column blocks; the details below are ours):

* unstructured — sweep the columns left to right in blocks of ``blocksize``. At block
  ``B = [i1, i2)`` the columns left of ``i1`` are frozen (as in SparseGPT) and the free
  sub-problem has inverse Hessian ``G = (H_FF)⁻¹ = U_FFᵀ U_FF`` for ``F = [i1, n)``,
  ``U`` the upper Cholesky factor of ``H⁻¹``. The block prunes its exact share of the
  layer count (cumulative rounding of ``ratio · rows · cols``, :func:`count_mask`, never
  a threshold) by the OBS saliency ``w_j² / [H⁻¹]_jj`` of the *current* weights, with
  SparseGPT's sequential inverse-Hessian diagonal ``[H⁻¹]_jj := U_jj²`` (on random
  correlated layers it gave lower final errors than the global ``diag(H⁻¹)`` or the
  block's ``diag(G)``), then applies the joint MRP update of the block's pruned set
  within ``F`` (Eq. 8 with ``G``; it reduces to ``δW_F = −(Z U_BBᵀ) U_B,F`` with ``Z``
  the per-row ``(G_PP)⁻¹ w_P``, solved for all rows at once by conjugate gradients,
  :func:`block_cg`), so the next block is scored on updated weights.
* N:M — the same sweep one group of ``M`` columns at a time (the group is the block):
  every row evaluates all ``C(M, M−N)`` prune patterns by ``L*`` (Eq. 9) with the
  group's ``G`` sub-block (``(H⁻¹)_gg`` for the first group), takes the smallest
  (first in lexicographic order on ties), and applies the joint update before scoring
  the next group. Groups are sequential rather than all at once so that each choice
  sees the previous groups' compensation, as SparseGPT's N:M does.

The sweep only chooses the mask. The returned weights are the joint MRP solution for the
final mask from the *original* weights, every remaining weight of each row updated: by
default (``solver="pcg"``) by batched preconditioned conjugate gradients started from the
sweep's weights (:mod:`llmprune.solvers.pcg`; in float32 each row's error is within
0.1 % of the exact solution's), with ``solver="exact"`` by one factorisation per row
(:func:`mrp_update`, and the sweep's block updates by :func:`solve_on_sets`).
"""

from __future__ import annotations

import itertools

import torch

from ..errors import LlmpruneError
from .masks import count_mask
from .obs import dampen
from .pcg import masked_lstsq_pcg
from .sparsity import Sparsity

#: Bytes of gathered sub-matrices one batched solve may hold (rows × s × s floats).
CHUNK_BYTES = 1 << 28
#: Column block of the batched blocked Cholesky (see :func:`_factor`).
CHOL_BLOCK = 64
#: Float32 factorisations: at most this many float64 refinement steps, stopping once the
#: largest residual is below ``REFINE_TOL`` times the largest right-hand side.
REFINE_STEPS = 3
REFINE_TOL = 1e-12


def _factor(A: torch.Tensor, block: int = CHOL_BLOCK) -> torch.Tensor:
    """Blocked right-looking Cholesky ``A = L Lᵀ`` of a batch of SPD matrices, in place.

    Reads and writes only the lower triangle of ``A`` (R × s × s): on return it holds
    ``L``; what lies above the diagonal is left as it was (any values). Returns ``ok``
    (R,), False where a factorisation failed. Every flop outside the ``block × block``
    diagonal factorisations is a batched matrix product, which — unlike
    ``torch.linalg.cholesky`` on a CPU, one LAPACK call per matrix — runs at
    matrix-product speed and parallelises over the batch.
    """
    R, s, _ = A.shape
    ok = torch.ones(R, dtype=torch.bool, device=A.device)
    eye = torch.eye(min(block, s), dtype=A.dtype, device=A.device)
    for k0 in range(0, s, block):
        k1 = min(k0 + block, s)
        Lkk, info = torch.linalg.cholesky_ex(A[:, k0:k1, k0:k1])
        ok &= info == 0
        A[:, k0:k1, k0:k1] = Lkk
        if k1 < s:
            Linv = torch.linalg.solve_triangular(Lkk, eye[: k1 - k0, : k1 - k0].expand(R, -1, -1), upper=False)
            L21 = A[:, k1:, k0:k1] @ Linv.transpose(1, 2)
            A[:, k1:, k0:k1] = L21
            for j0 in range(k1, s, block):  # trailing update, lower block columns only
                j1 = min(j0 + block, s)
                A[:, j0:, j0:j1].baddbmm_(L21[:, j0 - k1 :], L21[:, j0 - k1 : j1 - k1].transpose(1, 2), alpha=-1)
    return ok


def _substitute(L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``L Lᵀ x = b`` (b: R × s) with the lower factor left by :func:`_factor`."""
    y = torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False)
    x: torch.Tensor = torch.linalg.solve_triangular(L.transpose(1, 2), y, upper=True)
    return x.squeeze(-1)


def _buckets(sizes: torch.Tensor, pad_frac: float, pad_min: int) -> list[tuple[int, torch.Tensor]]:
    """Rows with a non-empty set, largest first, in buckets ``(S, rows)`` whose sizes lie
    in ``[S − max(pad_min, pad_frac · S), S]`` (each is padded to ``S``)."""
    sorted_sizes, order = torch.sort(sizes, descending=True, stable=True)
    sorted_list = sorted_sizes.tolist()
    out = []
    i, total = 0, len(sorted_list)
    while i < total and sorted_list[i] > 0:
        S = sorted_list[i]
        lo = S - max(pad_min, int(pad_frac * S))
        j = i
        while j < total and sorted_list[j] >= max(lo, 1):
            j += 1
        out.append((S, order[i:j]))
        i = j
    return out


def solve_on_sets(
    M: torch.Tensor,
    rhs: torch.Tensor,
    sets: torch.Tensor,
    dtype: torch.dtype = torch.float64,
    chunk_bytes: int = CHUNK_BYTES,
    pad_frac: float = 0.05,
    pad_min: int = 8,
) -> torch.Tensor:
    """For each row ``r``: ``x_S = (M_SS)⁻¹ rhs_r,S`` on its set ``S = sets[r]``.

    ``M`` is a shared SPD matrix (n × n), ``rhs`` and ``sets`` are rows × n (``sets``
    boolean). Returns ``X`` (rows × n, float64) with ``x_S`` scattered into place and zeros
    elsewhere.

    Rows are grouped by ``|S|`` into buckets of nearly equal sizes (at most
    ``max(pad_min, pad_frac · |S|)`` apart, padding costs at most ~16 % more flops); each
    row's system is padded to its bucket's size with identity rows and zero right-hand
    sides, which leave ``x_S`` unchanged. A bucket's sub-matrices are gathered in chunks
    of at most ``chunk_bytes`` (lower block columns only: the factorisation reads no
    more) and solved with one batched blocked Cholesky (:func:`_factor`) in ``dtype``.
    With ``dtype`` float32, iterative refinement follows (at most ``REFINE_STEPS``), its
    float64 residuals computed from ``M`` by one matrix product each, so the solutions
    reach float64 accuracy for any well-posed system. A sub-system whose factorisation
    fails falls back to an LU solve in float64. Cost ``O(Σ_r |S_r|³)`` flops, memory
    ``O(n² + chunk_bytes)``.
    """
    rows, n = rhs.shape
    rhs = rhs.double()
    out = torch.zeros_like(rhs)
    sizes = sets.sum(1)
    buckets = _buckets(sizes, pad_frac, pad_min)
    if not buckets:
        return out
    pad = max(S - int(sizes[members].min()) for S, members in buckets)
    # M with an identity block appended: padding slot k of a row is column n + k
    M64 = torch.block_diag(M.double(), torch.eye(pad, dtype=torch.float64, device=M.device))
    Mf = M64 if dtype == torch.float64 else M64.to(dtype)
    ext = torch.arange(pad, device=M.device).unsqueeze(0)
    per_elem = torch.finfo(dtype).bits // 8
    block = CHOL_BLOCK
    for S, members in buckets:
        chunk = max(1, chunk_bytes // (S * S * per_elem))
        for c0 in range(0, members.numel(), chunk):
            r = members[c0 : c0 + chunk]
            R = r.numel()
            flags = torch.cat([sets[r], ext < (S - sizes[r]).unsqueeze(1)], dim=1)
            # the set's columns (ascending), then its padding slots
            idx = torch.argsort((~flags).to(torch.int8), dim=1, stable=True)[:, :S]
            b = torch.cat([rhs[r], rhs.new_zeros(R, pad)], dim=1).gather(1, idx)
            A = torch.empty(R, S, S, dtype=dtype, device=M.device)  # upper blocks never read
            for k0 in range(0, S, block):
                k1 = min(k0 + block, S)
                A[:, k0:, k0:k1] = Mf[idx[:, k0:].unsqueeze(2), idx[:, k0:k1].unsqueeze(1)]
            ok = _factor(A, block)
            x = _substitute(A, b.to(dtype)).double()
            if dtype != torch.float64:  # iterative refinement with float64 residuals
                for _ in range(REFINE_STEPS):
                    X = torch.zeros(R, n + pad, dtype=torch.float64, device=M.device).scatter_(1, idx, x)
                    resid = b - (X @ M64).gather(1, idx)
                    if float(resid.abs().max()) <= REFINE_TOL * float(b.abs().max()):
                        break
                    x += _substitute(A, resid.to(dtype)).double()
            if not bool(ok.all()):
                bad = (~ok).nonzero().flatten()
                ib = idx[bad]
                try:
                    x[bad] = torch.linalg.solve(M64[ib.unsqueeze(2), ib.unsqueeze(1)], b[bad])
                except torch.linalg.LinAlgError:
                    raise LlmpruneError(
                        "an MRP sub-system of the calibration Hessian is singular: raise the dampening "
                        "(--damp 0.1) or use more calibration samples"
                    ) from None
            X = torch.zeros(R, n + pad, dtype=torch.float64, device=M.device).scatter_(1, idx, x)
            out[r] = X[:, :n]
    return out


def mrp_update(
    W: torch.Tensor,
    Hinv: torch.Tensor,
    mask: torch.Tensor,
    H: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    chunk_bytes: int = CHUNK_BYTES,
) -> torch.Tensor:
    """The joint optimal update of every row for a fixed mask (True = prune), Eq. 8.

    Row ``r`` with pruned set ``P`` (``q = |P|``) becomes ``w + δw*`` with
    ``δw* = −w_P ((H⁻¹)_PP)⁻¹ (H⁻¹)_P,:``; its pruned entries are exactly 0 and rows
    with ``q = 0`` are returned unchanged. When ``H`` (the dampened Hessian, ``Hinv``'s
    inverse) is given, rows with ``q > n/2`` solve the equivalent kept-set system
    ``v_K H_KK = (w H)_K`` instead (same solution, smaller system).

    Rows are grouped by ``q`` (:func:`solve_on_sets`). Everything runs in float64 except
    the batched factorisations, which run in ``dtype``: float64 by default; float32 is
    about 1.5× faster on a CPU and is refined with float64 residuals to the same result
    (~1e-12 relative on SmolLM2 layers).

    Complexity: ``O(Σ_rows min(q, n−q)³ + rows · n²)`` flops — the batched factorisations
    plus one ``rows × n × n`` product that spreads the solutions over the row (the
    paper's ``O(Σ_rows q³ + rows · q · n)`` with the products done densely); memory
    ``O(n² + rows · n + chunk_bytes)``.
    """
    rows, n = W.shape
    if mask.shape != W.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(W.shape)}")
    mask = mask.to(W.device, torch.bool)
    Wd = W.double()
    out = Wd.clone()
    q = mask.sum(1)
    use_kept = (q > n - q) if H is not None else torch.zeros_like(q, dtype=torch.bool)
    prune_rows = ((q > 0) & ~use_kept).nonzero().flatten()
    kept_rows = use_kept.nonzero().flatten()
    if prune_rows.numel():
        Hi = Hinv.to(W.device, torch.float64)
        Z = solve_on_sets(Hi, Wd[prune_rows], mask[prune_rows], dtype, chunk_bytes)
        out[prune_rows] -= Z @ Hi
    if kept_rows.numel():
        assert H is not None  # rows solved on their kept set only when H is given
        Hk = H.to(W.device, torch.float64)
        rhs = Wd[kept_rows] @ Hk
        out[kept_rows] = solve_on_sets(Hk, rhs, ~mask[kept_rows], dtype, chunk_bytes)
    out[mask] = 0.0
    return out.to(W.dtype)


def mrp_loss(w: torch.Tensor, Hinv: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """``L* = ½ w_P ((H⁻¹)_PP)⁻¹ w_Pᵀ`` (Eq. 9) for one row ``w`` and index set ``pruned``."""
    wp = w[pruned]
    loss: torch.Tensor = 0.5 * wp @ torch.linalg.solve(Hinv[pruned][:, pruned], wp)
    return loss


def nm_patterns(n: int, m: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Every way to prune ``m − n`` of ``m`` columns, lexicographic (C × (m − n))."""
    return torch.tensor(list(itertools.combinations(range(m), m - n)), dtype=torch.long, device=device)


def _inverse_and_factor(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``H⁻¹`` and its upper Cholesky factor ``U`` (``H⁻¹ = Uᵀ U``), float64."""
    try:
        L = torch.linalg.cholesky(H.double())
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True)
    except torch.linalg.LinAlgError:
        raise LlmpruneError(
            "the calibration Hessian is not positive definite: raise the dampening (--damp 0.1) "
            "or use more calibration samples"
        ) from None
    return Hinv, U


#: the block-local joint updates of the unstructured sweep by conjugate gradients: stop when
#: every row's residual ``rᵀ D⁻¹ r`` is below this fraction of its first one, or after
#: ``BLOCK_CG_MAX`` iterations (the sweep only chooses the mask; the final solve is exact
#: to ``pcg.TOL``)
BLOCK_CG_TOL = {torch.float32: 1e-8, torch.float64: 1e-24}
BLOCK_CG_MAX = {torch.float32: 16, torch.float64: 256}


def block_cg(G: torch.Tensor, B: torch.Tensor, sets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """For each row ``r``: ``z_S = (G_SS)⁻¹ b_r,S`` on its set ``S = sets[r]`` (zeros
    elsewhere), by Jacobi-preconditioned conjugate gradients on all rows at once
    (Hestenes & Stiefel 1952); ``G`` is a small SPD matrix (a sweep block's inverse
    Hessian). Each iteration is one ``rows × s × s`` product instead of one factorisation
    per row (:func:`solve_on_sets`), which on a CPU is dominated by per-row overheads."""
    Gd = G.to(dtype)
    P = sets.to(dtype)
    dinv = (1.0 / torch.diag(Gd)).unsqueeze(0) * P
    x = torch.zeros(B.shape, dtype=dtype, device=B.device)
    r = B.to(dtype) * P
    z = r * dinv
    p = z.clone()
    rz = (r * z).sum(1)
    stop = BLOCK_CG_TOL[dtype] * rz
    tiny = torch.finfo(dtype).tiny
    for _ in range(min(BLOCK_CG_MAX[dtype], G.shape[0])):
        if not bool((rz > stop).any()):
            break
        Ap = (p @ Gd) * P
        pAp = (p * Ap).sum(1)
        a = torch.where(pAp > 0, rz / pAp.clamp_min(tiny), torch.zeros_like(rz))
        x += a.unsqueeze(1) * p
        r -= a.unsqueeze(1) * Ap
        z = r * dinv
        rz_new = (r * z).sum(1)
        p = z + torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz)).unsqueeze(1) * p
        rz = rz_new
    return x


def _select_unstructured(
    W: torch.Tensor, U: torch.Tensor, ratio: float, blocksize: int, dtype: torch.dtype, exact: bool = False
) -> torch.Tensor:
    """Adaptive unstructured mask: blocks left to right, exact count per block, saliency
    ``w² / U_jj²`` on the weights after the previous blocks' joint updates (module doc).
    The joint update of a block's pruned set is solved by :func:`block_cg` (``exact``: by
    one factorisation per row, :func:`solve_on_sets`)."""
    rows, cols = W.shape
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        k = round(ratio * rows * i2) - round(ratio * rows * i1)
        if k == 0:
            continue
        U1 = U[i1:i2, i1:i2]
        W1 = W[:, i1:i2]
        # OBS saliency w_j² / [H⁻¹]_jj with the sequential inverse Hessian [U]_jj² (SparseGPT's)
        mask1 = count_mask(W1.square() / torch.diag(U1).square().to(W.dtype).unsqueeze(0), k)
        mask[:, i1:i2] = mask1
        G = U1.T @ U1  # inverse Hessian of the block within the free columns [i1, n)
        Z = solve_on_sets(G, W1, mask1, dtype) if exact else block_cg(G, W1, mask1, dtype).double()
        E = (Z @ U1.T).to(W.dtype)  # per-row error in the Cholesky basis
        W[:, i1:] -= E @ U[i1:i2, i1:].to(W.dtype)
        W[:, i1:i2][mask1] = 0.0
    return mask


def _select_nm(W: torch.Tensor, U: torch.Tensor, n: int, m: int, blocksize: int) -> torch.Tensor:
    """Adaptive N:M mask: groups of ``m`` left to right, the ``L*``-best of all patterns
    per row with the group's ``G`` sub-block, joint update before the next group.

    Updates inside a block of ``blocksize`` columns are applied at once, the rest of the
    matrix is updated lazily once per block (SparseGPT's §3.4 batching).
    """
    rows, cols = W.shape
    if cols % m:
        raise LlmpruneError(
            f"a layer with {cols} input columns cannot take an N:M pattern with M={m}: choose M dividing {cols}"
        )
    pats = nm_patterns(n, m, W.device)  # C × q
    groups = cols // m
    # the (H_FF)⁻¹ sub-block of every group g (F = columns from g on): U_ggᵀ U_gg
    Ug = torch.stack([U[g * m : (g + 1) * m, g * m : (g + 1) * m] for g in range(groups)])  # g × m × m
    Gg = Ug.transpose(1, 2) @ Ug
    Gp = Gg[:, pats.unsqueeze(2), pats.unsqueeze(1)]  # g × C × q × q
    Gp_inv = torch.linalg.inv(Gp)  # tiny systems, float64 inversion
    # each pattern's (G_pp)⁻¹ embedded in an m × m matrix A (zero outside the pattern): then
    # L* = ½ wᵀ A w is one product of the group's outer products w wᵀ with all patterns' A
    C = pats.shape[0]
    A = Gp_inv.new_zeros(groups, C, m, m)
    A[:, torch.arange(C, device=W.device)[:, None, None], pats.unsqueeze(2), pats.unsqueeze(1)] = Gp_inv
    A_flat = (0.5 * A).reshape(groups, C, m * m).transpose(1, 2).to(W.dtype)  # g × m² × C
    A = A.to(W.dtype)
    Ug = Ug.to(W.dtype)
    mask = torch.zeros_like(W, dtype=torch.bool)
    blocksize = max(m, (blocksize // m) * m)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2]
        U1 = U[i1:i2, i1:i2].to(W.dtype)
        Err1 = torch.zeros_like(W1)
        for c in range(0, i2 - i1, m):
            g = (i1 + c) // m
            w = W1[:, c : c + m]
            loss = (w.unsqueeze(2) * w.unsqueeze(1)).reshape(rows, m * m) @ A_flat[g]  # L* of every pattern
            best = torch.argmin(loss, dim=1)  # first minimum: lexicographic on ties
            Z = torch.bmm(A[g][best], w.unsqueeze(2)).squeeze(2)  # rows × m, zero off the pattern
            e = Z @ Ug[g].T  # rows × m: error in the Cholesky basis
            W1[:, c:] -= e @ U1[c : c + m, c:]
            Err1[:, c : c + m] = e
            gm = torch.zeros(rows, m, dtype=torch.bool, device=W.device)
            gm.scatter_(1, pats[best], True)
            mask[:, i1 + c : i1 + c + m] = gm
            W1[:, c : c + m][gm] = 0.0
        W[:, i2:] -= Err1 @ U[i1:i2, i2:].to(W.dtype)
    return mask


SOLVERS = ("pcg", "exact")


def mrp_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: Sparsity | None,
    blocksize: int = 128,
    damp: float = 0.01,
    mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    solver: str = "pcg",
    tol: float | None = None,
) -> torch.Tensor:
    """Prune ``W`` (rows × cols) with MRP; return the compensated copy.

    ``H`` is the calibration Hessian ``2XXᵀ`` (undampened; ``damp · mean(diag H)`` is
    added here). The mask is chosen adaptively (module docstring) unless ``mask`` (True =
    prune) is given, e.g. a Wanda or magnitude mask to compensate; ``sparsity`` is then
    ignored. Inputs that never fire (zero diagonal) get zero weights first, as in
    SparseGPT. ``dtype`` is the precision of the batched factorisations (float32 is
    refined to float64 accuracy, see :func:`solve_on_sets`). The result is float64
    for a float64 ``W``, else float32; pruned entries are exactly 0.

    ``solver`` computes the final joint update (Eq. 8) for the chosen mask: ``"pcg"``
    (default) by batched preconditioned conjugate gradients started from the selection
    sweep's weights (:mod:`llmprune.solvers.pcg`; ``dtype`` is then the precision of its
    matrix products), ``"exact"`` by one factorisation per row (:func:`mrp_update`).
    ``tol`` is the PCG stop (each row's excess error over the exact solution, as a fraction
    of its error; default :data:`llmprune.solvers.pcg.TOL` of ``dtype``): a looser stop
    trades part of MRP's error advantage for fewer ``rows × n × n`` iterations
    (docs/faithfulness.md).
    """
    if solver not in SOLVERS:
        raise LlmpruneError(f"MRP solver {solver!r} is not one of {', '.join(SOLVERS)}: pass solver='pcg'")
    out_dtype = torch.float64 if W.dtype == torch.float64 else torch.float32
    W = W.detach().to(out_dtype).clone()
    rows, cols = W.shape
    H = H.to(W.device, torch.float64)
    dead = torch.diag(H) == 0
    W[:, dead] = 0
    Hd = dampen(H, damp)
    Hinv, U = _inverse_and_factor(Hd)
    work = None
    if mask is None:
        if sparsity is None:
            raise ValueError("mrp_prune needs a sparsity or a mask")
        work = W.clone()
        if sparsity.is_nm:
            mask = _select_nm(work, U, *sparsity.nm, blocksize)
        else:
            mask = _select_unstructured(work, U, sparsity.fraction, blocksize, dtype, exact=solver == "exact")
    else:
        mask = mask.to(W.device, torch.bool)
    if solver == "exact":
        return mrp_update(W, Hinv, mask, H=Hd, dtype=dtype)
    out, _ = masked_lstsq_pcg(W, Hd, Hinv, ~mask, start=work, dtype=dtype, tol=tol)
    return out.to(out_dtype)
