"""Streamed SoBP (llmprune.prune_streamed(..., "sobp")): stage 1's scores equal
first_order_scores, the checkpoint equals llmprune.prune + llmprune.save tensor for tensor
(default options, units=servable, reconstruct=false; memory and disk activations), a run
killed in stage 1 or in stages 2-3 resumes to the same checkpoint, and the methods still
not streamed are refused in one line."""

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
    return write_sources(tmp_path_factory.mktemp("sobp-sources"), toy_tokenizer)


def _in_memory(src: Path, out: Path, ratio: float, **options) -> dict:
    model, tok = llmprune.load(src)
    report = llmprune.prune(model, tok, "sobp", ratio=ratio, progress=False, **CALIB, **options)
    llmprune.save(model, tok, out, report)
    return report.to_dict()


CASES = [
    # source, ratio, options, activations, export kind llmprune.save chooses
    ("llama", 0.3, {}, "memory", "block_configs"),  # channels only: per-block MLP widths
    ("qwen2", 0.6, {"normalize": "params"}, "disk", "layout"),  # KV groups refined too; q/k/v biases
    ("llama", 0.5, {"global_selection": False}, "memory", "stock"),
    ("llama", 0.3, {"units": "servable"}, "memory", "block_configs"),
    ("qwen2", 0.6, {"units": "servable", "normalize": "params"}, "disk", "block_configs"),  # a whole attention
    ("llama", 0.6, {"reconstruct": False, "normalize": "params"}, "disk", "layout"),  # no dense stream
    ("deep", 0.3, {"refit_target": "module", "refit_damp": "heldout"}, "memory", "block_configs"),
]


@pytest.mark.parametrize(
    "source,ratio,options,activations,kind",
    CASES,
    ids=[f"{c[0]}-{','.join(f'{k}={v}' for k, v in c[2].items()) or 'default'}-{c[3]}" for c in CASES],
)
def test_streamed_sobp_equals_in_memory(sources, tmp_path, source, ratio, options, activations, kind):
    """Same stage 1 (forward/backward block by block), selection, refinement, reconstruction
    and export: the same checkpoint, bit for bit, and the same structured report."""
    src = sources[source]
    _, tok = llmprune.load(src)
    ids = llmprune.calibration_data(tok, CALIB["calib_samples"], CALIB["seqlen"], 0)
    report = llmprune.prune_streamed(
        src,
        "sobp",
        tmp_path / "streamed",
        ratio=ratio,
        calib_ids=ids,
        activations=activations,
        progress=False,
        **options,
    )
    ref = _in_memory(src, tmp_path / "memory", ratio, **options)
    assert_same_checkpoint(tmp_path / "streamed", tmp_path / "memory")
    assert report["export"] == ref["export"] and report["export"]["kind"] == kind
    assert report["structured"] == ref["structured"]
    if options.get("units") == "servable" and source == "qwen2":
        assert report["structured"]["removed"].get("attention")
    for key in ("params_before", "params_after", "block_linear_params", "ratio", "options", "method_args", "kind"):
        assert report[key] == ref[key], key
    assert report["details"].get("refits") == ref["details"].get("refits")
    assert report["details"]["streamed"]["blocks"] == len(report["structured"]["layers_structured"])
    assert not list(tmp_path.glob(".*partial*"))


@pytest.mark.parametrize("family", ["opt", "phi", "gemma3"])
def test_streamed_sobp_other_families(family, tmp_path, toy_tokenizer):
    """Learned positions and biases (OPT), parallel blocks and partial rotary (Phi),
    post-norms (stage 3 refits module outputs) and sliding-window layers (Gemma-3): still the
    same checkpoint."""
    from tiny_models import build_tiny

    src = save_checkpoint(build_tiny(family, vocab_size=len(toy_tokenizer)), tmp_path / "src", toy_tokenizer)
    report = llmprune.prune_streamed(src, "sobp", tmp_path / "streamed", ratio=0.3, progress=False, **CALIB)
    ref = _in_memory(src, tmp_path / "memory", 0.3)
    assert_same_checkpoint(tmp_path / "streamed", tmp_path / "memory")
    assert report["structured"] == ref["structured"] and report["export"] == ref["export"]


