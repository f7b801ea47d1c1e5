"""benchmarks/_runner.run_plan's --resume rule: finished rows are kept under the same
protocol and never silently dropped under another one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def runner(bench_import):
    return bench_import("_runner")


def _args(out: Path) -> argparse.Namespace:
    return argparse.Namespace(out=str(out), table=False, resume=True)


def test_resume_keeps_rows_of_the_same_protocol_and_refuses_another(runner, tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    row = {"method": "dense", "setting": "-", "ppl": 20.0}
    out.write_text(json.dumps({"benchmark": "b", "protocol": {"seqlen": 2048}, "runs": [row]}))
    markdown = lambda rows: f"{len(rows)} rows"  # noqa: E731
    # same protocol: the finished row is kept and not run again (the plan holds only it)
    assert runner.run_plan(_args(out), "b", {"seqlen": 2048}, [(None, "-", {})], markdown) == 0
    assert json.loads(out.read_text())["runs"] == [row]
    # another protocol: refused in one line, the file untouched
    before = out.read_text()
    assert runner.run_plan(_args(out), "b", {"seqlen": 1024}, [(None, "-", {})], markdown) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "another --out" in err[0]
    assert out.read_text() == before
