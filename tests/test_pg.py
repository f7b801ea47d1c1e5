"""PG (policy-gradient structural pruning): the projection, the estimator, masks vs
surgery, end to end on a tiny model, the CLI, and data-parallel training with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from llmprune.errors import LlmpruneError
from llmprune.engine.offload import placed
from llmprune.methods.pg import PG, UnitMasks, build_layout, select_family, select_params
from llmprune.methods.units import apply_selection
from llmprune.models import get_adapter
from llmprune.solvers.policy_gradient import MovingBaseline, cosine_lr, expected_kept, policy_gradient, project_budget
from tiny_models import assert_reload_matches, build_tiny

HERE = Path(__file__).resolve().parent


def short_calibration_text(monkeypatch_or_module) -> None:
    """Calibration windows from the first 300k characters of WikiText-2 train only:
    tokenizing the whole split with the toy BPE takes seconds per prune call."""
    import llmprune.data as data

    original = data.load_text

    def load_text(name, *args, **kwargs):
        text = original(name, *args, **kwargs)
        return text[:300_000] if name == "wikitext2" else text

    if isinstance(monkeypatch_or_module, pytest.MonkeyPatch):
        monkeypatch_or_module.setattr(data, "load_text", load_text)
    else:
        data.load_text = load_text


@pytest.fixture(autouse=True)
def _short_text(monkeypatch):
    short_calibration_text(monkeypatch)


# -- math ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(60))
def test_projection_meets_budget_and_box(case):
    g = torch.Generator().manual_seed(case)
    n = int(torch.randint(5, 40, (1,), generator=g))
    s = torch.rand(n, generator=g, dtype=torch.float64) * 3 - 1  # after a step: outside the box too
    kind = case % 3
    cost = torch.ones(n, dtype=torch.float64) if kind == 0 else torch.randint(1, 50, (n,), generator=g).double()
    owner = None
    if kind == 2:  # the last 3 entries are blocks owning the others (bilinear budget)
        nb = 3
        owner = torch.cat([torch.randint(n - nb, n, (n - nb,), generator=g), torch.full((nb,), -1)])
        cost[n - nb :] = torch.randint(0, 20, (nb,), generator=g).double()
    total = (
        float(cost.sum()) if owner is None else float(expected_kept(torch.ones(n, dtype=torch.float64), cost, owner))
    )
    budget = float(torch.rand(1, generator=g)) * total
    p = project_budget(s, cost, budget, owner)
    assert p.min() >= 0 and p.max() <= 1
    assert float(expected_kept(p, cost, owner)) == pytest.approx(budget, abs=1e-7 * total)
    if kind == 0:  # one family of equal units: the exact Euclidean projection (compare against a QP-free check)
        v = (s - p)[(p > 0) & (p < 1)]
        if v.numel():
            assert torch.allclose(v, v[0].expand_as(v), atol=1e-9)


def test_projection_edges():
    s = torch.tensor([0.2, 0.9, 1.4])
    assert torch.equal(project_budget(s, torch.ones(3), 5.0), torch.ones(3))
    assert torch.equal(project_budget(s, torch.ones(3), 0.0), torch.zeros(3))


@pytest.mark.parametrize("K,window", [(2, 5), (3, 1), (4, 3)])
def test_estimator_is_unbiased(K, window):
    """Toy objective ``L(m) = a·m + Σ_{i<j} B_ij m_i m_j + c``:
    ``∇_s E[L] = a + (B + Bᵀ)s``; the estimator's mean over many draws is
    ``s(1−s)/sqrt(s(1−s)+ε) ⊙ ∇_s E[L]`` with a baseline that contains the current batch."""
    g = torch.Generator().manual_seed(K)
    n, draws, eps = 5, 200_000, 1e-6
    s = torch.tensor([0.15, 0.4, 0.5, 0.7, 0.9], dtype=torch.float64)
    a = torch.randn(n, generator=g, dtype=torch.float64)
    B = torch.triu(torch.randn(n, n, generator=g, dtype=torch.float64), diagonal=1)
    c = 3.0
    masks = torch.bernoulli(s.expand(draws, K, n), generator=g)
    losses = masks @ a + ((masks @ B) * masks).sum(-1) + c  # (draws, K)
    alpha = 1.0 / window
    past = 3.2  # mean of the older entries of the moving window (independent of the draw)
    baseline = alpha * losses.mean(-1) + (1 - alpha) * past
    est = policy_gradient(losses, masks, s, baseline, alpha, eps)
    want = s * (1 - s) / torch.sqrt(s * (1 - s) + eps) * (a + (B + B.T) @ s)
    se = est.std(0) / draws**0.5
    assert torch.all((est.mean(0) - want).abs() < 5 * se + 1e-4), (est.mean(0), want, se)


def test_sgd_with_projection_finds_the_best_units():
    """Forward-only optimisation on ``L(m) = Σ w_i (1 − m_i)``: the two most valuable of six
    units end up with probability 1 under a keep-2 budget."""
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([0.1, 2.0, 0.3, 1.5, 0.2, 0.05], dtype=torch.float64)
    s = torch.full((6,), 2 / 6, dtype=torch.float64)
    base = MovingBaseline(5)
    for step in range(400):
        masks = torch.bernoulli(s.expand(2, 6), generator=g)
        losses = ((1 - masks) * w).sum(-1)
        b, alpha = base.update(float(losses.mean()))
        s = project_budget(
            s - cosine_lr(0.1, step, 400) * policy_gradient(losses, masks, s, b, alpha), torch.ones(6), 2.0
        )
    assert s[[1, 3]].min() > 0.9 and s.sum() == pytest.approx(2.0)


# -- masks, selection, surgery --------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "opt", "phi", "gemma3"])
@pytest.mark.parametrize("budget", ["family", "params"])
def test_masked_model_equals_physically_pruned(family, budget, toy_tokenizer):
    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    adapter = get_adapter(model)
    units = ("groups", "channels", "blocks") if budget == "params" else ("groups", "channels")
    layout = build_layout(adapter, units)
    s = torch.rand(layout.n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if budget == "params":
        s[layout.blocks[1]] = 0.0  # block 1 is the least probable unit: it goes first
        chosen = select_params(layout, s, 0.6, allow_empty=True)
        assert [u.block for u in chosen if u.kind == "block"] == [1]
    else:
        chosen = select_family(layout, s, 0.4, allow_empty=False)
    ids = torch.randint(0, len(toy_tokenizer), (2, 12), generator=torch.Generator().manual_seed(2))
    hooks = UnitMasks(adapter, layout, "cpu", torch.float32)
    hooks.set(layout.hard_mask(chosen))
    with torch.no_grad():
        masked = model(ids).logits
    hooks.set(None)
    with torch.no_grad():
        unmasked = model(ids).logits
    hooks.remove()
    before = adapter.block_linear_params()
    apply_selection(adapter, chosen, layout.info, compensate=False)
    with torch.no_grad():
        pruned = model(ids).logits
    torch.testing.assert_close(pruned, masked, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unmasked, masked)
    removed = 1 - get_adapter(model).block_linear_params() / before
    assert removed == pytest.approx(sum(u.cost for u in chosen) / before)


def test_offload_placement_gives_the_same_logits(toy_tokenizer, monkeypatch):
    """The offload hooks (exercised here on the CPU) leave the forward unchanged, stream
    each block in and out once per forward, in order, and leave every weight on its
    original CPU storage."""
    from llmprune.engine.offload import BlockStream

    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    blocks = list(get_adapter(model).blocks())
    storage = [p.data_ptr() for p in model.parameters()]
    events: list[tuple[str, int]] = []
    enter, exit_ = BlockStream.enter, BlockStream.exit
    monkeypatch.setattr(
        BlockStream, "enter", lambda self: (events.append(("in", blocks.index(self.block))), enter(self))[1]
    )
    monkeypatch.setattr(
        BlockStream, "exit", lambda self: (events.append(("out", blocks.index(self.block))), exit_(self))[1]
    )
    ids = torch.randint(0, len(toy_tokenizer), (1, 10))
    with torch.no_grad():
        want = model(ids).logits
        with placed(model, blocks, torch.device("cpu"), offload=True):
            got = model(ids).logits
    torch.testing.assert_close(got, want)
    assert events == [(d, b) for b in range(len(blocks)) for d in ("in", "out")]
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in blocks)
    assert [p.data_ptr() for p in model.parameters()] == storage


# -- end to end --------------------------------------------------------------------------
def _group_channel_costs(model) -> tuple[int, int]:
    adapter = get_adapter(model)
    info = build_layout(adapter, ("groups", "channels")).info
    return info[0].group_cost, info[0].channel_cost


@pytest.mark.parametrize("budget,init", [("family", "wanda-sp"), ("params", "constant"), ("params", "random")])
def test_pg_end_to_end_ratio_save_reload(budget, init, toy_tokenizer, tmp_path):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    gcost, ccost = _group_channel_costs(model)
    total = get_adapter(model).block_linear_params()
    report = llmprune.prune(
        model,
        toy_tokenizer,
        "pg",
        ratio=0.3,
        calib_samples=4,
        seqlen=16,
        progress=False,
        steps=6,
        budget=budget,
        init=init,
        batch_size=2,
    )
    assert abs(report.achieved_ratio - 0.3) * total <= max(gcost, ccost)  # within one unit of the target
    pg = report.details
    assert pg["world_size"] == 1 and pg["ranks_identical"]
    assert pg["expected_keep_final"] == pytest.approx(0.7, abs=1e-6)
    assert pg["expected_keep_init"] == pytest.approx(0.7, abs=1e-6)
    probs = pg["probabilities"]
    assert len(probs["groups"]) == 2 and len(probs["channels"][0]) == 128
    assert ("blocks" in probs) == (budget == "params")
    assert len(pg["history"]) == 6 and {"loss", "baseline", "expected_keep"} <= set(pg["history"][0])
    assert report.options["budget"] == budget and report.options["init"] == init
    out = tmp_path / "pg"
    assert_reload_matches(model, toy_tokenizer, report, out)
    assert json.loads((out / "report.json").read_text())["details"]["probabilities"] == probs


def test_pg_learns_and_offload_matches(toy_tokenizer, capsys):
    """Probabilities move away from the initialisation; the offloaded path (CPU hooks)
    gives bit-identical probabilities (same seed). With the default keep-best, a run whose
    trained masks all score worse than the initial one ships the initial mask and says so."""
    runs = []
    for offload in (False, True):
        model = build_tiny("llama", vocab_size=len(toy_tokenizer))
        r = llmprune.prune(
            model,
            toy_tokenizer,
            "pg",
            ratio=0.4,
            calib_samples=3,
            seqlen=16,
            progress=False,
            steps=5,
            lr=0.2,
            offload=offload,
            keep_best=0,
        )
        runs.append(r.details)
    assert runs[0]["probabilities"] == runs[1]["probabilities"]
    assert runs[0]["probabilities"] != runs[0]["initial_probabilities"]
    assert runs[0]["keep_best"] is None
    capsys.readouterr()
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    pg = llmprune.prune(
        model, toy_tokenizer, "pg", ratio=0.4, calib_samples=3, seqlen=16, progress=False, steps=5, lr=0.2
    ).details  # default keep_best=10: scored at steps 0 and 5
    assert [t["step"] for t in pg["keep_best"]["trace"]] == [0, 5]
    assert pg["last_probabilities"] == runs[0]["probabilities"]  # training itself is unchanged
    shipped_init = pg["keep_best"]["best_step"] == 0
    assert (pg["probabilities"] == pg["initial_probabilities"]) == shipped_init
    assert ("so the initial mask is kept" in capsys.readouterr().err) == shipped_init


def test_pg_zero_steps_is_the_init_selection(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    r = llmprune.prune(model, toy_tokenizer, "pg", ratio=0.5, calib_samples=2, seqlen=16, progress=False, steps=0)
    assert r.details["probabilities"] == r.details["initial_probabilities"] and r.details["history"] == []
    assert r.achieved_ratio == pytest.approx(0.5, abs=0.01)


def test_pg_keep_best_selects_the_lowest_scored_topk_mask(toy_tokenizer):
    """keep_best=2: the trace scores steps 0, 2, 4 and 5 (after the last); the shipped
    model is the top-k mask of the best-scored probabilities, and the pruned model's loss
    on the selection windows equals that mask's recorded loss (masked == pruned)."""
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    r = llmprune.prune(
        model,
        toy_tokenizer,
        "pg",
        ratio=0.4,
        calib_samples=4,
        seqlen=16,
        progress=False,
        steps=5,
        lr=0.5,
        keep_best=2,
        select_samples=3,
    )
    kb = r.details["keep_best"]
    assert [t["step"] for t in kb["trace"]] == [0, 2, 4, 5]
    losses = [t["topk_loss"] for t in kb["trace"]]
    assert kb["best_topk_loss"] == min(losses)
    assert kb["trace"][losses.index(min(losses))]["step"] == kb["best_step"]
    if kb["best_step"] == 0:
        assert r.details["probabilities"] == r.details["initial_probabilities"]
    if kb["best_step"] != 5:
        assert r.details["probabilities"] != r.details["last_probabilities"]
    calib = llmprune.calibration_data(toy_tokenizer, 4, 16, seed=0)[:3]
    with torch.no_grad():
        pruned = sum(float(model(input_ids=calib[i : i + 1], labels=calib[i : i + 1]).loss) for i in range(3)) / 3
    assert pruned == pytest.approx(kb["best_topk_loss"], abs=1e-4)
    assert r.achieved_ratio == pytest.approx(0.4, abs=0.02)


