"""DISP (dimension-independent structural pruning): parameter accounting, masks, the
masked model against the exported one, end to end with save + reload, torchrun."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from llmprune.errors import LlmpruneError
from llmprune.engine.offload import BlockStream, checkpointed_blocks
from llmprune.methods.disp import DISP, ParamCount, SelectionMasks, apply_disp_masks, match_budget
from llmprune.methods.disp.hypernet import (
    DispHypernet,
    deterministic_keep,
    gumbel_noise,
    hard_mask,
    logistic_noise,
    soft_mask,
)
from llmprune.methods import PruneContext
from llmprune.models import count_parameters, get_adapter
from tiny_models import build_tiny

FAMS = ["llama", "phi", "qwen2", "opt", "gemma3"]


def _random_keeps(count: ParamCount, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keeps = []
    for i, s in enumerate(count.specs):
        k = torch.rand(s.size, generator=g) < 0.6
        if i % 4 == 0:  # some vectors keep everything (no index sets then)
            k[:] = True
        k[int(torch.randint(s.size, (1,), generator=g))] = True
        keeps.append(k)
    return keeps


@pytest.mark.parametrize("family", FAMS)
def test_accounting_and_masked_equals_exported(family):
    """The exact polynomial count equals a brute-force count of the exported model, and
    the hook-masked model computes the exported model's logits (norm over the full
    residual, then index_select)."""
    model = build_tiny(family, vocab_size=128)
    adapter = get_adapter(model)
    count = ParamCount(model, adapter)
    assert [s.kind for s in count.specs[:5]] == ["attn_in", "attn_out", "mlp_in", "mlp_int", "mlp_out"]
    assert count.total([s.size for s in count.specs]) == count_parameters(model)
    assert count.block([s.size for s in count.specs]) == adapter.block_linear_params()
    keeps = _random_keeps(count)
    ids = torch.randint(0, 128, (2, 12))
    with SelectionMasks(adapter, count.specs) as hooks, torch.no_grad():
        hooks.masks[:] = [k.float() for k in keeps]
        want = model(ids).logits
    pruned = copy.deepcopy(model)
    apply_disp_masks(get_adapter(pruned), count.specs, keeps)
    sizes = [int(k.sum()) for k in keeps]
    assert count_parameters(pruned) == count.total(sizes) == sum(p.numel() for p in set(pruned.parameters()))
    assert get_adapter(pruned).block_linear_params() == count.block(sizes)
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, want, rtol=1e-5, atol=1e-5)


def test_hard_masks_never_empty_and_budget_matching():
    logits = [torch.full((7,), -50.0), torch.randn(5)]
    keep = deterministic_keep(logits[0], offset=3.0)
    assert int(keep.sum()) == 1
    model = build_tiny("llama", vocab_size=128)
    count = ParamCount(model, get_adapter(model))
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(s.size, generator=g) for s in count.specs]
    minimum = count.kept([1] * len(count.specs), "block")
    for frac in (0.0, 0.3, 0.7, 1.0):
        target = minimum + frac * (count.full_block - minimum)
        keeps, _ = match_budget(logits, count, "block", target, offset=3.0)
        assert all(int(k.sum()) >= 1 for k in keeps)
        kept = count.block([int(k.sum()) for k in keeps])
        assert kept <= target + 1e-6
        if 0 < frac < 1:  # close to the target: within one MLP channel's worth
            assert kept > target - 3 * count.specs[0].size * count.specs[3].size


@pytest.mark.parametrize("estimator", ["st", "reinmax"])
def test_estimators_are_binary_with_gradients(estimator):
    torch.manual_seed(0)
    a = torch.randn(200, requires_grad=True)
    noise = (logistic_noise if estimator == "reinmax" else gumbel_noise)(a)
    h = hard_mask(a, noise, 0.4, 3.0, estimator)
    assert set(h.detach().unique().tolist()) <= {0.0, 1.0}
    (h * torch.linspace(-1, 1, 200)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    if estimator == "reinmax":  # exact in expectation for a linear loss: d E[D]/dθ = σ(θ)(1 − σ(θ))
        z = torch.zeros(20000, requires_grad=True)
        hard_mask(z, logistic_noise(z), 0.4, 3.0, "reinmax").sum().backward()
        p = torch.sigmoid(torch.tensor(3.0))
        assert float(z.grad.mean()) == pytest.approx(float(p * (1 - p)), rel=0.1)
    s = soft_mask(a, gumbel_noise(a), 0.4, 3.0)
    assert ((s >= 0) & (s <= 1)).all() and ((s > 0.01) & (s < 0.99)).any()  # relaxed, not binary


def test_hypernetwork_shape_and_checkpointing_gradients(monkeypatch):
    """Per-block checkpointing, and checkpointing with offloaded blocks, give the same
    hypernetwork gradients as a plain backward. Offloaded: each block is streamed in
    twice per step (forward, then its recomputation in the backward pass) and always
    streamed out again."""
    model = build_tiny("llama", vocab_size=128)
    adapter = get_adapter(model)
    count = ParamCount(model, adapter)
    for p in model.parameters():
        p.requires_grad_(False)
    events: list[tuple[str, int]] = []
    blocks = list(adapter.blocks())
    enter, exit_ = BlockStream.enter, BlockStream.exit
    monkeypatch.setattr(
        BlockStream, "enter", lambda self: (events.append(("in", blocks.index(self.block))), enter(self))[1]
    )
    monkeypatch.setattr(
        BlockStream, "exit", lambda self: (events.append(("out", blocks.index(self.block))), exit_(self))[1]
    )
    ids = torch.randint(0, 128, (1, 10))
    grads = []
    for mode in ("plain", "checkpointed", "streamed"):
        hn = DispHypernet([s.size for s in count.specs], seed=3)
        assert not any(n == "z" for n, _ in hn.named_parameters())  # fixed inputs are not trained
        logits = hn()
        assert [a.shape[0] for a in logits] == [s.size for s in count.specs]
        g = torch.Generator().manual_seed(0)
        with SelectionMasks(adapter, count.specs) as hooks:
            hooks.masks[:] = [soft_mask(a, gumbel_noise(a, g), 0.4, 3.0) for a in logits]
            ctx = {
                "plain": torch.enable_grad(),
                "checkpointed": checkpointed_blocks(blocks),
                "streamed": checkpointed_blocks(blocks, torch.device("cpu")),
            }[mode]
            with ctx:
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                forward_events = list(events)
                loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in hn.parameters()]))
    n = len(blocks)
    assert forward_events == [(d, b) for b in range(n) for d in ("in", "out")]  # one block at a time, in order
    assert sorted(events) == sorted(forward_events * 2)  # the backward recomputed every block, streamed again
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[0], grads[2], rtol=1e-5, atol=1e-7)
    assert "forward" not in adapter.blocks()[0].__dict__


def test_offloaded_training_matches_and_needs_checkpointing(toy_tokenizer):
    """DISP with offload=True (blocks streamed; on the CPU the moves are pointer swaps)
    learns exactly what the resident model learns."""
    runs = []
    for offload in (False, True):
        model = build_tiny("llama", vocab_size=len(toy_tokenizer))
        r = llmprune.prune(
            model,
            toy_tokenizer,
            "disp",
            ratio=0.3,
            calib_samples=2,
            seqlen=16,
            progress=False,
            steps=3,
            offload=offload,
        )
        runs.append((r.details["history"], r.details["selection"], r.options["offload"]))
    assert runs[0][:2] == runs[1][:2] and (runs[0][2], runs[1][2]) == (False, True)
    with pytest.raises(LlmpruneError, match="checkpointing=false"):
        DISP(0.3, offload=True, checkpointing=False)


@pytest.mark.parametrize("family,target,estimator", [("llama", "total", "st"), ("phi", "block", "reinmax")])
def test_end_to_end_save_reload(family, target, estimator, toy_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_tiny(family, vocab_size=len(toy_tokenizer))
    before_total = count_parameters(model)
    before_block = get_adapter(model).block_linear_params()
    report = llmprune.prune(
        model,
        toy_tokenizer,
        "disp",
        ratio=0.3,
        calib_samples=4,
        seqlen=32,
        progress=False,
        steps=4,
        target=target,
        estimator=estimator,
    )
    assert all(p.requires_grad for p in model.parameters())  # requires_grad flags restored
    d = report.details
    assert d["target_accounting"] == target and len(d["history"]) >= 1
    total_frac = 1 - report.params_after / before_total
    block_frac = 1 - report.block_linear_params / before_block
    assert d["achieved_total_fraction_removed"] == pytest.approx(total_frac)
    assert d["achieved_block_fraction_removed"] == pytest.approx(block_frac)
    assert report.achieved_ratio == pytest.approx(block_frac)
    got = total_frac if target == "total" else block_frac
    assert 0.25 < got and got >= 0.3 - 1e-9
    assert report.stages["train_seconds"] > 0
    ids = torch.randint(0, len(toy_tokenizer), (1, 12))
    with torch.no_grad():
        want = model(ids).logits
    out = tmp_path / "pruned"
    llmprune.save(model, toy_tokenizer, out, report)
    assert json.loads((out / "report.json").read_text())["export"]["kind"] == "layout"
    reloaded, _ = llmprune.load(out)
    assert count_parameters(reloaded) == report.params_after
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(remote(ids).logits, want, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_option_runs_on_cpu():
    model = build_tiny("llama", vocab_size=128)
    method = DISP(0.3, steps=2, autocast=True, log_every=1)
    report = method.run(PruneContext(model, get_adapter(model), torch.randint(0, 128, (3, 12)), progress=False))
    assert report.details["autocast_bf16"] is True
    assert all(torch.isfinite(torch.tensor(h["ce"])) for h in report.details["history"])
    assert DISP(0.3).config.autocast is None  # auto: on for CUDA with bf16 only


def test_bad_options_are_one_line_errors(toy_tokenizer):
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    for kw, match in [
        ({"target": "all"}, "option target=all"),
        ({"estimator": "x"}, "option estimator=x"),
        ({"steps": 0}, "steps"),
        ({"lam": -1.0}, "lam=-1.0"),
        ({"allow_empty": True}, "allow_empty"),
    ]:
        with pytest.raises(LlmpruneError, match=match):
            DISP(0.3, **kw)
    with pytest.raises(LlmpruneError, match="unknown option 'nonsense' for method disp"):
        llmprune.prune(model, toy_tokenizer, "disp", ratio=0.3, calib_samples=2, seqlen=16, nonsense=1)
    with pytest.raises(LlmpruneError, match="removes more than DISP can"):  # embeddings dominate the tiny model
        llmprune.prune(model, toy_tokenizer, "disp", ratio=0.85, calib_samples=2, seqlen=16, steps=1, progress=False)


def test_cli_disp(tiny_llama_dir, tmp_path):
    from llmprune.cli import main

    out = tmp_path / "out"
    rc = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "disp",
            "--ratio",
            "0.2",
            "--calib-samples",
            "2",
            "--seqlen",
            "16",
            "--method-args",
            "steps=2,lr=0.01,lam=4,target=block,offload=true",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["method"] == "disp" and rep["options"]["steps"] == 2 and rep["options"]["lambda"] == 4.0
    assert rep["options"]["target"] == "block" and rep["structured"]["achieved_ratio"] >= 0.2 - 1e-9
    assert rep["options"]["offload"] is True
    assert (
        main(
            [
                "prune",
                "--model",
                str(tiny_llama_dir),
                "--method",
                "disp",
                "--ratio",
                "0.2",
                "--method-args",
                "target=nope",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "prune",
                "--model",
                str(tiny_llama_dir),
                "--method",
                "disp",
                "--ratio",
                "0.2",
                "--method-args",
                "offload=true,checkpointing=false",
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "prune",
                "--model",
                str(tiny_llama_dir),
                "--method",
                "wanda-sp",
                "--ratio",
                "0.2",
                "--method-args",
                "lam=3",
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )


WORKER = Path(__file__).with_name("disp_dist_worker.py")


def test_torchrun_two_ranks_identical_hypernetwork(tmp_path):
    """Data-parallel over 2 CPU processes (gloo): all-reduced gradients keep the two
    hypernetworks identical while each rank trains on different windows."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(
            [str(WORKER.parent), str(WORKER.parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert states[0]["world_size"] == states[1]["world_size"] == 2
    assert states[0]["first_batch"] != states[1]["first_batch"]  # different data per rank
    for key, value in states[0]["hypernet"].items():
        assert torch.equal(value, states[1]["hypernet"][key]), key
    assert states[0]["sizes"] == states[1]["sizes"]
    init = DispHypernet(states[0]["vector_sizes"], seed=0).state_dict()
    assert any(not torch.equal(init[k], v) for k, v in states[0]["hypernet"].items())  # it trained
