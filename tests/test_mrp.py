"""MRP (Zhao et al., EMNLP Findings 2024) against brute force on tiny float64 problems,
plus the method, ``--update`` and the CLI end to end."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from llmprune.errors import LlmpruneError
from llmprune.solvers import Sparsity, sparsegpt_prune
from llmprune.solvers import mrp as mrp_mod
from llmprune.solvers.mrp import mrp_loss, mrp_prune, mrp_update, solve_on_sets
from llmprune.solvers.obs import dampen


def _problem(rows: int = 8, cols: int = 16, tokens: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    X = torch.randn(tokens, cols, generator=g, dtype=torch.float64) @ torch.randn(
        cols, cols, generator=g, dtype=torch.float64
    )
    return W, X  # X: tokens × cols, full column rank


def _mask(rows: int, cols: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, cols, generator=g) < 0.5
    mask[0] = False  # q = 0
    mask[1] = True
    mask[1, 3] = False  # q = n - 1 (the kept-set route)
    mask[2] = False
    mask[2, 5] = True  # q = 1
    return mask


def _lstsq(W: torch.Tensor, A: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Brute force per row: min ‖(w − v) Aᵀ‖² over v with v[mask] = 0 (A: tokens × cols)."""
    out = torch.zeros_like(W)
    for r in range(W.shape[0]):
        keep = (~mask[r]).nonzero().flatten()
        if keep.numel():
            target = (A @ W[r]).unsqueeze(1)
            out[r, keep] = torch.linalg.lstsq(A[:, keep], target).solution.squeeze(1)
    return out


def _err(W: torch.Tensor, V: torch.Tensor, X: torch.Tensor) -> float:
    return float(((W - V) @ X.T).pow(2).sum())


@pytest.mark.parametrize("with_h", [False, True])
def test_update_is_the_least_squares_optimum(with_h: bool) -> None:
    W, X = _problem()
    H = 2 * X.T @ X
    mask = _mask(*W.shape)
    out = mrp_update(W, torch.linalg.inv(H), mask, H=H if with_h else None)
    ref = _lstsq(W, X, mask)
    assert torch.allclose(out, ref, atol=1e-9, rtol=1e-9)
    assert out[mask].eq(0).all()
    assert torch.equal(out[0], W[0])  # q = 0: unchanged
    sgpt = sparsegpt_prune(W, H, None, damp=0.0, mask=mask).double()
    assert _err(W, out, X) <= _err(W, sgpt, X) * (1 + 1e-9)
    assert _err(W, out, X) < _err(W, sgpt, X)  # strictly better on this layer


def test_dampened_prune_matches_augmented_least_squares() -> None:
    """With damp > 0, H = 2XᵀX + λI: the same optimum as least squares on [√2·X; √λ·I]."""
    W, X = _problem(seed=3)
    H = 2 * X.T @ X
    mask = _mask(*W.shape, seed=4)
    damp = 0.05
    lam = damp * float(torch.diag(H).mean())
    A = torch.cat([2**0.5 * X, lam**0.5 * torch.eye(W.shape[1], dtype=W.dtype)])
    out = mrp_prune(W, H, None, damp=damp, mask=mask)
    assert out.dtype == torch.float64
    assert torch.allclose(out, _lstsq(W, A, mask), atol=1e-9, rtol=1e-9)
    sgpt = sparsegpt_prune(W, H, None, damp=damp, mask=mask).double()
    Hd = dampen(H, damp)
    loss = lambda V: float(torch.einsum("ri,ij,rj->", W - V, Hd, W - V))  # noqa: E731
    assert loss(out) <= loss(sgpt) * (1 + 1e-9)


def test_one_weight_is_obs() -> None:
    W, X = _problem(seed=5)
    Hinv = torch.linalg.inv(2 * X.T @ X)
    mask = torch.zeros_like(W, dtype=torch.bool)
    cols = torch.arange(W.shape[0]) % W.shape[1]
    mask[torch.arange(W.shape[0]), cols] = True
    out = mrp_update(W, Hinv, mask)
    for r, p in enumerate(cols.tolist()):
        obs = W[r] - W[r, p] / Hinv[p, p] * Hinv[p]  # Hassibi & Stork: δw = −w_p/[H⁻¹]_pp · H⁻¹_p,:
        assert torch.allclose(out[r], obs, atol=1e-10)


