"""Surgery equivalence (masked == physically pruned), export and reload, per family."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from llmprune.errors import LlmpruneError
from llmprune.models import count_parameters, get_adapter
from llmprune.surgery import StructuredPlan, apply_plan, block_widths
from tiny_models import FAMILIES, build_tiny

H = 64  # hidden size of the tiny models


def _plans(family: str) -> dict[str, dict]:
    gqa = family in ("llama", "mistral", "qwen2", "gemma3")
    plans = {
        "kv_heads+channels": {
            0: {"remove_kv_heads": [1], "remove_channels": [0, 3, 7, 100]},
            1: {"remove_channels": {"count": 30}},
        },
        "attention+mlp": {0: {"remove_attention": True}, 1: {"remove_mlp": True}},
        "block": {0: {"remove_block": True}, 1: {"remove_kv_heads": [0]}},
        "residual": {
            0: {
                "residual": {
                    "attn_in": list(range(0, H, 2)),
                    "attn_out": list(range(10, 50)),
                    "mlp_in": list(range(5, 60)),
                    "mlp_out": list(range(0, H, 3)),
                },
                "remove_kv_heads": [0],
            },
            1: {"residual": {"mlp_in": list(range(32))}, "remove_channels": [1, 2]},
        },
        "zero_heads": {1: {"remove_kv_heads": list(range(2 if gqa else 4))}},
    }
    if gqa:
        plans["query_heads"] = {0: {"remove_heads": [1, 3]}, 1: {"remove_heads": [0, 2], "remove_kv_heads": [1]}}
    return plans


CASES = [(f, name) for f in FAMILIES for name in _plans(f)]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family,plan_name", CASES)
def test_masked_equals_pruned(family, plan_name):
    model = build_tiny(family)
    plan = StructuredPlan.from_dict({"layers": _plans(family)[plan_name]})
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    dense_logits = _logits(model, ids)
    masked = copy.deepcopy(model)
    apply_plan(get_adapter(masked), plan, masked=True)
    before = count_parameters(model)
    apply_plan(get_adapter(model), plan)
    assert count_parameters(model) < before
    want, got = _logits(masked, ids), _logits(model, ids)
    assert not torch.allclose(want, dense_logits, atol=1e-4), "the plan changed nothing"
    rel = (want - got).abs().max() / want.abs().max()
    assert rel <= 1e-5, f"relative logit difference {rel:.2e}"
    # generation with the KV cache follows the same tokens
    g1 = masked.generate(ids[:1, :6], max_new_tokens=6, do_sample=False)
    g2 = model.generate(ids[:1, :6], max_new_tokens=6, do_sample=False)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("family", FAMILIES)
def test_heterogeneous_roundtrip(family, tmp_path):
    from transformers import AutoModelForCausalLM

    import llmprune

    model = build_tiny(family)
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": _plans(family)["residual"]}))
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": {1: {"remove_attention": True}}}))
    ids = torch.randint(0, 128, (1, 10))
    want = _logits(model, ids)
    out = tmp_path / "pruned"
    llmprune.save(model, None, out, {"method": "manual"})
    cfg = json.loads((out / "config.json").read_text())
    assert "llmprune_layout" in cfg and (out / "modeling_llmprune.py").is_file()
    assert json.loads((out / "report.json").read_text())["export"]["kind"] == "layout"
    from llmprune.models.loading import load_model_and_tokenizer as _unused  # noqa: F401
    from llmprune.models.checkpoint import causal_lm_class

    reloaded = causal_lm_class(out).from_pretrained(out)
    torch.testing.assert_close(_logits(reloaded.eval(), ids), want, rtol=1e-5, atol=1e-5)
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    torch.testing.assert_close(_logits(remote, ids), want, rtol=1e-5, atol=1e-5)
    assert block_widths(get_adapter(reloaded)) == block_widths(get_adapter(model))


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi", "gemma3"])
def test_uniform_widths_save_a_stock_config(family, tmp_path):
    from transformers import AutoModelForCausalLM

    import llmprune

    model = build_tiny(family)
    kv = get_adapter(model).attention(get_adapter(model).blocks()[0]).num_kv_heads
    plan = {
        i: {
            "remove_kv_heads": [kv - 1],
            "remove_channels": list(range(0, 128, 4)),
        }
        for i in range(2)
    }
    plan[1]["remove_block"] = True
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": plan}))
    ids = torch.randint(0, 128, (1, 10))
    want = _logits(model, ids)
    out = tmp_path / "pruned"
    llmprune.save(model, None, out, {"method": "manual"})
    cfg = json.loads((out / "config.json").read_text())
    assert "llmprune_layout" not in cfg and not (out / "modeling_llmprune.py").exists()
    assert cfg["num_hidden_layers"] == 1
    stock = AutoModelForCausalLM.from_pretrained(out).eval()  # no remote code
    torch.testing.assert_close(_logits(stock, ids), want, rtol=1e-5, atol=1e-5)


def test_mismatched_checkpoint_names_the_layer(tmp_path):
    from safetensors.torch import load_file, save_file

    import llmprune

    model = build_tiny("llama")
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": {1: {"remove_channels": [1, 2, 3]}}}))
    out = tmp_path / "pruned"
    llmprune.save(model, None, out, {"method": "manual"})
    state = load_file(str(out / "model.safetensors"))
    key = "model.layers.1.mlp.down_proj.weight"
    state[key] = state[key][:, :-1].contiguous()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LlmpruneError, match=r"model\.layers\.1\.mlp\.down_proj\.weight \(layer 1\)"):
        llmprune.load(out)


@pytest.mark.parametrize(
    "edits,match",
    [
        ({0: {"remove_kv_heads": [5]}}, "out of range"),
        ({0: {"remove_heads": [0]}}, "same"),
        ({7: {"remove_mlp": True}}, "has 2 blocks"),
        ({0: {"remove_block": True}, 1: {"remove_block": True}}, "every block"),
        ({0: {"prune_everything": True}}, "unknown keys"),
    ],
)
def test_bad_plans(edits, match):
    model = build_tiny("llama")
    with pytest.raises(LlmpruneError, match=match):
        apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": edits}))
