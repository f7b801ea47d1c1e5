"""vLLM as the judge of the servable exports: its greedy tokens equal transformers' for
dense, uniform-structured and heterogeneous (DeciLM ``block_configs``) exports of
SmolLM2-135M and of a tiny Qwen2-style model (q/k/v biases, GQA).

vLLM lives in its own environment (``make vllm-env`` builds ``.venv-vllm``; ``make
test-vllm`` runs this file with its python). Every vLLM generation runs in a subprocess
of that python (``tests/vllm_generate.py``, one process serving all the models in turn);
the transformers reference runs here. Skipped when ``.venv-vllm`` is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
pytestmark = [
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(),
        reason=".venv-vllm is absent: `make vllm-env` builds vLLM's CPU "
        "environment and `make test-vllm` runs these tests",
    ),
    pytest.mark.timeout(3600),
]

NEW_TOKENS = 32
CALIB = dict(calib_samples=4, seqlen=128, progress=False)
#: name -> (family, how it is pruned, the export kind it must get)
CASES = {
    "smollm2-dense": ("smollm2", "magnitude 30 % (unstructured)", "dense"),
    "smollm2-uniform": ("smollm2", "sobp 20 %, global_selection=false (same counts per block), stages 1-2", "stock"),
    "smollm2-shortgpt": ("smollm2", "shortgpt 20 % (whole blocks)", "dense"),
    "smollm2-pg-servable": ("smollm2", "pg 30 %, budget=params, units=servable (channels, blocks)", "block_configs"),
    "smollm2-sobp-servable": (
        "smollm2",
        "sobp 30 %, units=servable (channels, attention, MLP), stages 1-3",
        "block_configs",
    ),
    "smollm2-manual": ("smollm2", "manual plan: MLP widths, removed attention/MLP/block", "block_configs"),
    "qwen2-dense": ("qwen2", "unpruned", "dense"),
    "qwen2-uniform": ("qwen2", "manual plan: 64 channels per block", "stock"),
    "qwen2-manual": ("qwen2", "manual plan: MLP widths, removed attention/MLP/block", "block_configs"),
    "qwen2-sobp-servable": ("qwen2", "sobp 30 %, units=servable, toy-tokenizer calibration", "block_configs"),
    "qwen2-pg-servable": (
        "qwen2",
        "pg 30 %, budget=params, units=servable, toy-tokenizer calibration",
        "block_configs",
    ),
}
#: the structured runs of the servable cases (ratio 0.3, units=servable), by method
SERVABLE_RUNS = {
    "sobp": dict(ratio="0.3", units="servable"),
    "pg": dict(ratio="0.3", budget="params", units="servable", steps=4, keep_best=0, init_samples=4),
}
SMOL_PLAN = {
    0: {"remove_channels": {"count": 200}},
    3: {"remove_channels": {"count": 400}},
    5: {"remove_attention": True},
    8: {"remove_channels": {"count": 600}},
    10: {"remove_mlp": True},
    20: {"remove_block": True},
    25: {"remove_channels": {"count": 100}},
}
QWEN_PLAN = {
    0: {"remove_channels": {"count": 30}},
    1: {"remove_attention": True, "remove_channels": {"count": 100}},
    2: {"remove_mlp": True},
    3: {"remove_block": True},
    4: {"remove_attention": True},
}


def _smollm2(name: str):
    import llmprune
    from llmprune import api
    from llmprune.models import get_adapter
    from llmprune.surgery.plan import StructuredPlan, apply_plan

    model, tok = llmprune.load()
    if name == "smollm2-dense":
        report = api.prune(model, tok, "magnitude", ratio="0.3", **CALIB)
    elif name == "smollm2-uniform":
        report = api.prune(
            model, tok, "sobp", ratio="0.2", global_selection=False, refine=True, reconstruct=False, **CALIB
        )
    elif name == "smollm2-shortgpt":
        report = api.prune(model, tok, "shortgpt", ratio="0.2", **CALIB)
    elif name.endswith("-servable"):
        method = name.split("-")[1]
        report = api.prune(model, tok, method, **SERVABLE_RUNS[method], **CALIB)
    else:
        apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": SMOL_PLAN}))
        report = {"method": "manual"}
    return model, tok, report


def _qwen2(name: str, tokenizer):
    from tiny_models import build_tiny_servable

    import llmprune
    from llmprune.models import get_adapter
    from llmprune.surgery.plan import StructuredPlan, apply_plan

    if name.endswith("-servable"):
        model = build_tiny_servable("qwen2", vocab_size=len(tokenizer))
        method = name.split("-")[1]
        report = llmprune.prune(model, tokenizer, method, **SERVABLE_RUNS[method], **CALIB)
        return model, tokenizer, report
    model = build_tiny_servable("qwen2")
    plan = {
        "qwen2-dense": {},
        "qwen2-manual": QWEN_PLAN,
        "qwen2-uniform": {i: {"remove_channels": {"count": 64}} for i in range(6)},
    }[name]
    apply_plan(get_adapter(model), StructuredPlan.from_dict({"layers": plan}))
    return model, None, {"method": "manual"}


def _prompts(family: str, n: int = 8, length: int = 16) -> list[list[int]]:
    if family == "qwen2":
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, length), generator=g).tolist()
    from llmprune.data import load_text
    from llmprune.models.loading import default_model_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(default_model_dir())
    lines = [line.strip() for line in load_text("wikitext2", "test").splitlines() if len(line.strip()) > 200]
    return [tok(line)["input_ids"][:length] for line in lines[:n]]


def _greedy(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    """transformers' greedy continuation: full forward passes, no KV cache (the plainest reference)."""
    x = torch.tensor(prompts)
    with torch.no_grad():
        for _ in range(new_tokens):
            x = torch.cat([x, model(x).logits[:, -1:].argmax(-1)], 1)
    return x[:, len(prompts[0]) :].tolist()


