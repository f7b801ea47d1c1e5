"""Streamed LLM-Pruner (llmprune.prune_streamed(..., "llm-pruner")): pass 1's committed
scores equal group_scores of the whole-model backward pass, the checkpoint equals
llmprune.prune + llmprune.save tensor for tensor (both taylor options, a layer range, units
servable; memory and disk activations; LLaMA, Qwen2, Phi, Gemma-3), and a run killed in
pass 1 or pass 2 resumes to the same checkpoint."""

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

REPO = Path(__file__).resolve().parents[1]
CALIB = dict(calib_samples=4, seqlen=32)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, toy_tokenizer) -> dict[str, Path]:
    return write_sources(tmp_path_factory.mktemp("llmp-sources"), toy_tokenizer)


def _in_memory(src: Path, out: Path, ratio: float, dtype: str | None = None, **options) -> dict:
    model, tok = llmprune.load(src, **({"dtype": dtype} if dtype else {}))
    report = llmprune.prune(model, tok, "llm-pruner", ratio=ratio, progress=False, **CALIB, **options)
    llmprune.save(model, tok, out, report)
    return report.to_dict()


class _StopAfterPass1(Exception):
    pass


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("taylor", ["param_first", "vectorize"])
def test_pass1_scores_equal_group_scores(sources, tmp_path, taylor, dtype):
    """The committed pass-1 scores of every pruned block equal group_scores after the
    whole-model backward pass (the same operations in the same order), and only the pruned
    blocks (layer_start=1, layer_end=3 of 4) are scored."""
    from llmprune.methods.gradients import backward_windows
    from llmprune.methods.llm_pruner import group_scores, linear_params
    from llmprune.models import get_adapter

    src = sources["deep"]
    model, tok = llmprune.load(src, dtype=dtype)
    ids = llmprune.calibration_data(tok, CALIB["calib_samples"], CALIB["seqlen"], 0)
    adapter = get_adapter(model)
    blocks = list(adapter.blocks())
    backward_windows(model, ids, "cpu", linear_params(adapter, blocks), progress=False)
    expected = {b: group_scores(adapter, blocks[b], taylor) for b in (1, 2)}

    def stop(k: int) -> None:
        if k == 2:  # blocks 3 (gradient only), 2 and 1 done: stop before pass 2
            raise _StopAfterPass1

    with pytest.raises(_StopAfterPass1):
        llmprune.prune_streamed(
            src,
            "llm-pruner",
            tmp_path / "out",
            ratio=0.2,
            calib_ids=ids,
            dtype=dtype,
            progress=False,
            on_block_done=stop,
            taylor=taylor,
            layer_start=1,
            layer_end=3,
        )
    state = tmp_path / ".out.partial" / "state"
    assert sorted(p.name for p in state.glob("scores-*.pt")) == ["scores-00001.pt", "scores-00002.pt"]
    for b, (gs, cs) in expected.items():
        record = torch.load(state / f"scores-{b:05d}.pt", weights_only=True)
        assert record["groups"] == gs, b
        assert record["channels"] == cs, b


CASES = [
    # source, ratio, options, activations, export kind llmprune.save chooses
    ("llama", 0.3, {}, "memory", "stock"),  # every block pruned alike: the stock config
    ("qwen2", 0.3, {"taylor": "vectorize"}, "disk", "stock"),  # q/k/v biases in the scores
    ("deep", 0.3, {"layer_start": 1, "layer_end": 3}, "memory", "layout"),  # KV groups: per-block heads
    ("deep", 0.2, {"layer_start": 1, "units": "servable", "taylor": "vectorize"}, "disk", "block_configs"),
    ("qwen2", 0.2, {"layer_start": 1, "units": "channels"}, "memory", "block_configs"),
]


@pytest.mark.parametrize(
    "source,ratio,options,activations,kind",
    CASES,
    ids=[f"{c[0]}-{','.join(f'{k}={v}' for k, v in c[2].items()) or 'default'}-{c[3]}" for c in CASES],
)
def test_streamed_llm_pruner_equals_in_memory(sources, tmp_path, source, ratio, options, activations, kind):
    """Same gradients (block by block), selection and removal: the same checkpoint, bit for
    bit, and the same structured report."""
    src = sources[source]
    report = llmprune.prune_streamed(
        src,
        "llm-pruner",
        tmp_path / "streamed",
        ratio=ratio,
        activations=activations,
        progress=False,
        **CALIB,
        **options,
    )
    ref = _in_memory(src, tmp_path / "memory", ratio, **options)
    assert_same_checkpoint(tmp_path / "streamed", tmp_path / "memory")
    assert report["export"] == ref["export"] and report["export"]["kind"] == kind
    assert report["structured"] == ref["structured"]
    for key in ("params_before", "params_after", "block_linear_params", "ratio", "options", "method_args", "kind"):
        assert report[key] == ref[key], key
    assert report["details"]["streamed"]["blocks"] == len(report["structured"]["layers_structured"])
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("family", ["phi", "gemma3"])
def test_streamed_llm_pruner_other_families(family, tmp_path, toy_tokenizer):
    """Parallel blocks and partial rotary (Phi), post-norms and sliding-window layers
    (Gemma-3): still the same checkpoint."""
    from tiny_models import build_tiny

    src = save_checkpoint(build_tiny(family, vocab_size=len(toy_tokenizer)), tmp_path / "src", toy_tokenizer)
    report = llmprune.prune_streamed(src, "llm-pruner", tmp_path / "streamed", ratio=0.3, progress=False, **CALIB)
    ref = _in_memory(src, tmp_path / "memory", 0.3)
    assert_same_checkpoint(tmp_path / "streamed", tmp_path / "memory")
    assert report["structured"] == ref["structured"] and report["export"] == ref["export"]


