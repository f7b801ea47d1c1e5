"""Checkpoint formats: which one a pruned model is written in, the DeciLM
``block_configs`` format (vLLM-servable) reloading with identical logits through
``llmprune.load`` and through its own shipped config/modeling files, ``llmprune export``
conversions, and their error paths."""

from __future__ import annotations

import ast
import json

import pytest
import torch

import llmprune
from llmprune.cli import main
from llmprune.errors import LlmpruneError
from llmprune.models.decilm import CONFIG_FILE, MODELING_FILE
from llmprune.export.layout import plan_export
from llmprune.export.save import save_pruned
from llmprune.models import get_adapter
from llmprune.surgery.plan import StructuredPlan, apply_plan


def _tiny(family: str, layers: int = 5, vocab: int = 128, seed: int = 0):
    """A tiny random model of ``family`` with ``layers`` blocks (the fixtures have 2)."""
    from transformers import AutoModelForCausalLM

    from tiny_models import _configs

    config = _configs(vocab)[family]
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = (config.layer_types * layers)[:layers]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _pruned(family: str, layers: dict, n: int = 5):
    model = _tiny(family, n)
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": layers}))
    return model


HETERO = {
    0: {"remove_channels": {"count": 20}},
    1: {"remove_attention": True},
    2: {"remove_mlp": True},
    3: {"remove_block": True},
    4: {"remove_channels": {"count": 50}},
}


@pytest.mark.parametrize(
    "layers, kind, reason",
    [
        ({}, "dense", None),
        ({1: {"remove_block": True}}, "dense", None),  # ShortGPT-style: fewer blocks, stock config
        ({i: {"remove_channels": {"count": 32}} for i in range(5)}, "stock", None),
        ({i: {"remove_kv_heads": [1]} for i in range(5)}, "stock", None),
        ({0: {"remove_channels": {"count": 10}}, 3: {"remove_channels": {"count": 40}}}, "block_configs", None),
        ({2: {"remove_attention": True}}, "block_configs", None),
        ({1: {"remove_attention": True}, 4: {"remove_attention": True, "remove_mlp": True}}, "block_configs", None),
        ({0: {"remove_attention": True, "remove_mlp": True}, 2: {"remove_attention": True}}, "block_configs", None),
        ({0: {"remove_attention": True}}, "layout", "block 0 keeps its MLP but no attention and no earlier block"),
        ({2: {"remove_mlp": True}}, "block_configs", None),
        (HETERO, "block_configs", None),
        (
            {0: {"remove_channels": {"count": 10}}, 2: {"remove_heads": [1, 3]}},
            "layout",
            "block 2 removes query heads (2 of 4 kept); vLLM's per-layer format keeps the query-head count global",
        ),
        ({3: {"remove_kv_heads": [0]}}, "layout", "block 3 removes query heads"),
        ({1: {"residual": {"mlp_in": list(range(48))}}}, "layout", "block 1 reads or writes a subset of the residual"),
    ],
)
def test_format_choice_per_structure(layers, kind, reason):
    model = _pruned("llama", layers)
    plan = plan_export(model, get_adapter(model))
    assert plan.kind == kind
    if reason is None:
        assert plan.vllm_obstacle is None
    else:
        assert plan.vllm_obstacle.startswith(reason)


@pytest.mark.parametrize(
    "family, reason",
    [
        ("opt", "the opt family is not LLaMA-style"),
        ("phi", "the phi family is not LLaMA-style"),
        ("gemma3", "the gemma3_text family is not LLaMA-style"),
    ],
)
def test_other_families_keep_the_layout_and_say_why(family, reason):
    model = _pruned(family, {0: {"remove_channels": {"count": 10}}, 1: {"remove_mlp": True}}, n=3)
    plan = plan_export(model, get_adapter(model))
    assert plan.kind == "layout" and plan.vllm_obstacle.startswith(reason)


def test_qwen2_stock_with_fewer_heads_is_not_vllm_servable():
    from tiny_models import build_tiny_servable

    model = build_tiny_servable("qwen2", layers=2)
    apply_plan(
        get_adapter(model), StructuredPlan.from_dict({"layers": {i: {"remove_kv_heads": [1]} for i in range(2)}})
    )
    plan = plan_export(model, get_adapter(model))
    assert plan.kind == "stock" and plan.vllm_obstacle.startswith("vLLM's Qwen2 derives head_dim")


