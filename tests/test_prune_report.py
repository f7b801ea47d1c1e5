"""report.json as a typed, versioned PruneReport: round trip, validation, schema 1 upgrade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmprune.errors import LlmpruneError
from llmprune.prune_report import SCHEMA_VERSION, Calibration, PruneReport, StructuredSection, UnstructuredSection


def _report(kind: str = "unstructured") -> PruneReport:
    un = (
        UnstructuredSection(
            block_sparsity=0.5,
            layers=[{"block": 0, "linear": "q", "shape": [4, 4], "sparsity": 0.5}],
            stored_params=100,
            update=None,
        )
        if kind == "unstructured"
        else None
    )
    st = (
        StructuredSection(
            achieved_ratio=0.2,
            block_linear_params_before=80,
            layers_structured=[{"block": 0}],
            removed={"groups": 1, "channels": 2, "blocks": []},
        )
        if kind == "structured"
        else None
    )
    return PruneReport(
        method="wanda" if un else "flap",
        kind=kind,
        ratio=0.5,
        pattern=None,
        options={},
        method_args={},
        model_type="llama",
        calibration=Calibration("wikitext2", 4, 32, 0),
        params_before=100,
        params_after=60,
        params_note="n",
        block_linear_params=64,
        seconds=1.5,
        prune_seconds=1.0,
        peak_rss_mb=10.0,
        peak_device_mb=None,
        device="cpu",
        environment={},
        unstructured=un,
        structured=st,
        details={"x": 1},
    )


@pytest.mark.parametrize("kind", ["unstructured", "structured"])
def test_round_trip_and_shared_key_set(kind: str, tmp_path: Path) -> None:
    report = _report(kind)
    path = tmp_path / "report.json"
    path.write_text(report.to_json())
    again = PruneReport.from_json(path)
    assert again == report and again.schema_version == SCHEMA_VERSION
    other = _report("structured" if kind == "unstructured" else "unstructured")
    assert set(json.loads(report.to_json())) == set(json.loads(other.to_json()))  # one key set for both kinds
    assert again.achieved_ratio == (0.5 if kind == "unstructured" else 0.2)


@pytest.mark.parametrize(
    "edit,msg",
    [
        (lambda d: d.pop("method"), "missing key 'method'"),
        (lambda d: d.update(params_after="many"), "'params_after' must be int"),
        (lambda d: d.update(kind="other"), "kind 'other'"),
        (lambda d: d.update(surprise=1), "unknown key 'surprise'"),
        (lambda d: d.update(unstructured=None), "needs its 'unstructured' section"),
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d["unstructured"].pop("layers"), "not a valid llmprune report"),
    ],
)
def test_malformed_report_is_a_one_line_error(edit, msg: str, tmp_path: Path) -> None:
    data = json.loads(_report().to_json())
    edit(data)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LlmpruneError, match=msg) as info:
        PruneReport.from_json(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_not_json_and_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("{oops")
    with pytest.raises(LlmpruneError, match="not valid JSON"):
        PruneReport.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(LlmpruneError, match="not a JSON object"):
        PruneReport.from_json(path)


def test_schema_1_reports_are_upgraded() -> None:
    old = {
        "method": "sobp",
        "ratio": 0.2,
        "achieved_ratio": 0.19,
        "pattern": None,
        "options": {"refine": True},
        "model_type": "llama",
        "calibration": {"dataset": "wikitext2", "samples": 8, "seqlen": 512, "seed": 0},
        "params_before": 10,
        "params_after": 8,
        "params_note": "stored",
        "block_linear_params_before": 6,
        "block_linear_params": 5,
        "seconds": 3.0,
        "prune_seconds": 2.0,
        "peak_rss_mb": 1.0,
        "peak_device_mb": None,
        "device": "cpu",
        "removed": {"groups": 1},
        "block_influence": None,
        "stage1_seconds": 1.0,
        "sobp": {"refits": []},
        "layers_structured": [{"block": 0}],
        "environment": {},
        "export": {"kind": "layout"},
        "model": "smollm2-135m",
    }
    report = PruneReport.from_dict(old)
    assert report.kind == "structured" and report.structured is not None and report.unstructured is None
    assert report.structured.achieved_ratio == 0.19 and report.structured.block_linear_params_before == 6
    assert report.stages == {"stage1_seconds": 1.0} and report.details == {"refits": []}
    assert report.export == {"kind": "layout"} and report.calibration == Calibration("wikitext2", 8, 512, 0)


def test_recipe_of_a_report() -> None:
    recipe = _report().to_recipe()
    assert recipe == {
        "method": "wanda",
        "ratio": 0.5,
        "method_args": {},
        "calibration": {"dataset": "wikitext2", "samples": 4, "seqlen": 32, "seed": 0},
    }