def test_loss_formula_equals_the_quadratic_form() -> None:
    W, X = _problem(seed=6)
    H = 2 * X.T @ X
    Hinv = torch.linalg.inv(H)
    mask = _mask(*W.shape, seed=7)
    out = mrp_update(W, Hinv, mask)
    for r in range(3, W.shape[0]):
        d = out[r] - W[r]
        assert float(mrp_loss(W[r], Hinv, mask[r].nonzero().flatten())) == pytest.approx(
            float(0.5 * d @ H @ d), rel=1e-9
        )


def test_blocked_cholesky_chunks_and_float32() -> None:
    """Systems larger than one Cholesky block, one row per chunk, and the float32 path."""
    g = torch.Generator().manual_seed(8)
    n = 2 * mrp_mod.CHOL_BLOCK + 37
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    M = A @ A.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    rhs = torch.randn(5, n, generator=g, dtype=torch.float64)
    sets = torch.rand(5, n, generator=g) < torch.tensor([[0.9], [0.92], [0.5], [0.1], [0.97]])
    ref = torch.zeros_like(rhs)
    for r in range(5):
        s = sets[r].nonzero().flatten()
        ref[r, s] = torch.linalg.solve(M[s][:, s], rhs[r, s])
    assert torch.allclose(solve_on_sets(M, rhs, sets), ref, atol=1e-10)
    assert torch.allclose(solve_on_sets(M, rhs, sets, chunk_bytes=1), ref, atol=1e-10)
    assert torch.allclose(solve_on_sets(M, rhs, sets, dtype=torch.float32), ref, atol=1e-8)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7, 0.99])
def test_unstructured_exact_count(ratio: float) -> None:
    W, X = _problem(rows=8, cols=40, tokens=128)
    out = mrp_prune(W, 2 * X.T @ X / 128, Sparsity(ratio=ratio), blocksize=16)
    assert int((out == 0).sum()) == round(ratio * W.numel())


def test_ties_still_give_exact_counts() -> None:
    W = torch.ones(6, 24, dtype=torch.float64)  # every magnitude equal: a threshold would prune all
    W[:, ::3] = -1.0
    H = torch.eye(24, dtype=torch.float64)
    for ratio in (0.25, 0.5, 0.6):
        out = mrp_prune(W, H, Sparsity(ratio=ratio), blocksize=8)
        assert int((out == 0).sum()) == round(ratio * W.numel())
    out = mrp_prune(W, H, Sparsity(n=2, m=4))
    assert (out != 0).reshape(6, -1, 4).sum(-1).eq(2).all()


def test_dead_inputs_are_zeroed_and_counted() -> None:
    W, X = _problem(rows=6, cols=16, seed=9)
    X[:, 3] = 0
    out = mrp_prune(W, 2 * X.T @ X, Sparsity(ratio=0.5), blocksize=8)
    assert out[:, 3].eq(0).all() and int((out == 0).sum()) == 48


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 5)])
def test_nm_pattern_exact(n: int, m: int) -> None:
    W, X = _problem(rows=5, cols=40, tokens=128)
    out = mrp_prune(W, 2 * X.T @ X / 128, Sparsity(n=n, m=m), blocksize=16)
    zeros = (out == 0).reshape(5, -1, m).sum(-1)
    assert zeros.eq(m - n).all()


def _exact_loss(W: torch.Tensor, Hd: torch.Tensor, pruned: tuple[int, ...]) -> float:
    Hinv = torch.linalg.inv(Hd)
    return float(mrp_loss(W, Hinv, torch.tensor(pruned)))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_single_group_picks_the_best_pattern(n: int, m: int) -> None:
    """One group per row: L* with H⁻¹ is the exact loss, so the pick must be the brute-force best."""
    W, X = _problem(rows=6, cols=m, tokens=32, seed=10)
    H = 2 * X.T @ X / 32
    Hd = dampen(H, 0.01)
    out = mrp_prune(W, H, Sparsity(n=n, m=m))
    for r in range(6):
        losses = {p: _exact_loss(W[r], Hd, p) for p in itertools.combinations(range(m), m - n)}
        chosen = tuple((out[r] == 0).nonzero().flatten().tolist())
        assert losses[chosen] == pytest.approx(min(losses.values()), rel=1e-9)