def test_sliding_window_and_kept_biases_are_not_expressible():
    model = _pruned("llama", {0: {"remove_channels": {"count": 10}}})
    model.config.layer_types = ["sliding_attention"] + ["full_attention"] * 4
    assert "sliding-window" in plan_export(model, get_adapter(model)).vllm_obstacle
    model = _pruned("llama", {0: {"remove_channels": {"count": 10}}})
    blocks = get_adapter(model).blocks()
    blocks[1].mlp.down_proj.bias = torch.nn.Parameter(torch.zeros(64))  # a bias only block 1 has
    assert (
        plan_export(model, get_adapter(model)).vllm_obstacle == "block 1 has different MLP biases than the other blocks"
    )


def _load_eager(path):
    model, _ = llmprune.load(path)
    model.config._attn_implementation = "eager"  # as the tiny models were built: bit-identical logits
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_block_configs_reload_identical_logits(tmp_path, toy_tokenizer, family):
    """llmprune.load and AutoModelForCausalLM(trust_remote_code=True) on the written
    checkpoint give the pruned model's logits exactly, and the same cached greedy tokens."""
    from transformers import AutoModelForCausalLM

    model = _pruned(
        family,
        {
            0: {"remove_attention": True, "remove_mlp": True},
            1: {"remove_channels": {"count": 20}},
            2: {"remove_mlp": True},
            3: {"remove_block": True},
            4: {"remove_attention": True, "remove_channels": {"count": 50}},
        },
        n=5,
    )
    ids = torch.randint(0, 128, (2, 10))
    want = _logits(model, ids)
    out = tmp_path / "m"
    report: dict = {"method": "manual"}
    llmprune.save(model, toy_tokenizer, out, report)
    assert report["export"]["kind"] == "block_configs" and report["export"]["vllm"]
    assert json.loads((out / "report.json").read_text())["export"]["kind"] == "block_configs"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DeciLMForCausalLM"] and config["model_type"] == "nemotron-nas"
    assert [b["ffn"]["intermediate_size"] for b in config["block_configs"]] == [None, 108, None, 78]
    assert [b["attention"]["no_op"] for b in config["block_configs"]] == [True, False, False, True]
    assert config["block_configs"][2]["attention"]["n_heads_in_group"] == 2
    assert config.get("qkv_bias", False) == (family == "qwen2")

    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("model.layers.0.") for k in keys)
    assert not any(k.startswith(("model.layers.2.mlp.", "model.layers.2.post_attention_layernorm")) for k in keys)
    assert {f"model.layers.3.mlp.{n}.weight" for n in ("gate_proj", "up_proj", "down_proj")} <= keys

    ours = _load_eager(out)
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, attn_implementation="eager").eval()
    assert type(remote).__name__ == "LlmpruneDeciLMForCausalLM"
    assert torch.equal(_logits(ours, ids), want)
    assert torch.equal(_logits(remote, ids), want)
    gen = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate(ids[:1], **gen), remote.generate(ids[:1], **gen))
    assert torch.equal(model.generate(ids[:1], **gen), remote.generate(ids[:1], **gen))


def test_shipped_code_is_self_contained(tmp_path, toy_tokenizer):
    model = _pruned("llama", HETERO)
    out = tmp_path / "m"
    llmprune.save(model, toy_tokenizer, out, {"method": "manual"})
    for name in (CONFIG_FILE, MODELING_FILE):
        tree = ast.parse((out / name).read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
        }
        assert roots <= {"torch", "transformers", "__future__", "typing"}, (name, roots)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llmprune_decilm.LlmpruneDeciLMConfig",
        "AutoModelForCausalLM": "modeling_llmprune_decilm.LlmpruneDeciLMForCausalLM",
    }


def test_block_configs_attribute_access_like_serving_engines_read_it(tmp_path, toy_tokenizer):
    from transformers import AutoConfig

    out = tmp_path / "m"
    llmprune.save(_pruned("qwen2", HETERO), toy_tokenizer, out, {"method": "manual"})
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    blocks = config.block_configs
    assert blocks[1].attention.no_op and not blocks[0].attention.no_op
    assert blocks[2].ffn.no_op and blocks[0].ffn.intermediate_size == 108
    assert not hasattr(blocks[0].ffn, "ffn_mult") and config.qkv_bias and not config.attention_bias
    assert json.loads(config.to_json_string())["block_configs"][3]["ffn"]["intermediate_size"] == 78


def test_export_converts_between_formats(tmp_path, toy_tokenizer, capsys):
    model = _pruned("llama", HETERO)
    ids = torch.randint(0, 128, (1, 9))
    want = _logits(model, ids)
    src = tmp_path / "src"
    llmprune.save(model, toy_tokenizer, src, {"method": "manual"})
    assert main(["export", str(src), "--format", "layout", "--out", str(tmp_path / "lay")]) == 0
    out = capsys.readouterr().out
    assert "format: llmprune layout" in out and "not servable by vLLM" in out
    report = json.loads((tmp_path / "lay" / "report.json").read_text())
    assert report["export"]["kind"] == "layout" and report["converted_from"]["format"] == "block_configs"
    assert report["method"] == "manual"
    assert main(["export", str(tmp_path / "lay"), "--format", "vllm", "--out", str(tmp_path / "back")]) == 0
    assert "format: DeciLM block_configs" in capsys.readouterr().out
    for d in ("lay", "back"):
        assert torch.equal(_logits(_load_eager(tmp_path / d), ids), want)
    assert json.loads((tmp_path / "back" / "config.json").read_text()) == json.loads((src / "config.json").read_text())


