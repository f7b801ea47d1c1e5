"""Masked least squares by batched preconditioned conjugate gradients (MRP's fast path).

For every row ``w`` of ``W`` with kept set ``K`` (the complement of its pruned set),
MRP's joint optimum (Zhao et al. 2024, Eq. 8) is the least-squares solution
``v = argmin (w − v) H (w − v)ᵀ`` with ``v`` zero outside ``K``, i.e. ``v_K H_KK = (w H)_K``.
Instead of factorising one ``|K| × |K|`` system per row (``O(rows · n³)``), all rows run
conjugate gradients together (Hestenes & Stiefel 1952): each iteration is one product
``P H`` over the whole matrix, masked to ``K``; a row is done when its preconditioned
residual (about its excess error over the optimum) is below ``TOL`` times its error. The preconditioner is ``H⁻¹`` masked to
``K`` (a second product): for ``K`` = everything it is exact; from the selection sweep's
weights, 6-9 iterations reach the float32 tolerance on SmolLM2's layer shapes
(docs/faithfulness.md). The iterate is float64, the products run in ``dtype``, and
every tenth residual is recomputed from the iterate
(the residual recurrence itself runs in ``dtype``).
"""

from __future__ import annotations

import torch

#: stop when every row's preconditioned residual ``rᵀ M⁻¹ r`` (about the row's excess error
#: over the optimum) is below this fraction of the row's error ``(w − v) H (w − v)ᵀ``: in
#: float32 an excess of at most 0.1 % of each row's error (MRP's margin over SparseGPT is
#: 15-35 %; docs/faithfulness.md), in float64 the solution to rounding
TOL = {torch.float32: 1e-3, torch.float64: 1e-20}
#: iteration cap (CG on an ``n``-dimensional system converges in ``n`` steps in exact arithmetic)
MAX_ITER = {torch.float32: 100, torch.float64: 500}
#: recompute the residual in float64 every this many iterations
REPLACE_EVERY = 10


def masked_lstsq_pcg(
    W: torch.Tensor,
    H: torch.Tensor,
    Hinv: torch.Tensor,
    keep: torch.Tensor,
    start: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    tol: float | None = None,
    max_iter: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Per row ``v = argmin (w − v) H (w − v)ᵀ`` over ``v`` zero where ``keep`` is False.

    ``H`` is the (dampened, SPD) Hessian and ``Hinv`` its inverse; ``start`` a first guess
    (default ``W`` masked). Returns the float64 solution (exact zeros off ``keep``) and
    the number of iterations run.
    """
    tol = TOL[dtype] if tol is None else tol
    max_iter = min(MAX_ITER[dtype] if max_iter is None else max_iter, W.shape[1])
    Wd, Hd = W.double(), H.double()
    Kd = keep.to(W.device, torch.float64)
    K = Kd.to(dtype)
    Hw, Hiw = Hd.to(dtype), Hinv.to(W.device, dtype)
    x = (Wd if start is None else start.double()) * Kd

    def residual() -> tuple[torch.Tensor, torch.Tensor]:
        """Masked residual and, as the stopping scale, each row's error (float64; the
        product in ``dtype``, which float32's tolerance allows)."""
        D = Wd - x
        G = D @ Hd if dtype == torch.float64 else (D.to(dtype) @ Hw).double()
        return G * Kd, tol * (G * D).sum(1)

    r, limit = residual()
    r = r.to(dtype)  # the recurrence runs in ``dtype``; the iterate stays float64
    z = torch.mm(r, Hiw).mul_(K)
    p = z.clone()
    rz = (r * z).sum(1)
    tiny = torch.finfo(dtype).tiny
    it = 0
    while it < max_iter and bool((rz > limit).any()):
        it += 1
        Ap = torch.mm(p, Hw).mul_(K)
        pAp = (p * Ap).sum(1)
        a = torch.where(pAp > 0, rz / pAp.clamp_min(tiny), torch.zeros_like(rz)).unsqueeze(1)
        x += (p * a).double()
        if it % REPLACE_EVERY == 0:
            r64, limit = residual()
            r = r64.to(dtype)
        else:
            r.sub_(Ap.mul_(a))
        z = torch.mm(r, Hiw).mul_(K)
        rz_new = (r * z).sum(1)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(tiny), torch.zeros_like(rz)).unsqueeze(1)
        p = p.mul_(beta).add_(z)
        rz = rz_new
    return x * Kd, it
