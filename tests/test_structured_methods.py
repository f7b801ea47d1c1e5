"""Structured baselines (Wanda-sp, FLAP, ShortGPT, LLM-Pruner) and SoBP: math against brute force, budgets,
every family end to end through export and reload."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import llmprune
from llmprune.engine.stats import InputStats
from llmprune.errors import LlmpruneError
from llmprune.methods.structured import FLAP, WandaSP
from llmprune.methods.units import compensate_bias
from llmprune.models import get_adapter
from tiny_models import assert_reload_matches, build_tiny

FAMS = ["llama", "qwen2", "opt", "phi", "gemma3"]


def _stats(X: torch.Tensor) -> InputStats:
    acc = InputStats(X.shape[1], hessian=False)
    acc.add(X[:10])
    acc.add(X[10:])
    return acc


def test_column_scores_match_brute_force():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=False)
    X = torch.randn(25, 6) * torch.arange(1, 7)
    st = _stats(X)
    W = lin.weight.detach()
    wanda = torch.tensor([sum(abs(W[i, j]) * X[:, j].pow(2).mean().sqrt() for i in range(4)) for j in range(6)])
    torch.testing.assert_close(WandaSP(0.2).column_scores(lin, st), wanda.float(), rtol=1e-5, atol=1e-6)
    var = X.var(0, unbiased=False)
    flap = torch.tensor([var[j] * W[:, j].pow(2).sum() for j in range(6)])
    torch.testing.assert_close(FLAP(0.2).column_scores(lin, st), flap.float(), rtol=1e-4, atol=1e-6)


def test_bias_compensation_is_exact_for_mean_inputs():
    """Removing columns J and adding W[:, J]·E[X_J] to the bias gives the dense output
    of inputs whose removed columns sit at their mean."""
    torch.manual_seed(1)
    lin = nn.Linear(8, 5, bias=False)
    X = torch.randn(40, 8)
    mean = X.mean(0)
    J = [1, 4, 6]
    X_mean = X.clone()
    X_mean[:, J] = mean[J]
    want = lin(X_mean)
    compensate_bias(lin, J, mean.double())
    keep = [j for j in range(8) if j not in J]
    got = X[:, keep] @ lin.weight[:, keep].T + lin.bias
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["wanda-sp", "flap"])
@pytest.mark.parametrize("family", FAMS)
def test_structured_methods_end_to_end(method, family, toy_tokenizer, tmp_path):
    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    report = llmprune.prune(model, toy_tokenizer, method, ratio=0.3, calib_samples=4, seqlen=32, progress=False)
    assert abs(report.achieved_ratio - 0.3) < 0.05, report.achieved_ratio
    assert report.params_after < report.params_before
    widths = report.structured.layers_structured
    assert all(w["kv_heads"] >= 1 and w["intermediate"] >= 1 for w in widths)
    if method == "wanda-sp":  # uniform: the same widths in every block
        assert len({(w["kv_heads"], w["intermediate"]) for w in widths}) == 1
    out = tmp_path / "pruned"
    assert_reload_matches(model, toy_tokenizer, report, out)


def test_shortgpt_block_influence_and_removal(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    calib = llmprune.calibration_data(toy_tokenizer, 3, 32)
    with torch.no_grad():
        hs = model(calib, output_hidden_states=True).hidden_states
    bi0 = float(1 - torch.nn.functional.cosine_similarity(hs[0], hs[1], dim=-1).mean())
    report = llmprune.prune(model, toy_tokenizer, "shortgpt", ratio=0.5, calib_samples=3, seqlen=32, progress=False)
    assert report.structured.block_influence[0] == pytest.approx(bi0, rel=1e-4)
    weakest = min(range(2), key=lambda i: report.structured.block_influence[i])
    assert report.structured.removed["blocks"] == [weakest]
    assert model.config.num_hidden_layers == 1 and report.achieved_ratio == pytest.approx(0.5)


def test_structured_rejects_pattern_and_bad_ratio(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError, match="structured"):
        llmprune.prune(model, toy_tokenizer, "flap", pattern="2:4")
    with pytest.raises(LlmpruneError, match="outside"):
        llmprune.prune(model, toy_tokenizer, "wanda-sp", ratio=0.95)


def test_group_obs_reaches_the_least_squares_optimum():
    """Greedy group OBS with exact downdates: the final weights equal the direct
    least-squares fit on the kept columns, and the first pick is the cheapest group."""
    from llmprune.solvers.group_obs import greedy_group_obs

    torch.manual_seed(2)
    X = torch.randn(12, 200, dtype=torch.float64)
    W = torch.randn(5, 12, dtype=torch.float64)
    H = X @ X.T
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    removed, W_new = greedy_group_obs(W, H, groups, 2, damp=0.0)
    keep = [c for g, cols in enumerate(groups) if g not in removed for c in cols]
    sol = torch.linalg.lstsq(X[keep].T, (W @ X).T).solution.T  # argmin ||W X - V X_keep||
    torch.testing.assert_close(W_new[:, keep].double(), sol, rtol=1e-4, atol=1e-4)
    assert W_new[:, [c for g in removed for c in groups[g]]].abs().max() == 0

    def err(g):
        keep_g = [c for i, cols in enumerate(groups) if i != g for c in cols]
        fit = torch.linalg.lstsq(X[keep_g].T, (W @ X).T).solution.T
        return ((W @ X - fit @ X[keep_g]) ** 2).sum()

    assert removed[0] == min(range(4), key=err)


def test_least_squares_refit_matches_lstsq():
    from llmprune.solvers.group_obs import least_squares_refit

    torch.manual_seed(3)
    Z = torch.randn(300, 7, dtype=torch.float64)
    Y = torch.randn(300, 4, dtype=torch.float64)
    W = least_squares_refit(Y.T @ Z, Z.T @ Z, damp=0.0)
    torch.testing.assert_close(W.double(), torch.linalg.lstsq(Z, Y).solution.T, rtol=1e-4, atol=1e-4)


def test_least_squares_refit_with_prior_matches_augmented_lstsq():
    """Ridge towards W0: argmin ||Y - W Z||^2 + lam ||W - W0||^2 equals plain least squares on
    the system stacked with sqrt(lam) I rows whose targets are sqrt(lam) W0."""
    from llmprune.solvers.group_obs import least_squares_refit

    torch.manual_seed(4)
    Z = torch.randn(200, 6, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1, 1.0, 2.0, 0.5], dtype=torch.float64)
    Y = torch.randn(200, 3, dtype=torch.float64)
    W0 = torch.randn(3, 6, dtype=torch.float64)
    damp = 0.3
    ZZ = Z.T @ Z
    lam = damp * torch.diagonal(ZZ).mean()
    aug_Z = torch.cat([Z, lam.sqrt() * torch.eye(6, dtype=torch.float64)])
    aug_Y = torch.cat([Y, lam.sqrt() * W0.T])
    expected = torch.linalg.lstsq(aug_Z, aug_Y).solution.T
    got = least_squares_refit(Y.T @ Z, ZZ, damp=damp, prior=W0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    ridge = least_squares_refit(Y.T @ Z, ZZ, damp=damp)  # prior None = towards zero: a different answer
    assert (ridge.double() - expected).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_sobp_end_to_end_and_ablations(family, toy_tokenizer, tmp_path):
    calib_kw = dict(calib_samples=3, seqlen=32, progress=False)
    ids = llmprune.calibration_data(toy_tokenizer, 2, 32, seed=5)
    results = {}
    for name, opts in {
        "full": {},
        "no_refine": {"refine": False},
        "no_reconstruct": {"reconstruct": False},
        "uniform": {"global_selection": False},
    }.items():
        model = build_tiny(family, vocab_size=len(toy_tokenizer))
        report = llmprune.prune(model, toy_tokenizer, "sobp", ratio=0.3, **calib_kw, **opts)
        assert abs(report.achieved_ratio - 0.3) < 0.06, (name, report.achieved_ratio)
        with torch.no_grad():
            results[name] = float(model(ids, labels=ids).loss)
        if name == "full":
            assert report.options["refine"] and report.options["reconstruct"]
            out = tmp_path / "sobp"
            llmprune.save(model, toy_tokenizer, out, report)
            reloaded, _ = llmprune.load(out)
            with torch.no_grad():
                assert float(reloaded(ids, labels=ids).loss) == pytest.approx(results["full"], rel=1e-5)
    assert all(torch.isfinite(torch.tensor(v)) for v in results.values())


def test_sobp_holds_no_weight_gradients(toy_tokenizer):
    from llmprune.methods.sobp import first_order_scores

    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    calib = llmprune.calibration_data(toy_tokenizer, 2, 16)
    scores = first_order_scores(model, get_adapter(model), calib, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    assert len(scores) == 2 and len(scores[0][0]) == 2 and len(scores[0][1]) == 128
    assert any(s != 0 for s in scores[0][1])


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_sobp_offloaded_stage1_equals_in_place(toy_tokenizer, family):
    """``offload=true`` (one checkpointed block at a time on the device) gives stage 1's
    scores of the plain backward pass, and LLM-Pruner-style weight gradients are refused."""
    from llmprune.errors import LlmpruneError
    from llmprune.methods.gradients import backward_windows
    from llmprune.methods.sobp import first_order_scores

    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    adapter = get_adapter(model)
    calib = llmprune.calibration_data(toy_tokenizer, 2, 16)
    plain = first_order_scores(model, adapter, calib, progress=False)
    streamed = first_order_scores(model, adapter, calib, progress=False, offload=True)
    for (gp, cp), (gs, cs) in zip(plain, streamed):
        assert torch.allclose(torch.tensor(gp + cp), torch.tensor(gs + cs), rtol=1e-5, atol=1e-9)
    assert all("forward" not in b.__dict__ for b in adapter.blocks())  # wrappers removed
    with pytest.raises(LlmpruneError, match="masks only"):
        backward_windows(model, calib, "cpu", [next(model.parameters())], offload_blocks=list(adapter.blocks()))


def _window_grads(model, calib):
    for p in model.parameters():
        p.grad = None
        p.requires_grad_(True)
    for i in range(calib.shape[0]):
        model(input_ids=calib[i : i + 1], labels=calib[i : i + 1]).loss.backward()


def test_llm_pruner_taylor_scores_match_brute_force(toy_tokenizer):
    """Group importance = Σ |w·∂L/∂w| (param_first) or |Σ w·∂L/∂w| (vectorize) over the
    coupled rows/columns of each KV group and channel, gradients summed over windows."""
    from llmprune.methods.llm_pruner import group_scores

    model = build_tiny("qwen2", vocab_size=len(toy_tokenizer))  # GQA and q/k/v biases
    calib = llmprune.calibration_data(toy_tokenizer, 2, 16)
    _window_grads(model, calib)
    adapter = get_adapter(model)
    block = adapter.blocks()[0]
    att, mlp = adapter.attention(block), adapter.mlp(block)
    d, gsz = att.head_dim, att.group_size

    def terms(g):
        out = []
        q_rows = range(g * gsz * d, (g + 1) * gsz * d)
        kv_rows = range(g * d, (g + 1) * d)
        for lin, rows in ((att.q, q_rows), (att.k, kv_rows), (att.v, kv_rows)):
            for r in rows:
                out.append(lin.weight[r] * lin.weight.grad[r])
                if lin.bias is not None:
                    out.append((lin.bias[r] * lin.bias.grad[r]).reshape(1))
        for c in q_rows:
            out.append(att.o.weight[:, c] * att.o.weight.grad[:, c])
        return torch.cat(out).detach()

    def chan_terms(c):
        out = [mlp.down.weight[:, c] * mlp.down.weight.grad[:, c]]
        for lin in (mlp.gate, mlp.up):
            out.append(lin.weight[c] * lin.weight.grad[c])
        return torch.cat(out).detach()

    groups, chans = group_scores(adapter, block, "param_first")
    want = [float(terms(g).abs().sum()) for g in range(att.num_kv_heads)]
    assert groups == pytest.approx(want, rel=1e-4)
    assert chans[:5] == pytest.approx([float(chan_terms(c).abs().sum()) for c in range(5)], rel=1e-4)
    groups, chans = group_scores(adapter, block, "vectorize")
    assert groups == pytest.approx([abs(float(terms(g).sum())) for g in range(att.num_kv_heads)], rel=1e-3, abs=1e-7)
    assert chans[:5] == pytest.approx([abs(float(chan_terms(c).sum())) for c in range(5)], rel=1e-3, abs=1e-7)


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_llm_pruner_end_to_end(family, toy_tokenizer, tmp_path):
    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    report = llmprune.prune(
        model, toy_tokenizer, "llm-pruner", ratio=0.3, calib_samples=3, seqlen=32, progress=False, layer_start=1
    )
    assert abs(report.achieved_ratio - 0.3) < 0.06, report.achieved_ratio
    assert report.options["layers"] == (1, 2)
    widths = report.structured.layers_structured
    dense = build_tiny(family, vocab_size=len(toy_tokenizer))
    dense_w = llmprune.surgery.block_widths(get_adapter(dense))
    assert widths[0] == dense_w[0]  # outside the pruned range: untouched
    assert widths[1]["intermediate"] < dense_w[1]["intermediate"]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # no gradient kept, flags restored
    out = tmp_path / "llmp"
    assert_reload_matches(model, toy_tokenizer, report, out)


def test_llm_pruner_errors(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError, match="taylor"):
        llmprune.prune(model, toy_tokenizer, "llm-pruner", ratio=0.2, taylor="second")
    with pytest.raises(LlmpruneError, match="layer range"):
        llmprune.prune(
            model, toy_tokenizer, "llm-pruner", ratio=0.2, calib_samples=2, seqlen=16, layer_start=2, progress=False
        )
    with pytest.raises(LlmpruneError, match="smaller --ratio"):
        llmprune.prune(
            model, toy_tokenizer, "llm-pruner", ratio=0.6, calib_samples=2, seqlen=16, layer_start=1, progress=False
        )


def test_sobp_score_normalisation_option(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError, match="normalize"):
        llmprune.prune(model, toy_tokenizer, "sobp", ratio=0.2, normalize="flops")
    report = llmprune.prune(
        model,
        toy_tokenizer,
        "sobp",
        ratio=0.3,
        calib_samples=2,
        seqlen=16,
        progress=False,
        normalize="params",
        refine=False,
        reconstruct=False,
    )
    assert report.options["normalize"] == "params" and abs(report.achieved_ratio - 0.3) < 0.06


def test_sobp_refit_pairs_samples_and_never_worsens_the_fit():
    """Stage 3 on a one-linear "block": the refit equals brute-force ridge-towards-W0 least squares
    over all samples (so targets are paired with the right sample), and its error to the dense
    targets is never above the stage-2 weights' (the ridge objective at W' is <= its value at W0)."""
    from llmprune.engine.layerwise import BlockRunner
    from llmprune.methods.sobp import _refit

    torch.manual_seed(7)
    lin = torch.nn.Linear(5, 3, bias=True)
    dense = torch.nn.Linear(5, 3, bias=True)
    Z = torch.randn(4, 6, 5)  # 4 samples x 6 tokens, the pruned stream
    targets = [dense(Z[i : i + 1] + 0.3 * torch.randn(1, 6, 5)).detach() for i in range(4)]  # dense stream
    W0 = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().double()
    Zf = torch.cat([Z.reshape(-1, 5), torch.ones(24, 1)], 1).double()
    Y = torch.cat(targets).reshape(-1, 3).double()
    before = ((Y - Zf @ W0.T) ** 2).sum()
    damp = 0.05
    lam = damp * torch.diagonal(Zf.T @ Zf / 24).mean()
    expected = torch.linalg.lstsq(
        torch.cat([Zf / 24**0.5, lam.sqrt() * torch.eye(6, dtype=torch.float64)]),
        torch.cat([Y / 24**0.5, lam.sqrt() * W0.T]),
    ).solution.T
    _refit(BlockRunner(lin, Z, {}, torch.device("cpu")), lin, targets, damp, "current")
    got = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert ((Y - Zf @ got.T) ** 2).sum() <= before
    with pytest.raises(LlmpruneError, match="refit_prior"):
        from llmprune.methods.sobp import SoBP

        SoBP(0.2, refit_prior="ones")


def _folds(Z: torch.Tensor, Y: torch.Tensor) -> list[dict]:
    """Even / odd samples of Z (samples x tokens x in), Y (samples x tokens x out), as ``_refit`` sums them."""
    out = []
    for f in range(2):
        z, y = Z[f::2].reshape(-1, Z.shape[-1]), Y[f::2].reshape(-1, Y.shape[-1])
        out.append({"YZ": y.T @ z, "ZZ": z.T @ z, "YY": float((y.double() ** 2).sum()), "n": z.shape[0]})
    return out


def test_heldout_refit_matches_brute_force_cross_validation():
    """The held-out errors from accumulated sums equal the errors computed on the held-out
    samples themselves, and the choice is their argmin (keeping W0 is a candidate)."""
    from llmprune.solvers.group_obs import heldout_refit, least_squares_refit

    torch.manual_seed(11)
    Z = torch.randn(6, 20, 5, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.2, 1.0, 0.5], dtype=torch.float64)
    W_true, W0 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    Y = Z @ W_true.T + 0.5 * torch.randn(6, 20, 3, dtype=torch.float64)
    folds = _folds(Z, Y)
    damps = (1e-3, 1.0, 100.0)
    best, rel = heldout_refit(folds, damps, W0, W0)
    brute = {"keep": sum(((Y[f::2] - Z[f::2] @ W0.T) ** 2).sum() for f in range(2))}
    for d in damps:
        brute[d] = 0.0
        for t in range(2):
            W = least_squares_refit(folds[t]["YZ"] / folds[t]["n"], folds[t]["ZZ"] / folds[t]["n"], d, prior=W0)
            brute[d] += ((Y[1 - t :: 2] - Z[1 - t :: 2] @ W.double().T) ** 2).sum()
    for k, v in brute.items():
        assert rel[str(k)] == pytest.approx(float(v / brute["keep"]), rel=1e-5)
    assert best == min((k for k in brute), key=lambda k: brute[k]) and best is not None


def test_heldout_refit_keeps_the_weights_when_a_refit_does_not_generalise():
    """Targets that are noise unrelated to Z (what an overfit refit chases): keep W0 = the
    best predictor, so the held-out choice keeps it; a fixed dampening would move it."""
    from llmprune.engine.layerwise import BlockRunner
    from llmprune.methods.sobp import _refit

    torch.manual_seed(12)
    lin = torch.nn.Linear(40, 3, bias=False)
    Z = torch.randn(4, 12, 40)  # 48 tokens for 40 inputs: a refit can fit the noise in-sample
    targets = [(Z[i : i + 1] @ lin.weight.T + torch.randn(1, 12, 3)).detach() for i in range(4)]
    W_before = lin.weight.detach().clone()
    chosen = _refit(BlockRunner(lin, Z, {}, torch.device("cpu")), lin, targets, "heldout", "current")
    assert chosen["damp"] is None and torch.equal(lin.weight.detach(), W_before)
    assert all(v >= 1.0 for v in chosen["heldout_error_vs_keep"].values())
    fixed = _refit(BlockRunner(lin, Z, {}, torch.device("cpu")), lin, targets, 1e-3, "current")
    assert fixed["damp"] == 1e-3 and not torch.equal(lin.weight.detach(), W_before)


def test_sobp_heldout_refit_end_to_end(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    report = llmprune.prune(
        model, toy_tokenizer, "sobp", ratio=0.3, calib_samples=4, seqlen=32, progress=False, refit_damp="heldout"
    )
    refits = report.details["refits"]
    assert report.options["refit_damp"] == "heldout"
    assert {r["module"] for r in refits} == {"o", "down"} and len(refits) == 2 * model.config.num_hidden_layers
    assert all(r["damp"] is None or r["damp"] > 0 for r in refits)
    stages = report.details["stage_seconds"]  # per-stage timings reach the report
    assert set(stages) == {"1_scores", "1_selection", "2_refine", "3_reconstruct", "other"}
    assert all(v >= 0 for v in stages.values()) and sum(stages.values()) <= report.seconds + 1e-6
    with pytest.raises(LlmpruneError, match="refit_damp"):
        llmprune.prune(
            build_tiny("llama", vocab_size=len(toy_tokenizer)), toy_tokenizer, "sobp", ratio=0.3, refit_damp="auto"
        )
    with pytest.raises(LlmpruneError, match="at least 2 calibration samples"):
        llmprune.prune(
            build_tiny("llama", vocab_size=len(toy_tokenizer)),
            toy_tokenizer,
            "sobp",
            ratio=0.3,
            calib_samples=1,
            seqlen=32,
            progress=False,
            refit_damp="heldout",
        )


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_stop_after_gives_the_same_statistics_without_running_the_rest(family, toy_tokenizer):
    """``BlockRunner.collect(..., stop_after=o_proj)`` ends each sample's forward at o_proj:
    the same input Hessian as a full forward, and the MLP never runs."""
    from llmprune.engine.layerwise import BlockRunner, LayerwiseEngine
    from llmprune.models.base import LinearGroup

    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    adapter = get_adapter(model)
    calib = llmprune.calibration_data(toy_tokenizer, 3, 16, seed=2)
    hidden, kwargs_list = LayerwiseEngine(model, adapter, progress=False).capture(calib)
    block = adapter.blocks()[0]
    att, mlp = adapter.attention(block), adapter.mlp(block)
    runner = BlockRunner(block, hidden, kwargs_list[0], torch.device("cpu"))
    group = [LinearGroup(("o",), (att.o,))]
    full = runner.collect(group, hessian=True)["o"].hessian
    calls = []
    handle = mlp.down.register_forward_hook(lambda *a: calls.append(1))
    try:
        early = runner.collect(group, hessian=True, stop_after=att.o)["o"].hessian
    finally:
        handle.remove()
    torch.testing.assert_close(early, full, rtol=0, atol=0)
    assert calls == [] and not att.o._forward_hooks  # MLP skipped, hook removed
    with pytest.raises(ValueError, match="no block outputs"):
        runner.forward(keep_outputs=True, stop_after=att.o)


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_stream_targets_put_the_pruned_stream_back_on_the_dense_one(family, toy_tokenizer):
    """``refit_target="stream"``, brute force: a block whose ``down`` outputs equal the
    stream targets reproduces the dense block's output from the pruned stream; on LLaMA,
    an ``o_proj`` that outputs its stream targets puts the residual after attention on the
    dense one. The pruned stream is the dense one plus noise, the block is the dense one."""
    from llmprune.engine.layerwise import BlockRunner, LayerwiseEngine
    from llmprune.methods.sobp import _dense_targets, _stream_targets

    torch.manual_seed(3)
    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    adapter = get_adapter(model)
    ids = torch.randint(0, len(toy_tokenizer), (3, 16))
    dense_in, kwargs = LayerwiseEngine(model, adapter, progress=False).capture(ids)
    block = adapter.blocks()[0]
    att, mlp = adapter.attention(block), adapter.mlp(block)
    pruned_in = dense_in + 0.5 * torch.randn_like(dense_in)
    dev = torch.device("cpu")
    with torch.no_grad():
        ys, dense_out = _dense_targets(BlockRunner(block, dense_in.clone(), kwargs[0], dev), [att.o, mlp.down])
        runner = BlockRunner(block, pruned_in, kwargs[0], dev)
        t_down = _stream_targets(runner, mlp.down, ys[1], dense_in, dense_out, first=False)
        t_o = _stream_targets(runner, att.o, ys[0], dense_in, dense_out, first=True)

        def replaced(lin, targets):
            state = {"i": 0}

            def hook(module, args, output):
                state["i"] += 1
                return targets[state["i"] - 1].to(output.dtype)

            return lin.register_forward_hook(hook)

        handle = replaced(mlp.down, t_down)
        out = runner.forward(keep_outputs=True)
        handle.remove()
        torch.testing.assert_close(out, dense_out, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(runner.forward(keep_outputs=True), dense_out, atol=1e-2)  # the noise matters
        if family == "llama":  # sequential block: the stream after attention is the MLP norm's input
            mids: list[torch.Tensor] = []
            norm = block.post_attention_layernorm
            grab = norm.register_forward_pre_hook(lambda module, args: mids.append(args[0].clone()))
            BlockRunner(block, dense_in.clone(), kwargs[0], dev).forward(keep_outputs=False)
            dense_mid, mids[:] = torch.cat(mids), []
            handle = replaced(att.o, t_o)
            runner.forward(keep_outputs=False)
            handle.remove()
            grab.remove()
            torch.testing.assert_close(torch.cat(mids), dense_mid, rtol=1e-4, atol=1e-4)


def test_sobp_stream_refit_end_to_end_and_refusals(toy_tokenizer, tmp_path):
    model = build_tiny("qwen2", vocab_size=len(toy_tokenizer))
    report = llmprune.prune(
        model, toy_tokenizer, "sobp", ratio=0.3, calib_samples=4, seqlen=32, progress=False, refit_target="stream"
    )
    assert report.options["refit_target"] == "stream"
    assert_reload_matches(model, toy_tokenizer, report, tmp_path / "out")
    with pytest.raises(LlmpruneError, match="refit_target"):
        llmprune.prune(
            build_tiny("llama", vocab_size=len(toy_tokenizer)),
            toy_tokenizer,
            "sobp",
            ratio=0.3,
            refit_target="residual",
        )
    with pytest.raises(LlmpruneError, match="post_feedforward_layernorm"):
        llmprune.prune(
            build_tiny("gemma3", vocab_size=len(toy_tokenizer)),
            toy_tokenizer,
            "sobp",
            ratio=0.3,
            calib_samples=2,
            seqlen=16,
            progress=False,
            refit_target="stream",
        )


def test_sobp_rms_weighted_refit_matches_weighted_least_squares(toy_tokenizer):
    """``refit_weight="rms"``, brute force: the refit equals ridge-towards-W0 least squares with
    each token's squared error weighted by ``1 / mean_d(h_t²)`` of the stream it is added to."""
    from llmprune.engine.layerwise import BlockRunner
    from llmprune.methods.sobp import _refit, _rms_weights

    torch.manual_seed(3)
    lin = torch.nn.Linear(5, 3, bias=True)
    dense = torch.nn.Linear(5, 3, bias=True)
    Z = torch.randn(4, 6, 5)
    stream = torch.randn(4, 6, 8) * torch.linspace(0.5, 30.0, 6)[None, :, None]  # a "sink" with a large stream
    targets = [dense(Z[i : i + 1] + 0.3 * torch.randn(1, 6, 5)).detach() for i in range(4)]
    weights = _rms_weights(stream)
    w = (1.0 / stream.double().pow(2).mean(-1)).reshape(-1, 1)
    torch.testing.assert_close(torch.cat(weights).reshape(-1, 1).double(), w, rtol=1e-5, atol=0)
    W0 = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().double()
    Zf = torch.cat([Z.reshape(-1, 5), torch.ones(24, 1)], 1).double()  # the bias column is weighted too
    Y = torch.cat(targets).reshape(-1, 3).double()
    damp = 0.05

    def ridge_towards_W0(Z: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:  # augmented least squares
        lam = damp * torch.diagonal(Z.T @ Z / 24).mean()
        return torch.linalg.lstsq(
            torch.cat([Z / 24**0.5, lam.sqrt() * torch.eye(6, dtype=torch.float64)]),
            torch.cat([Y / 24**0.5, lam.sqrt() * W0.T]),
        ).solution.T

    expected = ridge_towards_W0(Zf * w.sqrt(), Y * w.sqrt())
    _refit(BlockRunner(lin, Z, {}, torch.device("cpu")), lin, targets, damp, "current", weights)
    got = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, ridge_towards_W0(Zf, Y), atol=1e-3)  # the weights change the answer
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    report = llmprune.prune(
        model, toy_tokenizer, "sobp", ratio=0.3, calib_samples=2, seqlen=16, progress=False, refit_weight="rms"
    )
    assert report.options["refit_weight"] == "rms"
    with pytest.raises(LlmpruneError, match="refit_weight"):
        llmprune.prune(
            build_tiny("llama", vocab_size=len(toy_tokenizer)), toy_tokenizer, "sobp", ratio=0.3, refit_weight="l2"
        )


def test_sobp_auto_refit_target_is_stream_without_post_norms_and_module_with_them(toy_tokenizer, capsys):
    """The default ``refit_target="auto"`` fits the dense stream where the block's output is
    linear in the module outputs (llama) and the dense module outputs under post-norms
    (gemma3); every refit records its target, and a run with few calibration tokens says
    on stderr that stage 3 may hurt."""
    for family, expected in (("llama", "stream"), ("gemma3", "module")):
        model = build_tiny(family, vocab_size=len(toy_tokenizer))
        report = llmprune.prune(model, toy_tokenizer, "sobp", ratio=0.3, calib_samples=2, seqlen=16, progress=False)
        assert report.options["refit_target"] == "auto"
        refits = report.details["refits"]
        assert refits and {r["target"] for r in refits} == {expected}, family
    assert "consider --method-args reconstruct=false" in capsys.readouterr().err