def test_pg_keep_best_with_zero_steps_keeps_the_init(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    r = llmprune.prune(
        model, toy_tokenizer, "pg", ratio=0.5, calib_samples=2, seqlen=16, progress=False, steps=0, keep_best=1
    )
    assert r.details["keep_best"]["best_step"] == 0 and len(r.details["keep_best"]["trace"]) == 1
    assert r.details["probabilities"] == r.details["initial_probabilities"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"budget": "layers"}, "budget"),
        ({"init": "zeros"}, "init"),
        ({"units": "heads"}, "unit family"),
        ({"units": "groups,channels,blocks"}, "budget=params"),
        ({"samples_per_step": 1}, "samples_per_step"),
        ({"steps": -1}, "steps"),
        ({"keep_best": -2}, "keep_best"),
        ({"keep_best": 5, "select_samples": 0}, "select_samples"),
        ({"lr": float("nan")}, "lr"),
        ({"block_init": 0.5, "budget": "params"}, "block_init"),
    ],
)
def test_pg_rejects_bad_options(kwargs, match):
    with pytest.raises(LlmpruneError, match=match):
        PG(0.3, **kwargs)
    with pytest.raises(LlmpruneError, match="outside"):
        PG(0.95)


def test_pg_params_budget_that_units_cannot_reach(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError, match="hold only"):
        llmprune.prune(
            model,
            toy_tokenizer,
            "pg",
            ratio=0.5,
            calib_samples=2,
            seqlen=16,
            progress=False,
            steps=1,
            budget="params",
            units="groups",
        )