def test_export_uniform_model_to_every_format(tmp_path, toy_tokenizer):
    model = _pruned("llama", {i: {"remove_channels": {"count": 32}} for i in range(5)})
    ids = torch.randint(0, 128, (1, 9))
    want = _logits(model, ids)
    src = tmp_path / "src"
    report: dict = {"method": "manual"}
    llmprune.save(model, toy_tokenizer, src, report)
    assert report["export"]["kind"] == "stock" and report["export"]["vllm"]
    # reloaded from a stock config, the model has the shapes its config says: written as it is ("dense")
    for fmt, kind in (("vllm", "block_configs"), ("layout", "layout"), ("stock", "dense")):
        assert main(["export", str(src), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        assert json.loads((tmp_path / fmt / "report.json").read_text())["export"]["kind"] == kind
        assert torch.equal(_logits(_load_eager(tmp_path / fmt), ids), want)


def test_prune_prints_the_format(tiny_llama_dir, tmp_path, capsys):
    spec = tmp_path / "plan.yaml"
    spec.write_text("layers:\n  0: {remove_heads: [1, 3]}\n")
    assert (
        main(
            [
                "prune",
                "--model",
                str(tiny_llama_dir),
                "--method",
                "manual",
                "--spec",
                str(spec),
                "--out",
                str(tmp_path / "p"),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "format: llmprune layout" in out
    assert "not servable by vLLM: block 0 removes query heads (2 of 4 kept)" in out
    export = json.loads((tmp_path / "p" / "report.json").read_text())["export"]
    assert export["kind"] == "layout" and not export["vllm"] and export["vllm_obstacle"].startswith("block 0 removes")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    err = err.splitlines()[-1]  # (after transformers' weight-loading progress bar, if any)
    assert err.startswith("error: ")
    return err


def test_export_error_paths_write_nothing(tmp_path, toy_tokenizer, capsys):
    hetero = tmp_path / "hetero"
    llmprune.save(
        _pruned("llama", {0: {"remove_heads": [1, 3]}, 1: {"remove_channels": {"count": 5}}}),
        toy_tokenizer,
        hetero,
        {"method": "manual"},
    )
    out = tmp_path / "out"
    err = _error(capsys, ["export", str(hetero), "--format", "vllm", "--out", str(out)])
    assert "cannot write the vLLM format: block 0 removes query heads" in err
    err = _error(capsys, ["export", str(hetero), "--format", "stock", "--out", str(out)])
    assert "cannot write a stock config: block 1 has 4 query heads but block 0 has 2" in err
    assert "unknown --format 'onnx'" in _error(capsys, ["export", str(hetero), "--format", "onnx", "--out", str(out)])
    assert "is not a model directory" in _error(
        capsys, ["export", str(tmp_path / "nope"), "--format", "vllm", "--out", str(out)]
    )
    assert "is the source directory" in _error(
        capsys, ["export", str(hetero), "--format", "layout", "--out", str(hetero), "--force"]
    )
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["hetero"]
    out.mkdir()
    assert "already exists" in _error(capsys, ["export", str(hetero), "--format", "layout", "--out", str(out)])
    assert list(out.iterdir()) == []


def test_save_refuses_a_format_that_does_not_fit(tmp_path):
    model = _pruned("llama", {2: {"remove_heads": [0, 2]}})
    with pytest.raises(LlmpruneError, match="block 2 removes query heads"):
        save_pruned(model, None, tmp_path / "x", None, fmt="vllm")
    assert not (tmp_path / "x").exists()


def test_block_configs_checkpoint_with_wrong_tensor_is_refused(tmp_path, toy_tokenizer):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "m"
    llmprune.save(_pruned("llama", HETERO), toy_tokenizer, out, {"method": "manual"})
    tensors = load_file(out / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = tensors["model.layers.0.mlp.up_proj.weight"][:100]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlmpruneError, match=r"tensor model.layers.0.mlp.up_proj.weight \(layer 0\) has shape"):
        llmprune.load(out)
    del tensors["model.layers.0.mlp.up_proj.weight"]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LlmpruneError, match="is missing from the checkpoint"):
        llmprune.load(out)