@pytest.fixture(scope="module")
def exports(request, tmp_path_factory, toy_tokenizer) -> dict[str, dict]:
    """Every selected case (``-k``) pruned, saved by llmprune (format chosen automatically),
    with its prompts."""
    import llmprune

    selected = {item.callspec.params.get("name") for item in request.session.items if hasattr(item, "callspec")}
    root = tmp_path_factory.mktemp("vllm")
    out = {}
    for name, (family, _, _) in CASES.items():
        if name not in selected:
            continue
        model, tok, report = _smollm2(name) if family == "smollm2" else _qwen2(name, toy_tokenizer)
        path = root / name
        llmprune.save(model, tok, path, report)
        kind = json.loads((path / "report.json").read_text())["export"]["kind"]  # the format llmprune wrote
        out[name] = {
            "dir": str(path),
            "kind": kind,
            "prompts": _prompts(family),
            "max_model_len": min(512, model.config.max_position_embeddings),
        }
    return out


@pytest.fixture(scope="module")
def served(exports, tmp_path_factory) -> dict[str, dict]:
    """vLLM's greedy tokens for every export, from one subprocess under .venv-vllm's python."""
    tmp = tmp_path_factory.mktemp("vllm-io")
    names = list(exports)
    request = {
        "jobs": [
            {
                "model": exports[n]["dir"],
                "prompts": exports[n]["prompts"],
                "max_tokens": NEW_TOKENS,
                "max_model_len": exports[n]["max_model_len"],
            }
            for n in names
        ]
    }
    (tmp / "request.json").write_text(json.dumps(request))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [
            str(VLLM_PYTHON),
            str(REPO / "tests" / "vllm_generate.py"),
            str(tmp / "request.json"),
            str(tmp / "result.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    if proc.returncode != 0 or not (tmp / "result.json").exists():
        pytest.fail(f"vLLM worker failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    return dict(zip(names, json.loads((tmp / "result.json").read_text())))


@pytest.mark.parametrize("name", list(CASES))
def test_vllm_greedy_tokens_equal_transformers(name, exports, served):
    import llmprune

    family, how, kind = CASES[name]
    export = exports[name]
    assert export["kind"] == kind, f"{name} ({how}) was written as {export['kind']}, expected {kind}"
    result = served[name]
    assert "error" not in result, f"vLLM could not serve {name} ({how}): {result.get('error')}"
    model, _ = llmprune.load(export["dir"])
    want = _greedy(model, export["prompts"], NEW_TOKENS)
    assert result["tokens"] == want
