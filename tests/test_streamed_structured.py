"""Streamed structured pruning (Wanda-sp, FLAP, ShortGPT in two passes): the checkpoint
``llmprune.prune`` + ``llmprune.save`` write, tensor for tensor and config for config, in
every export format; resumable in either pass; one-line errors for the methods that need
the whole model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from streamed_checkpoints import assert_same_checkpoint, save_checkpoint, write_sources
from llmprune.errors import LlmpruneError

REPO = Path(__file__).resolve().parents[1]
CALIB = dict(calib_samples=4, seqlen=32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, toy_tokenizer) -> dict[str, Path]:
    """The shared tiny sources and a 6-block LLaMA of vLLM-servable shapes."""
    from tiny_models import build_tiny_servable

    root = tmp_path_factory.mktemp("structured-sources")
    out = write_sources(root, toy_tokenizer)
    servable = build_tiny_servable("llama", vocab_size=len(toy_tokenizer), layers=6)
    out["servable"] = save_checkpoint(servable, root / "servable", toy_tokenizer)
    return out


CASES = [
    # source, method, ratio, options, export kind llmprune.save chooses
    ("llama", "wanda-sp", 0.3, {}, "stock"),
    ("llama", "flap", 0.3, {}, "layout"),
    ("qwen2", "flap", 0.3, {}, "layout"),  # q/k/v biases, compensation biases on o_proj/down_proj
    ("qwen2", "wanda-sp", 0.3, {"units": "servable"}, "stock"),
    ("servable", "flap", 0.5, {"units": "servable", "bias_compensation": False}, "block_configs"),
    ("deep", "shortgpt", 0.25, {}, "dense"),  # one block dropped: the others renumbered
]


@pytest.mark.parametrize("source,method,ratio,options,kind", CASES, ids=[f"{c[0]}-{c[1]}-{c[4]}" for c in CASES])
def test_streamed_structured_equals_in_memory(sources, tmp_path, source, method, ratio, options, kind):
    """Same reads, capture, BlockRunner, scores, selection and surgery: the same checkpoint."""
    src = sources[source]
    model, tok = llmprune.load(src)
    ids = llmprune.calibration_data(tok, CALIB["calib_samples"], CALIB["seqlen"], 0)
    activations = "disk" if source == "deep" else "memory"
    report = llmprune.prune_streamed(
        src,
        method,
        tmp_path / "streamed",
        ratio=ratio,
        calib_ids=ids,
        activations=activations,
        progress=False,
        **options,
    )
    ref = llmprune.prune(model, tok, method, ratio=ratio, progress=False, **CALIB, **options)
    llmprune.save(model, tok, tmp_path / "memory", ref)
    assert_same_checkpoint(tmp_path / "streamed", tmp_path / "memory")
    assert report["export"] == ref.export and report["export"]["kind"] == kind
    s, m = report["structured"], ref.to_dict()["structured"]
    assert s == m
    for key in ("params_before", "params_after", "block_linear_params", "ratio", "options", "method_args", "kind"):
        assert report[key] == getattr(ref, key), key
    if method == "shortgpt":
        assert s["removed"]["blocks"] and report["details"]["streamed"]["kept_blocks"] == 3
    if kind == "block_configs":
        assert s["removed"].get("attention") or s["removed"].get("mlp")  # no_op parts left out
    # a normal llmprune checkpoint: report.json validates, the model reloads with the same logits
    from llmprune.prune_report import PruneReport

    assert PruneReport.from_json(tmp_path / "streamed" / "report.json").structured is not None
    loaded, _ = llmprune.load(tmp_path / "streamed")
    x = torch.randint(0, len(tok), (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    assert not list(tmp_path.glob(".*partial*"))


_KILL = """
import os, signal, sys
sys.path.insert(0, {src!r})
import llmprune

def done(k):
    if k == {k}:
        os.kill(os.getpid(), signal.SIGKILL)