def test_nm_first_group_uses_its_inverse_hessian_block() -> None:
    """Several groups: the first group's pattern minimises L* with the (H⁻¹)_gg block."""
    W, X = _problem(rows=6, cols=16, tokens=64, seed=11)
    H = 2 * X.T @ X / 64
    Hinv = torch.linalg.inv(dampen(H, 0.01))
    out = mrp_prune(W, H, Sparsity(n=2, m=4))
    for r in range(6):
        best = min(itertools.combinations(range(4), 2), key=lambda p: float(mrp_loss(W[r], Hinv, torch.tensor(p))))
        assert tuple((out[r, :4] == 0).nonzero().flatten().tolist()) == best


def test_adaptive_mask_beats_sparsegpt_on_a_random_layer() -> None:
    W, X = _problem(rows=16, cols=64, tokens=256, seed=12)
    H = 2 * X.T @ X / 256
    for s in (Sparsity(ratio=0.5), Sparsity(n=2, m=4)):
        out = mrp_prune(W, H, s, blocksize=16)
        sgpt = sparsegpt_prune(W, H, s, blocksize=16).double()
        assert _err(W, out, X) < _err(W, sgpt, X)


def test_float32_weights_and_precision() -> None:
    W, X = _problem(rows=8, cols=32, seed=13)
    H = 2 * X.T @ X / 64
    ref = mrp_prune(W, H, Sparsity(ratio=0.5), blocksize=8)
    out = mrp_prune(W.float(), H.float(), Sparsity(ratio=0.5), blocksize=8, dtype=torch.float32)
    assert out.dtype == torch.float32
    assert torch.equal(out == 0, ref == 0)
    # float32 stops at an excess error of 1e-3 of each row's error (pcg.TOL)
    D = lambda V: (W - V.double()) @ torch.linalg.cholesky(dampen(H, 0.01))  # noqa: E731
    assert float(D(ref).square().sum()) <= float(D(out).square().sum()) <= float(D(ref).square().sum()) * (1 + 1e-3)


def test_update_option_and_errors() -> None:
    from llmprune.engine.stats import InputStats
    from llmprune.methods import get_method

    W, X = _problem(rows=6, cols=16, seed=14)
    acc = InputStats(16, hessian=True, dtype=torch.float64)
    acc.add(X)
    wanda = get_method("wanda")(Sparsity(ratio=0.5))
    assert not wanda.needs_hessian and wanda.options() == {}
    plain = wanda.prune_weight(W, acc)
    for update in ("sparsegpt", "mrp"):
        method = get_method("wanda")(Sparsity(ratio=0.5), update=update)
        assert method.needs_hessian and method.options()["update"] == update
        out = method.prune_weight(W, acc)
        assert torch.equal(out == 0, plain == 0)  # same mask, compensated weights
        assert _err(W, out.double(), X) < _err(W, plain.double(), X)
    mag = get_method("magnitude")(Sparsity(ratio=0.5), update="mrp")
    assert mag.needs_calibration and mag.needs_hessian
    assert not get_method("magnitude")(Sparsity(ratio=0.5)).needs_calibration
    with pytest.raises(LlmpruneError, match="update=obs"):
        get_method("wanda")(Sparsity(ratio=0.5), update="obs")
    with pytest.raises(LlmpruneError, match="add update=sparsegpt or update=mrp"):
        get_method("wanda")(Sparsity(ratio=0.5), damp=0.1)
    mrp = get_method("mrp")(Sparsity(ratio=0.5))
    assert mrp.needs_hessian and mrp.options() == {
        "blocksize": 128,
        "damp": 0.01,
        "precision": "float32",
        "solver": "pcg",
        "tol": None,
    }


