"""benchmarks/standard.py end to end on a tiny model (every method at one ratio, reduced
settings; about half a minute), its resume and refusal rules, and its docs section."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
ORDER = ["shortgpt", "wanda-sp", "flap", "llm-pruner", "pg", "pg-init", "sobp", "disp"]


@pytest.fixture(scope="module")
def standard(bench_import):
    return bench_import("standard")


def _args(model: Path, out: Path, *more: str) -> list[str]:
    return [
        "--model",
        str(model),
        "--calib-samples",
        "2",
        "--seqlen",
        "64",
        "--eval-windows",
        "2",
        "--pg-steps",
        "2",
        "--disp-steps",
        "2",
        "--ratios",
        "0.5",
        "--out",
        str(out),
        *more,
    ]


def test_reduced_settings_need_their_own_out(standard, monkeypatch, tmp_path, tiny_llama_dir):
    import _runner

    monkeypatch.setattr(_runner, "RESULTS", tmp_path)  # were the guard to fail, nothing lands in the repo
    argv = _args(tiny_llama_dir, tmp_path / "x.json")[:-2]  # no --out
    with pytest.raises(SystemExit):
        standard.main(argv)
    with pytest.raises(SystemExit):
        standard.main(["--quick"])
    assert not list(tmp_path.iterdir())


def test_standard_smoke_resume_and_docs(standard, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "standard.json"
    args = _args(tiny_llama_dir, out)
    assert standard.main(args) == 0
    data = json.loads(out.read_text())
    p = data["protocol"]
    assert (p["calib_samples"], p["seqlen"], p["eval_windows"], p["seed"]) == (2, 64, 2, 0)
    assert p["pg"]["budget"] == "family" and p["pg"]["steps"] == 2 and p["disp"]["target"] == "block"
    assert "standard.py" in data["command"]
    runs = data["runs"]
    names = [("pg-init" if "init only" in r["setting"] else r["method"]) for r in runs]
    assert names == ["dense"] + ORDER
    dense = runs[0]
    assert math.isfinite(dense["ppl"]) and dense["params_after"] > 0
    for r in runs[1:]:
        assert r["setting"].startswith("0.5")
        assert math.isfinite(r["ppl"])
        assert abs(r["achieved_ratio"] - 0.5) < 0.05, r  # one parameter count for every method
        assert r["params_after"] < dense["params_after"]
        for key in ("prune_seconds", "eval_seconds", "peak_rss_mb", "threads"):
            assert r[key] is not None, (r["method"], key)
    pg, init = runs[5], runs[6]
    kb = pg["pg_keep_best"]
    assert kb["trace"][0]["step"] == 0 and kb["best_step"] in [t["step"] for t in kb["trace"]]
    assert init["options"]["steps"] == 0 and init["options"]["keep_best"] == 0
    if kb["best_step"] == 0:  # PG shipped its initial mask: the init row is that same mask
        assert pg["ppl"] == pytest.approx(init["ppl"])
    capsys.readouterr()

    # --resume with the same protocol runs nothing and keeps every row
    assert standard.main(args + ["--resume"]) == 0
    assert json.loads(out.read_text())["runs"] == runs
    # an existing file is never discarded: without --resume, or under another protocol
    text = out.read_text()
    assert standard.main(args) == 2
    other = list(args)
    other[other.index("--pg-steps") + 1] = "3"
    assert standard.main(other + ["--resume"]) == 2
    assert "pg.steps: 2 in the file, 3 now" in capsys.readouterr().err
    assert out.read_text() == text

    assert standard.main(["--table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| method | 50% |" in table and "| pg init (steps=0) |" in table

    # the generated docs section renders this file
    spec = importlib.util.spec_from_file_location("make_results", BENCH / "make_results.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    data_all = gen.load_results()
    data_all["standard.json"] = json.loads(text)
    page, _, notes = gen.build(data_all)
    assert not [n for n in notes if n.startswith("standard.json")]
    assert "## Structured methods at the standard protocol: every row" in page
    assert "No results yet" not in page and "| pg init (steps=0) |" in page
    assert "- 50 %, lowest perplexity first: " in page and "- PG at 50 %: " in page
    assert "| 50 % |" in gen.BLOCKS["standard"]