def test_pg_cli(tmp_path, tiny_llama_dir, capsys):
    from llmprune.cli import main

    out = tmp_path / "pg-cli"
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "pg",
            "--ratio",
            "0.25",
            "--method-args",
            "steps=3,lr=0.1,batch_size=2,samples_per_step=3,budget=params,init=constant,keep_best=2",
            "--calib-samples",
            "4",
            "--seqlen",
            "16",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "pg" and report["options"]["samples_per_step"] == 3
    assert report["options"]["keep_best"] == 2 and report["details"]["keep_best"]["every"] == 2
    assert report["options"]["units"] == ["groups", "channels", "blocks"]
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "wanda-sp",
            "--ratio",
            "0.2",
            "--method-args",
            "budget=params",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2 and "unknown option 'budget' for method wanda-sp" in capsys.readouterr().err
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "pg",
            "--ratio",
            "0.2",
            "--method-args",
            "samples_per_step=1",
            "--out",
            str(tmp_path / "y"),
        ]
    )
    assert code == 2 and "samples_per_step" in capsys.readouterr().err


# -- data parallel ----------------------------------------------------------------------
def test_pg_data_parallel_two_processes(tmp_path, tiny_llama_dir):
    """torchrun, gloo, 2 CPU processes: each rank trains on its own batches and masks,
    the gradients are averaged, and both ranks end with identical probabilities."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(HERE / "pg_dist_worker.py"),
        str(tiny_llama_dir),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["world_size"] == 2 and r["ranks_identical"], r
    assert ranks[0]["probabilities"] == ranks[1]["probabilities"]
    assert ranks[0]["last_probabilities"] != ranks[0]["initial_probabilities"]
    # keep_best: 3 scoring windows split 2 + 1 over the ranks, losses all-reduced: one trace
    assert ranks[0]["keep_best"] == ranks[1]["keep_best"] and len(ranks[0]["keep_best"]["trace"]) == 3
    assert ranks[0]["history"] != ranks[1]["history"]  # each rank: its own windows and masks
    assert ranks[0]["achieved_ratio"] == ranks[1]["achieved_ratio"]
