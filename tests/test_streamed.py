"""Streamed pruning from disk (llmprune.prune_streamed): equal to the in-memory pipeline
bit for bit, resumable after a kill with the same result, precision rules, error paths."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from llmprune.errors import LlmpruneError

REPO = Path(__file__).resolve().parents[1]
CALIB = dict(calib_samples=4, seqlen=32)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for file in sorted(glob.glob(str(path / "*.safetensors"))):
        out.update(load_file(file))
    return out


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].dtype == tb[k].dtype, k
        assert torch.equal(ta[k], tb[k]), k


@pytest.fixture(scope="module")
def deep_llama_dir(tmp_path_factory, toy_tokenizer) -> Path:
    """A 4-block tiny LLaMA (so that a run can be killed in the middle)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(toy_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("deep-llama")
    model.save_pretrained(path, max_shard_size="100KB")  # several input shards, with an index
    toy_tokenizer.save_pretrained(path)
    assert (path / "model.safetensors.index.json").is_file()
    return path


@pytest.mark.parametrize(
    "method,setting,activations",
    [
        ("wanda", {"ratio": 0.5}, "memory"),
        ("sparsegpt", {"ratio": 0.5}, "disk"),
        ("magnitude", {"pattern": "2:4"}, "memory"),
        ("mrp", {"ratio": 0.5}, "memory"),
        ("wanda", {"ratio": 0.5, "update": "sparsegpt"}, "disk"),
    ],
)
def test_streamed_equals_in_memory_prune(tiny_llama_dir, tmp_path, method, setting, activations):
    """Same reads, same capture, same BlockRunner, same prune_weight: identical tensors."""
    report = llmprune.prune_streamed(
        tiny_llama_dir, method, tmp_path / "streamed", activations=activations, progress=False, **setting, **CALIB
    )
    model, tok = llmprune.load(tiny_llama_dir)
    ref = llmprune.prune(model, tok, method, progress=False, **setting, **CALIB)
    llmprune.save(model, tok, tmp_path / "memory", ref)
    _assert_same_tensors(tmp_path / "streamed", tmp_path / "memory")
    assert report["block_sparsity"] == ref.unstructured.block_sparsity
    assert report["params_after"] == ref.params_after and report["params_before"] == ref.params_before
    assert [(e["block"], e["linear"], e["sparsity"]) for e in report["layers"]] == [
        (e["block"], e["linear"], e["sparsity"]) for e in ref.unstructured.layers
    ]
    assert json.loads((tmp_path / "streamed" / "report.json").read_text())["method"] == method
    # a normal checkpoint: llmprune.load and transformers read it, same logits as the in-memory model
    loaded, _ = llmprune.load(tmp_path / "streamed")
    ids = torch.randint(0, len(tok), (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert not list(tmp_path.glob(".*partial*"))


def test_streamed_multi_shard_input_untied_head(deep_llama_dir, tmp_path):
    report = llmprune.prune_streamed(deep_llama_dir, "wanda", tmp_path / "s", ratio=0.5, progress=False, **CALIB)
    model, tok = llmprune.load(deep_llama_dir)
    llmprune.prune(model, tok, "wanda", ratio=0.5, progress=False, **CALIB)
    out = _tensors(tmp_path / "s")
    assert "lm_head.weight" in out  # untied head written once, from the outer shard
    for k, v in model.state_dict().items():
        assert torch.equal(out[k], v), k
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(out) and len(set(index["weight_map"].values())) == 5
    assert report["streamed"]["blocks"] == 4


_KILL = """
import os, signal, sys
sys.path.insert(0, {src!r})
import llmprune

def done(i):
    if i == {k}:
        os.kill(os.getpid(), signal.SIGKILL)

llmprune.prune_streamed({model!r}, "sparsegpt", {out!r}, ratio=0.5, calib_samples=4, seqlen=32,
                        activations={acts!r}, progress=False, on_block_done=done)
"""


@pytest.mark.parametrize("activations", ["memory", "disk"])
def test_resume_after_kill_equals_uninterrupted(deep_llama_dir, tmp_path, activations):
    out = tmp_path / "out"
    script = _KILL.format(src=str(REPO / "src"), k=1, model=str(deep_llama_dir), out=str(out), acts=activations)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILLed after block 1 was committed
    assert not out.exists()
    partial = tmp_path / ".out.partial"
    assert (partial / "state" / "progress.json").is_file()
    assert json.loads((partial / "state" / "progress.json").read_text())["done"] == 2
    report = llmprune.prune_streamed(
        deep_llama_dir, "sparsegpt", out, ratio=0.5, activations=activations, progress=False, **CALIB
    )
    assert report["streamed"]["resumed_from_block"] == 2
    assert len(report["layers"]) == 4 * 7
    whole = llmprune.prune_streamed(
        deep_llama_dir, "sparsegpt", tmp_path / "whole", ratio=0.5, activations=activations, progress=False, **CALIB
    )
    assert whole["streamed"]["resumed_from_block"] == 0
    _assert_same_tensors(out, tmp_path / "whole")
    assert report["layers"] == whole["layers"]
    assert not partial.exists() and not (out / "state").exists()


def test_resume_refuses_other_settings_and_restarts_without_resume(deep_llama_dir, tmp_path):
    out = tmp_path / "out"

    def stop(i):
        if i == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llmprune.prune_streamed(deep_llama_dir, "wanda", out, ratio=0.5, progress=False, on_block_done=stop, **CALIB)
    with pytest.raises(LlmpruneError, match="other settings.*ratio"):
        llmprune.prune_streamed(deep_llama_dir, "wanda", out, ratio=0.6, progress=False, **CALIB)
    report = llmprune.prune_streamed(deep_llama_dir, "wanda", out, ratio=0.6, resume=False, progress=False, **CALIB)
    assert report["streamed"]["resumed_from_block"] == 0 and abs(report["block_sparsity"] - 0.6) < 0.01


def test_bfloat16_stream_keeps_statistics_and_factorisations_out_of_half(deep_llama_dir, tmp_path, monkeypatch):
    """bf16 blocks: Hessians float32, norms float64, every Cholesky in float32/float64."""
    from llmprune.engine import stats as stats_mod

    seen: list[torch.dtype] = []
    chol = torch.linalg.cholesky

    def spy(A, *args, **kwargs):
        seen.append(A.dtype)
        return chol(A, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky", spy)
    accs: list = []
    orig_init = stats_mod.InputStats.__init__

    def record(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        accs.append(self)

    monkeypatch.setattr(stats_mod.InputStats, "__init__", record)
    for method in ("sparsegpt", "mrp"):
        report = llmprune.prune_streamed(
            deep_llama_dir, method, tmp_path / method, ratio=0.5, dtype="bfloat16", progress=False, **CALIB
        )
        assert report["dtype"] == "bfloat16"
    assert seen and set(seen) <= {torch.float32, torch.float64}
    assert accs and all(a.hessian.dtype == torch.float32 and a.sq_norms.dtype == torch.float64 for a in accs)
    tensors = _tensors(tmp_path / "sparsegpt")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    w = tensors["model.layers.0.mlp.up_proj.weight"]
    assert (w == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_streamed_error_paths(tiny_llama_dir, tmp_path):
    with pytest.raises(LlmpruneError, match="pg cannot be streamed block by block: it needs forward passes"):
        llmprune.prune_streamed(tiny_llama_dir, "pg", tmp_path / "a", ratio=0.2, progress=False)
    (tmp_path / "exists").mkdir()
    with pytest.raises(LlmpruneError, match="already exists"):
        llmprune.prune_streamed(tiny_llama_dir, "wanda", tmp_path / "exists", ratio=0.5, progress=False)
    with pytest.raises(LlmpruneError, match="dtype"):
        llmprune.prune_streamed(tiny_llama_dir, "wanda", tmp_path / "b", ratio=0.5, dtype="int8", progress=False)
    with pytest.raises(LlmpruneError, match="activations"):
        llmprune.prune_streamed(tiny_llama_dir, "wanda", tmp_path / "b", ratio=0.5, activations="gpu", progress=False)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_llama_dir.iterdir():
        if f.suffix != ".safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(LlmpruneError, match="no model.safetensors"):
        llmprune.prune_streamed(broken, "wanda", tmp_path / "c", ratio=0.5, progress=False)
    with pytest.raises(LlmpruneError, match="calib-samples"):
        llmprune.prune_streamed(tiny_llama_dir, "wanda", tmp_path / "c", ratio=0.5, calib_samples=0, progress=False)
    with pytest.raises(LlmpruneError, match="exceeds the model's .* positions"):
        llmprune.prune_streamed(tiny_llama_dir, "wanda", tmp_path / "c", ratio=0.5, seqlen=100_000, progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / ".c.partial").exists()


def test_cli_prune_streamed(tiny_llama_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmprune",
            "prune-streamed",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "wanda",
            "--ratio",
            "0.5",
            "--calib-samples",
            "2",
            "--seqlen",
            "16",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pruned 2 blocks with wanda streamed" in proc.stdout and (out / "report.json").is_file()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmprune",
            "prune-streamed",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "disp",
            "--ratio",
            "0.5",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("family", ["opt", "phi", "gemma3"])
def test_streamed_equals_in_memory_other_families(family, tmp_path, toy_tokenizer):
    """Biases, parallel blocks, learned positions, sliding-window layers: still bit for bit."""
    from tiny_models import build_tiny

    src = tmp_path / "src"
    build_tiny(family, vocab_size=len(toy_tokenizer)).save_pretrained(src)
    toy_tokenizer.save_pretrained(src)
    llmprune.prune_streamed(src, "sparsegpt", tmp_path / "s", ratio=0.5, progress=False, **CALIB)
    model, tok = llmprune.load(src)
    llmprune.prune(model, tok, "sparsegpt", ratio=0.5, progress=False, **CALIB)
    out = _tensors(tmp_path / "s")
    ref = model.state_dict()
    assert set(out) <= set(ref)
    for k, v in out.items():
        assert torch.equal(v, ref[k]), k