def test_api_prune_mrp_and_update(tiny_llama_dir: Path) -> None:
    import llmprune

    model, tok = llmprune.load(tiny_llama_dir)
    report = llmprune.prune(model, tok, "mrp", ratio=0.5, calib_samples=4, seqlen=32, progress=False)
    assert report.method == "mrp" and report.unstructured.update is None
    assert report.unstructured.block_sparsity == pytest.approx(0.5, abs=1e-9)
    assert report.options["damp"] == 0.01
    with pytest.raises(LlmpruneError, match="unknown option 'update' for method sparsegpt"):
        llmprune.prune(model, tok, "sparsegpt", ratio=0.5, calib_samples=2, seqlen=16, progress=False, update="mrp")
    model, tok = llmprune.load(tiny_llama_dir)
    report = llmprune.prune(
        model, tok, "magnitude", pattern="2:4", calib_samples=4, seqlen=32, progress=False, update="mrp"
    )
    assert report.unstructured.update == "mrp" and report.calibration is not None
    assert all(abs(layer["sparsity"] - 0.5) < 1e-9 for layer in report.unstructured.layers)


def test_cli_wanda_with_mrp_update(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from llmprune.cli import main

    out = tmp_path / "wanda-mrp"
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "wanda",
            "--ratio",
            "0.5",
            "--method-args",
            "update=mrp",
            "--calib-samples",
            "4",
            "--seqlen",
            "32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "wanda" and report["unstructured"]["update"] == "mrp"
    assert report["options"] == {"update": "mrp", "damp": 0.01, "blocksize": 128}
    assert all(abs(layer["sparsity"] - 0.5) < 1e-9 for layer in report["unstructured"]["layers"])
    capsys.readouterr()
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "flap",
            "--ratio",
            "0.2",
            "--method-args",
            "update=mrp",
            "--calib-samples",
            "2",
            "--seqlen",
            "16",
            "--out",
            str(tmp_path / "x"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert (
        code == 2 and err.startswith("error: ") and "unknown option 'update' for method flap" in err and "\n" not in err
    )


@pytest.mark.parametrize("setting", ["0.5", "0.7", "2:4", "4:8"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pcg_solver_equals_exact_solution(setting: str, dtype: torch.dtype) -> None:
    """The default conjugate-gradient path reaches the per-row factorisation's weights."""
    g = torch.Generator().manual_seed(5)
    X = torch.randn(256, 48, generator=g, dtype=torch.float64) @ torch.randn(48, 48, generator=g, dtype=torch.float64)
    W = torch.randn(10, 48, generator=g, dtype=torch.float64)
    H = 2 * X.T @ X / 256
    s = Sparsity.parse(pattern=setting) if ":" in setting else Sparsity.parse(ratio=setting)
    exact = mrp_prune(W, H, s, blocksize=16, solver="exact")
    fast = mrp_prune(W.to(dtype), H.to(dtype), s, blocksize=16, dtype=dtype)
    assert torch.equal(fast == 0, exact == 0)
    Hd = dampen(H, 0.01)

    def err(V: torch.Tensor) -> float:
        D = W - V.double()
        return float(torch.einsum("ri,ij,rj->", D, Hd, D))

    # float32 stops at an excess error of 1e-3 of each row's error (pcg.TOL): weights agree to ~its square root
    excess, tol = (1e-12, 1e-9) if dtype == torch.float64 else (1e-3, 5e-2)
    assert err(exact) * (1 - 1e-9) <= err(fast) <= err(exact) * (1 + excess)
    assert torch.allclose(fast.double(), exact, rtol=tol, atol=tol * float(W.abs().max()))


@pytest.mark.parametrize("setting", ["0.5", "2:4"])
def test_looser_pcg_stop_bounds_the_excess_error(setting: str) -> None:
    """``tol``: the preconditioned residual bounds each row's excess error (``H⁻¹``
    masked to the kept set dominates ``(H_KK)⁻¹``), so a looser stop costs at most
    ``tol / (1 − tol)`` of the optimum, and never less error than a tighter one."""
    from llmprune.solvers import pcg

    g = torch.Generator().manual_seed(9)
    X = torch.randn(512, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g, dtype=torch.float64)
    W = torch.randn(12, 64, generator=g, dtype=torch.float64)
    H = 2 * X.T @ X / 512
    s = Sparsity.parse(pattern=setting) if ":" in setting else Sparsity.parse(ratio=setting)
    Hd = dampen(H, 0.01)

    def err(V: torch.Tensor) -> float:
        D = W - V.double()
        return float(torch.einsum("ri,ij,rj->", D, Hd, D))

    exact = err(mrp_prune(W, H, s, blocksize=16, solver="exact"))
    errors = []
    for tol in (pcg.TOL[torch.float64], 1e-3, 0.05, 0.3):
        out = mrp_prune(W, H, s, blocksize=16, tol=tol)
        assert torch.equal(out == 0, mrp_prune(W, H, s, blocksize=16, solver="exact") == 0)
        errors.append(err(out))
        assert exact * (1 - 1e-9) <= errors[-1] <= exact * (1 + tol / (1 - tol)) * (1 + 1e-9)
    assert errors == sorted(errors) and errors[-1] > errors[0]


def test_mrp_solver_and_tol_options() -> None:
    from llmprune.engine.stats import InputStats
    from llmprune.methods import get_method

    with pytest.raises(LlmpruneError, match="tol"):
        get_method("mrp")(Sparsity(ratio=0.5), tol=1.5)
    with pytest.raises(LlmpruneError, match="solver"):
        get_method("mrp")(Sparsity(ratio=0.5), solver="lu")
    W, X = _problem(rows=6, cols=16, seed=15)
    acc = InputStats(16, hessian=True, dtype=torch.float64)
    acc.add(X)
    assert acc.hessian is not None
    for solver in ("exact", "pcg"):
        out = get_method("mrp")(Sparsity.parse(pattern="2:4"), solver=solver, precision="float64").prune_weight(W, acc)
        ref = mrp_prune(W, acc.hessian, Sparsity.parse(pattern="2:4"), solver=solver)
        assert torch.allclose(out.double(), ref.double(), atol=1e-6)


def test_pcg_converges_from_a_plain_start_and_rejects_unknown_solver() -> None:
    from llmprune.solvers.pcg import masked_lstsq_pcg

    g = torch.Generator().manual_seed(6)
    X = torch.randn(200, 30, generator=g, dtype=torch.float64)
    W = torch.randn(7, 30, generator=g, dtype=torch.float64)
    H = X.T @ X + 0.1 * torch.eye(30, dtype=torch.float64)
    mask = torch.rand(7, 30, generator=g) < 0.6
    mask[0] = False  # a row with nothing pruned stays as it is
    out, iters = masked_lstsq_pcg(W, H, torch.linalg.inv(H), ~mask, dtype=torch.float64)
    assert iters < 30
    A = torch.cat([X, 0.1**0.5 * torch.eye(30, dtype=torch.float64)])  # H = AᵀA
    assert torch.allclose(out, _lstsq(W, A, mask), atol=1e-10, rtol=1e-10)
    assert torch.equal(out[0], W[0])
    with pytest.raises(LlmpruneError, match="solver"):
        mrp_prune(W, H, Sparsity(ratio=0.5), solver="cg")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_block_cg_equals_per_row_solves(dtype: torch.dtype, tol: float) -> None:
    """The sweep's block solve by conjugate gradients gives each row's ``(G_SS)⁻¹ b_S``."""
    from llmprune.solvers.mrp import block_cg

    g = torch.Generator().manual_seed(3)
    A = torch.randn(64, 24, generator=g, dtype=torch.float64)
    G = A.T @ A / 64 + 0.05 * torch.eye(24, dtype=torch.float64)
    B = torch.randn(9, 24, generator=g, dtype=torch.float64)
    sets = torch.rand(9, 24, generator=g) < 0.5
    sets[0] = False  # an empty set gives zeros
    ref = torch.zeros_like(B)
    for r in range(9):
        S = sets[r].nonzero().flatten()
        if S.numel():
            ref[r, S] = torch.linalg.solve(G[S][:, S], B[r, S])
    out = block_cg(G, B, sets, dtype).double()
    assert torch.allclose(out, ref, atol=tol * float(ref.abs().max()), rtol=tol)
    assert torch.equal(out[~sets], torch.zeros_like(out[~sets]))
