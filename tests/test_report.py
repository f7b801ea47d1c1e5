"""``llmprune report``: markdown, JSON and plots from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmprune.cli import main
from llmprune.errors import LlmpruneError
from llmprune.eval.record import merge_eval, save_eval
from llmprune.report import build_report, load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, name: str, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(data))


def _zeroshot(acc: float) -> dict:
    return {
        "piqa": {"acc": acc, "acc_norm": acc - 0.01, "n": 100},
        "boolq": {"acc": acc + 0.1, "acc_norm": None, "n": 100},
    }


def _protocol(limit: int | None = 100) -> dict:
    return {
        "wikitext2": {"dataset": "wikitext2", "seqlen": 2048, "windows": 8},
        "piqa": {"engine": "lm-eval 0.4.13", "num_fewshot": 0, "limit": limit, "n": 100},
        "boolq": {"engine": "lm-eval 0.4.13", "num_fewshot": 0, "limit": limit, "n": 100},
    }


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    """Four fixture runs: dense (eval.json only), two unstructured, one structured with bench.json."""
    dense = tmp_path / "dense"
    _write(dense, "eval.json", {"ppl": {"wikitext2": 20.7131}, "zeroshot": _zeroshot(0.65), "protocol": _protocol()})
    out = [dense]
    for method, ratio, ppl in (("wanda", 0.5, 31.4159), ("sparsegpt", 0.5, 27.1828)):
        run = tmp_path / f"{method}-50"
        layers = [
            {"block": b, "linear": name, "shape": [64, 64], "sparsity": ratio}
            for b in range(3)
            for name in ("q", "k", "down")
        ]
        _write(
            run,
            "report.json",
            {
                "method": method,
                "ratio": ratio,
                "pattern": None,
                "params_before": 134_515_008,
                "params_after": 81_139_203,
                "prune_seconds": 12.5,
                "peak_rss_mb": 1872.3,
                "layers": layers,
            },
        )
        _write(run, "eval.json", {"ppl": {"wikitext2": ppl}, "zeroshot": _zeroshot(0.6), "protocol": _protocol()})
        out.append(run)
    structured = tmp_path / "manual"
    widths = [
        {"block": 0, "heads": 6, "kv_heads": 2, "intermediate": 1000, "hidden_in": 576},
        {"block": 1, "heads": 0, "kv_heads": 0, "intermediate": 1536, "hidden_in": None},
    ]
    _write(
        structured,
        "report.json",
        {
            "method": "manual",
            "ratio": 0.2345,
            "pattern": None,
            "params_before": 134_515_008,
            "params_after": 120_000_000,
            "seconds": 0.5,
            "peak_rss_mb": 900.0,
            "layers_structured": widths,
            "eval": {"pruned": {"ppl": {"wikitext2": 55.5}, "protocol": _protocol(50)}},
        },
    )
    _write(
        structured,
        "bench.json",
        {
            "models": {
                "manual": {
                    "metrics": {
                        "prefill_tok_s_b1": {"median": 1234.5},
                        "decode_tok_s_b1": {"median": 42.25},
                        "ttft_s": {"median": 0.1},
                    }
                }
            },
            "speedup": {"of": "manual", "vs": "dense", "decode_tok_s_b1": 1.25},
        },
    )
    out.append(structured)
    return out


def test_report_from_fixture_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    data = build_report(runs, out)
    md = (out / "report.md").read_text()
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(data))
    names = [r["run"] for r in saved["runs"]]
    assert names == ["dense", "wanda-50", "sparsegpt-50", "manual"]
    assert saved["datasets"] == ["wikitext2"] and saved["tasks"] == ["piqa", "boolq"]
    by_name = {r["run"]: r for r in saved["runs"]}
    assert by_name["dense"]["method"] == "dense" and by_name["dense"]["ratio"] == 0.0
    assert by_name["wanda-50"]["zeroshot_mean"]["acc"] == pytest.approx((0.6 + 0.7) / 2)
    assert by_name["wanda-50"]["zeroshot_mean"]["acc_norm"] == pytest.approx(0.59)
    assert by_name["manual"]["speed"]["decode_tok_s_b1"] == 42.25
    assert by_name["manual"]["ppl"]["wikitext2"] == 55.5  # from report.json's demo-style eval section
    assert by_name["manual"]["layers_structured"][0]["heads"] == 6
    # the numbers a person reads
    for text in (
        "20.713",
        "31.416",
        "27.183",
        "55.500",
        "134,515,008",
        "81,139,203",
        "| wanda | 0.5 |",
        "65.00 / 64.00 (n=100)",
        "75.00 / – (n=100)",
        "42.2",
        "1872",
        "12.5",
        "lm-eval 0.4.13",
    ):
        assert text in md, text
    assert "runs differ" in md  # the structured run used limit 50: flagged, not silently mixed
    assert set(saved["plots"]) == {
        "ppl_vs_ratio.png",
        "layers_wanda-50.png",
        "layers_sparsegpt-50.png",
        "layers_manual.png",
    }
    for plot in saved["plots"]:
        png = (out / plot).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 2000
        assert f"![{plot}]({plot})" in md


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmpruneError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmpruneError, match="neither report.json nor eval.json"):
        load_run(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{oops")
    with pytest.raises(LlmpruneError, match="not valid JSON"):
        load_run(tmp_path / "bad")


def test_eval_json_merge_and_atomic_save(tmp_path: Path) -> None:
    first = {"ppl": {"wikitext2": 20.0}, "protocol": {"wikitext2": {"seqlen": 2048}}, "model": "a"}
    second = {"ppl": {}, "zeroshot": {"piqa": {"acc": 0.6}}, "protocol": {"piqa": {"limit": 4}}, "model": "a"}
    assert merge_eval(first, second)["protocol"] == {"wikitext2": {"seqlen": 2048}, "piqa": {"limit": 4}}
    save_eval(tmp_path, first)
    path = save_eval(tmp_path, second)
    saved = json.loads(path.read_text())
    assert saved["ppl"] == {"wikitext2": 20.0} and saved["zeroshot"]["piqa"]["acc"] == 0.6
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
    with pytest.raises(LlmpruneError, match="not a directory"):
        save_eval(tmp_path / "eval.json", first)


def test_cli_prune_eval_report(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    """End to end on a tiny model: an unstructured and a structured run, evaluated and compared."""
    spec = tmp_path / "plan.yaml"
    spec.write_text(
        "layers:\n  0: {remove_kv_heads: [1], remove_channels: {count: 40}}\n  1: {remove_channels: [0, 1, 2]}\n"
    )
    runs = {
        "magnitude": ["--method", "magnitude", "--ratio", "0.4"],
        "manual": ["--method", "manual", "--spec", str(spec)],
    }
    for name, args in runs.items():
        assert main(["prune", "--model", str(tiny_llama_dir), *args, "--out", str(tmp_path / name), "--quiet"]) == 0
        assert main(["eval", str(tmp_path / name), "--seqlen", "32", "--max-windows", "2", "--save", "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["report", str(tmp_path / "magnitude"), str(tmp_path / "manual"), "--out", str(out)]) == 0
    assert "3 plot(s)" in capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    mag, manual = saved["runs"]
    assert mag["method"] == "magnitude" and mag["ratio"] == 0.4 and mag["ppl"]["wikitext2"] > 1
    assert manual["layers_structured"][0]["kv_heads"] == 1 and manual["layers_structured"][0]["heads"] == 2
    md = (out / "report.md").read_text()
    assert f"{mag['ppl']['wikitext2']:.3f}" in md and f"{manual['ppl']['wikitext2']:.3f}" in md
    assert (out / "layers_manual.png").read_bytes().startswith(PNG_MAGIC)
    code = main(["report", str(tmp_path / "nope"), "--out", str(out)])
    assert code == 2 and "does not exist" in capsys.readouterr().err