llmprune.prune_streamed({model!r}, "flap", {out!r}, ratio=0.3, calib_samples=4, seqlen=32,
                        activations={acts!r}, progress=False, on_block_done=done)
"""


@pytest.mark.parametrize("step,activations", [(1, "disk"), (5, "memory")], ids=["pass1-disk", "pass2-memory"])
def test_structured_resume_after_kill(sources, tmp_path, step, activations):
    """Killed after step 1 (pass 1, block 1 scored) or step 5 (pass 2, second block written)
    of a 4-block model: the resumed run neither rescores nor rewrites committed blocks and
    writes what the in-memory run writes."""
    out = tmp_path / "out"
    script = _KILL.format(src=str(REPO / "src"), k=step, model=str(sources["deep"]), out=str(out), acts=activations)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = tmp_path / ".out.partial"
    progress = json.loads((partial / "state" / "progress.json").read_text())
    assert (progress["scored"], progress["done"]) == ((2, 0) if step == 1 else (4, 2))
    scored = []
    from llmprune.methods.structured import ScoredMethod

    original = ScoredMethod.score

    def spy(self, i, *args, **kwargs):
        scored.append(i)
        return original(self, i, *args, **kwargs)

    ScoredMethod.score = spy  # type: ignore[method-assign]
    try:
        report = llmprune.prune_streamed(
            sources["deep"], "flap", out, ratio=0.3, activations=activations, progress=False, **CALIB
        )
    finally:
        ScoredMethod.score = original  # type: ignore[method-assign]
    assert scored == ([2, 3] if step == 1 else [])
    assert report["details"]["streamed"]["resumed_from_block"] == step + 1
    model, tok = llmprune.load(sources["deep"])
    ref = llmprune.prune(model, tok, "flap", ratio=0.3, progress=False, **CALIB)
    llmprune.save(model, tok, tmp_path / "memory", ref)
    assert_same_checkpoint(out, tmp_path / "memory")
    assert not partial.exists()


def test_structured_errors(sources, tmp_path):
    src = sources["llama"]
    for method, need in (
        ("pg", "forward passes of the whole model"),
        ("disp", "hypernetwork"),
    ):
        with pytest.raises(LlmpruneError, match=f"{method} cannot be streamed.*{need}.*llmprune prune") as exc:
            llmprune.prune_streamed(src, method, tmp_path / "x", ratio=0.2, progress=False)
        assert "\n" not in str(exc.value)
    with pytest.raises(LlmpruneError, match="streamed pruning runs .*wanda-sp.*not 'manual'"):
        llmprune.prune_streamed(src, "manual", tmp_path / "x", ratio=0.2, progress=False)
    with pytest.raises(LlmpruneError, match="bias_compensation=false"):
        llmprune.prune_streamed(src, "flap", tmp_path / "x", ratio=0.2, units="servable", progress=False)
    with pytest.raises(LlmpruneError, match="not --pattern"):
        llmprune.prune_streamed(src, "wanda-sp", tmp_path / "x", pattern="2:4", progress=False)
    with pytest.raises(LlmpruneError, match="unknown option|update"):
        llmprune.prune_streamed(src, "wanda-sp", tmp_path / "x", ratio=0.2, update="sparsegpt", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()


def test_cli_prune_streamed_structured(sources, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    base = [sys.executable, "-m", "llmprune", "prune-streamed", "--model", str(sources["servable"]), "--quiet"]
    calib = ["--calib-samples", "2", "--seqlen", "16"]
    proc = subprocess.run(
        base + ["--method", "wanda-sp", "--ratio", "0.3", "--out", str(tmp_path / "a")] + calib,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pruned 6 blocks with wanda-sp streamed in two passes" in proc.stdout and "format: stock" in proc.stdout
    proc = subprocess.run(
        base
        + ["--method", "flap", "--ratio", "0.3", "--out", str(tmp_path / "b")]
        + ["--method-args", "units=servable,bias_compensation=false"]
        + calib,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "format: DeciLM block_configs" in proc.stdout
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model_type"] == "nemotron-nas"