_KILL = """
import os, signal, sys
sys.path.insert(0, {src!r})
import llmprune
from llmprune.engine.resume import RunState

def done(k):
    if k == {k}:
        os.kill(os.getpid(), signal.SIGKILL)

commit = RunState.commit

def commit_then_kill(self, progress):  # in pass 1's forward pass (disk activations commit it)
    commit(self, progress)
    if progress.forward == 2 and {k} < 0:
        os.kill(os.getpid(), signal.SIGKILL)

RunState.commit = commit_then_kill
llmprune.prune_streamed({model!r}, "llm-pruner", {out!r}, ratio=0.3, calib_samples=4, seqlen=32,
                        activations={acts!r}, progress=False, on_block_done=done, layer_start=1)
"""

# 4 blocks, layer_start=1: pass 1 runs blocks 3, 2, 1 (steps 0-2), pass 2 writes 0-3 (4-7).
# kill step (-1: after block 1 of pass 1's forward pass), activations, committed
# (scored, done), blocks the resumed run reads (pass 1 forward, pass 1 backward, pass 2)
RESUME = [
    (-1, "disk", (0, 0), [2, 3] + [3, 2, 1] + [0, 1, 2, 3]),
    (0, "memory", (1, 0), [0, 1] + [2, 1] + [0, 1, 2, 3]),  # the forward pass recomputed up to x_2
    (1, "disk", (2, 0), [1] + [0, 1, 2, 3]),  # the forward pass's files are committed
    (5, "memory", (3, 2), [2, 3]),
    (6, "disk", (3, 3), [3]),
]


@pytest.mark.parametrize(
    "step,activations,committed,reads",
    RESUME,
    ids=["pass1-forward-disk", "pass1-memory", "pass1-disk", "pass2-memory", "pass2-disk"],
)
def test_llm_pruner_resume_after_kill(sources, tmp_path, step, activations, committed, reads):
    """Killed in pass 1's forward pass, after pass 1's step 0 or 1 (blocks 3, 2 done) or after
    pass 2's block 1 or 2 of a 4-block model: the resumed run reads only the blocks it still
    needs (it scores no block twice, rewrites no written block) and writes what the
    in-memory run writes."""
    from llmprune.streamed import StreamRun

    out = tmp_path / "out"
    script = _KILL.format(src=str(REPO / "src"), k=step, model=str(sources["deep"]), out=str(out), acts=activations)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = tmp_path / ".out.partial"
    progress = json.loads((partial / "state" / "progress.json").read_text())
    assert (progress["scored"], progress["done"]) == committed
    read = []
    original = StreamRun.read_block

    def spy(self, i):
        read.append(i)
        return original(self, i)

    StreamRun.read_block = spy  # type: ignore[method-assign]
    try:
        report = llmprune.prune_streamed(
            sources["deep"],
            "llm-pruner",
            out,
            ratio=0.3,
            activations=activations,
            progress=False,
            layer_start=1,
            **CALIB,
        )
    finally:
        StreamRun.read_block = original  # type: ignore[method-assign]
    assert read == reads
    assert report["details"]["streamed"]["resumed_from_block"] == sum(committed)
    _in_memory(sources["deep"], tmp_path / "memory", 0.3, layer_start=1)
    assert_same_checkpoint(out, tmp_path / "memory")
    assert not partial.exists()


def test_llm_pruner_streamed_errors(sources, tmp_path):
    """An unreachable ratio or an empty layer range is refused in one line before any work."""
    from llmprune.errors import LlmpruneError

    src = sources["deep"]
    for options, match in (
        (dict(ratio=0.6, layer_start=3), "smaller --ratio"),
        (dict(ratio=0.2, layer_start=3, layer_end=2), "layer range"),
    ):
        with pytest.raises(LlmpruneError, match=match) as exc:
            llmprune.prune_streamed(src, "llm-pruner", tmp_path / "x", progress=False, **CALIB, **options)
        assert "\n" not in str(exc.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()


def test_cli_prune_streamed_llm_pruner(sources, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "llmprune", "prune-streamed", "--model", str(sources["deep"]), "--quiet"]
        + ["--method", "llm-pruner", "--ratio", "0.2", "--out", str(tmp_path / "a"), "--calib-samples", "2"]
        + ["--seqlen", "16", "--activations", "disk", "--method-args", "units=servable,layer_start=1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pruned 4 blocks with llm-pruner streamed (pass 1 forward and backward, pass 2 removal; 4 blocks kept" in (
        proc.stdout
    )
    assert "format: DeciLM block_configs" in proc.stdout
    assert json.loads((tmp_path / "a" / "report.json").read_text())["method"] == "llm-pruner"
