"""Unit families of the structured methods (``units=``): parsing and refusals, the
selection rule for whole modules, and that ``units=servable`` results are expressible
in vLLM's per-layer format (``block_configs``) and reload with the same logits."""

from __future__ import annotations

import random

import pytest
import torch

import llmprune
from llmprune.errors import LlmpruneError
from llmprune.export.layout import plan_export
from llmprune.methods.units import BlockInfo, Unit, select_global
from llmprune.models import get_adapter
from tiny_models import build_tiny_servable

KW = dict(calib_samples=2, seqlen=16, progress=False)


@pytest.mark.parametrize(
    "method, units, message",
    [
        ("sobp", "heads", "unknown unit family 'heads'"),
        ("wanda-sp", "attention", "wanda-sp cannot remove unit family 'attention'"),
        ("llm-pruner", "mlp,channels", "llm-pruner cannot remove unit family 'mlp'"),
        ("shortgpt", "channels", "shortgpt cannot remove unit family 'channels'"),
        ("pg", "attention", "pg cannot search unit family 'attention'"),
        ("flap", "servable", "flap units=servable: bias compensation"),
    ],
)
def test_unsupported_units_are_one_line_errors(toy_tokenizer, method, units, message):
    from tiny_models import build_tiny

    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError) as err:
        llmprune.prune(model, toy_tokenizer, method, ratio=0.2, units=units, **KW)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_uniform_sobp_refuses_whole_modules(toy_tokenizer):
    from tiny_models import build_tiny

    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    with pytest.raises(LlmpruneError, match="cannot remove whole attention or MLP"):
        llmprune.prune(model, toy_tokenizer, "sobp", ratio=0.2, units="servable", global_selection=False, **KW)


def test_select_global_never_mixes_a_whole_module_with_its_parts():
    """Random scores over groups, channels and whole attention/MLP units of 4 blocks: the
    selection is the brute-force greedy walk with the exclusion rule, and no block loses
    both a whole module and some of its parts."""
    rng = random.Random(0)
    info = [BlockInfo(groups=2, channels=6, group_cost=10, channel_cost=4) for _ in range(4)]
    # a unit is refused while its block has lost any of these (floors: 1 group, 1 channel kept)
    blocked_by = {"group": {"attention"}, "attention": {"group", "attention"}, "channel": {"mlp"}}
    blocked_by["mlp"] = {"channel", "mlp"}
    floor = {"group": 2, "channel": 6}
    for _ in range(200):
        units = []
        for b in range(4):
            units += [Unit(b, "group", g, 10, rng.random()) for g in range(2)]
            units += [Unit(b, "channel", c, 4, rng.random()) for c in range(6)]
            units.append(Unit(b, "attention", 0, 20, rng.random() * 3))
            units.append(Unit(b, "mlp", 0, 24, rng.random() * 3))
        target = rng.uniform(10, 120)
        chosen = select_global(units, info, target / 176, target, allow_empty=False)
        # brute force: the same walk written out plainly (slack: half the cheapest channel)
        taken: list[Unit] = []
        total = 0
        for u in sorted(units, key=lambda u: (u.score, u.block, u.index)):
            if total >= target - 2:
                break
            if total + u.cost > target + 2:
                continue
            mine = [t.kind for t in taken if t.block == u.block]
            if blocked_by[u.kind] & set(mine):
                continue
            if u.kind in floor and mine.count(u.kind) + 1 >= floor[u.kind]:
                continue
            taken.append(u)
            total += u.cost
        assert [(u.block, u.kind, u.index) for u in chosen] == [(u.block, u.kind, u.index) for u in taken]
        for b in range(4):
            kinds = {u.kind for u in chosen if u.block == b}
            assert not ({"attention", "group"} <= kinds or {"mlp", "channel"} <= kinds)


def _servable_run(tokenizer, method, **options):
    model = build_tiny_servable("llama", vocab_size=len(tokenizer))
    report = llmprune.prune(model, tokenizer, method, **KW, **options)
    return model, report


@pytest.mark.parametrize(
    "method, options",
    [
        ("sobp", dict(ratio=0.3, units="servable", reconstruct=False)),
        ("sobp", dict(ratio=0.4, units="attention,mlp", reconstruct=False)),
        ("flap", dict(ratio=0.3, units="servable", bias_compensation=False)),
        ("wanda-sp", dict(ratio=0.3, units="servable")),
        ("llm-pruner", dict(ratio=0.3, units="servable")),
        ("shortgpt", dict(ratio=0.34, units="servable")),  # 2 of 6 blocks
        ("pg", dict(ratio=0.3, units="servable", budget="params", steps=2, init_samples=2, keep_best=0)),
    ],
)
def test_servable_units_give_a_block_configs_model(toy_tokenizer, tmp_path, method, options):
    model, report = _servable_run(toy_tokenizer, method, **options)
    adapter = get_adapter(model)
    plan = plan_export(model, adapter)
    assert plan.vllm_obstacle is None, plan.vllm_obstacle
    assert report.structured.removed["groups"] == 0
    assert abs(report.structured.achieved_ratio - options["ratio"]) < 0.12
    att = [adapter.attention(b) for b in adapter.blocks()]
    assert att[0] is not None  # block 0 keeps its attention (vLLM starts the residual there)
    assert all(a is None or a.num_kv_heads == 2 for a in att)
    if options.get("units") == "attention,mlp":
        assert report.structured.removed["channels"] == 0
        assert report.structured.removed.get("attention") or report.structured.removed.get("mlp")
    out = tmp_path / "m"
    llmprune.save(model, toy_tokenizer, out, report)
    back, _ = llmprune.load(out)
    ids = torch.randint(0, len(toy_tokenizer), (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, back(ids).logits, atol=1e-5, rtol=1e-5)


def test_cli_refuses_an_unsupported_family_before_loading(capsys, tmp_path):
    """The model path does not exist: the refusal must come from the method, first."""
    from llmprune.cli import main

    args = ["prune", "--model", str(tmp_path / "no-model"), "--method", "wanda-sp", "--ratio", "0.2"]
    code = main(args + ["--method-args", "units=attention", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "wanda-sp cannot remove unit family 'attention'" in err and "(servable: channels)" in err
    assert not (tmp_path / "o").exists()