class _StopAfterStage1(Exception):
    pass


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_stage1_scores_equal_first_order_scores(sources, tmp_path, dtype):
    """The committed stage-1 scores of every block equal the whole-model backward pass's
    (float32: bit for bit; bfloat16 as well: the same operations in the same order)."""
    from llmprune.methods.sobp import first_order_scores
    from llmprune.models import get_adapter

    src = sources["deep"]
    model, tok = llmprune.load(src, dtype=dtype)
    ids = llmprune.calibration_data(tok, CALIB["calib_samples"], CALIB["seqlen"], 0)
    expected = first_order_scores(model, get_adapter(model), ids, progress=False)
    n = len(expected)

    def stop(k: int) -> None:
        if k == n - 1:  # every block scored: stop before stage 2
            raise _StopAfterStage1

    with pytest.raises(_StopAfterStage1):
        llmprune.prune_streamed(
            src, "sobp", tmp_path / "out", ratio=0.3, calib_ids=ids, dtype=dtype, progress=False, on_block_done=stop
        )
    state = tmp_path / ".out.partial" / "state"
    for i, (gs, cs) in enumerate(expected):
        record = torch.load(state / f"scores-{i:05d}.pt", weights_only=True)
        assert record["groups"] == gs, i
        assert record["channels"] == cs, i


_KILL = """
import os, signal, sys
sys.path.insert(0, {src!r})
import llmprune
from llmprune.engine.resume import RunState

def done(k):
    if k == {k}:
        os.kill(os.getpid(), signal.SIGKILL)

commit = RunState.commit

def commit_then_kill(self, progress):  # in stage 1's forward pass (disk activations commit it)
    commit(self, progress)
    if progress.forward == 2 and {k} < 0:
        os.kill(os.getpid(), signal.SIGKILL)

RunState.commit = commit_then_kill
llmprune.prune_streamed({model!r}, "sobp", {out!r}, ratio=0.3, calib_samples=4, seqlen=32,
                        activations={acts!r}, progress=False, on_block_done=done)
"""

# kill step (-1: after block 1 of stage 1's forward pass), activations, committed
# (scored, done), blocks the resumed run reads (stage 1 forward, stage 1 backward, stages 2-3)
RESUME = [
    (-1, "disk", (0, 0), [2, 3] + [3, 2, 1, 0] + [0, 1, 2, 3]),
    (1, "memory", (2, 0), [0] + [1, 0] + [0, 1, 2, 3]),  # the forward pass recomputed up to x_1
    (1, "disk", (2, 0), [1, 0] + [0, 1, 2, 3]),  # the forward pass's files are committed
    (5, "memory", (4, 2), [2, 3]),
    (6, "disk", (4, 3), [3]),
]


@pytest.mark.parametrize(
    "step,activations,committed,reads",
    RESUME,
    ids=["stage1-forward-disk", "stage1-memory", "stage1-disk", "stage23-memory", "stage23-disk"],
)
def test_sobp_resume_after_kill(sources, tmp_path, step, activations, committed, reads):
    """Killed in stage 1's forward pass, after stage 1's step 1 (blocks 3 and 2 scored) or
    after stage 2-3's block 1 or 2 of a 4-block model: the resumed run reads only the blocks
    it still needs (it scores no block twice, refines no written block again) and writes
    what the in-memory run writes."""
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
            sources["deep"], "sobp", out, ratio=0.3, activations=activations, progress=False, **CALIB
        )
    finally:
        StreamRun.read_block = original  # type: ignore[method-assign]
    assert read == reads
    assert report["details"]["streamed"]["resumed_from_block"] == sum(committed)
    _in_memory(sources["deep"], tmp_path / "memory", 0.3)
    assert_same_checkpoint(out, tmp_path / "memory")
    assert not partial.exists()


def test_methods_still_not_streamed_are_refused_in_one_line(sources, tmp_path):
    src = sources["llama"]
    for method, need in (
        ("pg", "forward passes of the whole model"),
        ("disp", "hypernetwork"),
    ):
        with pytest.raises(
            LlmpruneError, match=f"{method} cannot be streamed.*{need}.*llmprune prune.*llm-pruner.*sobp"
        ) as exc:
            llmprune.prune_streamed(src, method, tmp_path / "x", ratio=0.2, progress=False)
        assert "\n" not in str(exc.value)
    with pytest.raises(LlmpruneError, match="needs at least 2 calibration samples"):
        llmprune.prune_streamed(
            src, "sobp", tmp_path / "x", ratio=0.2, refit_damp="heldout", calib_samples=1, seqlen=16
        )
    with pytest.raises(LlmpruneError, match="global_selection=false"):
        llmprune.prune_streamed(src, "sobp", tmp_path / "x", ratio=0.2, units="servable", global_selection=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()


def test_cli_prune_streamed_sobp(sources, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "llmprune", "prune-streamed", "--model", str(sources["llama"]), "--quiet"]
        + ["--method", "sobp", "--ratio", "0.3", "--out", str(tmp_path / "a"), "--calib-samples", "2"]
        + ["--seqlen", "16", "--activations", "disk", "--method-args", "units=servable"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pruned 2 blocks with sobp streamed (stage 1 forward and backward, stages 2-3; 2 blocks kept" in proc.stdout
    assert "format: DeciLM block_configs" in proc.stdout
    assert json.loads((tmp_path / "a" / "report.json").read_text())["method"] == "sobp"
