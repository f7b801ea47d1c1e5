"""Data-parallel layer-wise pruning under torchrun (gloo, 2 CPU processes): each rank
calibrates on half of the samples, the input statistics are merged over the ranks and each
linear is solved on one rank and broadcast. Both ranks must hold the same model, and it
must be the model one process prunes from all the samples: the same masks, and weights
equal up to the float32 rounding of summing the statistics in another order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import llmprune
from layerwise_dist_worker import CALIB, CASES, block_weights
from test_pg import short_calibration_text

HERE = Path(__file__).resolve().parent


def _torchrun(script: Path, *args: Path, timeout: int) -> subprocess.CompletedProcess:
    """``script`` under torchrun with 2 gloo CPU processes, one thread each."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    return subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_llama_dir) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _torchrun(HERE / "layerwise_dist_worker.py", tiny_llama_dir, out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_two_processes_equal_one(two_ranks, tiny_llama_dir, monkeypatch, case):
    from safetensors.torch import load_file

    name, method, ratio, pattern, options = case
    ranks = [load_file(str(two_ranks / f"{name}-rank{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # every rank ends with the same model
    assert json.loads((two_ranks / f"{name}-rank0.json").read_text()) == {"world_size": 2}

    short_calibration_text(monkeypatch)
    model, tok = llmprune.load(tiny_llama_dir)
    report = llmprune.prune(model, tok, method, ratio=ratio, pattern=pattern, progress=False, **CALIB, **options)
    assert report.details is None  # one process
    single = block_weights(model)
    pruned = 0
    for key, w in single.items():
        got = ranks[0][key]
        if key.endswith("proj.weight"):
            assert torch.equal(got == 0, w == 0), f"{name}: mask of {key} differs from one process"
            pruned += int((w == 0).sum())
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5, msg=f"{name}: {key}")
    assert pruned > 0


def test_fewer_samples_than_processes_is_one_line(tiny_llama_dir, tmp_path):
    """One calibration sample for two ranks is refused on every rank with one line."""
    code = (
        "import sys, torch, llmprune\nfrom llmprune.errors import LlmpruneError\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_pg import short_calibration_text\n"
        "short_calibration_text(None)\n"
        "model, tok = llmprune.load(sys.argv[1])\n"
        "try:\n"
        "    llmprune.prune(model, tok, 'wanda', ratio=0.5, calib_samples=1, seqlen=16, progress=False)\n"
        "except LlmpruneError as exc:\n"
        "    sys.stdout.write(f'ERR {exc}\\n')\n"
    )
    script = tmp_path / "one_sample.py"
    script.write_text(code)
    proc = _torchrun(script, tiny_llama_dir, HERE, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # both ranks share the pipe: count the message, whatever the interleaving of the two writes
    assert proc.stdout.count("1 calibration samples for 2 processes: use at least one sample") == 2, proc.stdout
