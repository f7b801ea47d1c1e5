"""CLI error paths: one line on stderr, exit status 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmprune.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--ratio", "1.2"], "outside [0, 0.99]"),
        (["--ratio", "x"], "not a number"),
        (["--pattern", "4:4"], "need 0 < N < M"),
        (["--pattern", "2/4"], "is not N:M"),
    ],
)
def test_prune_rejects_bad_sparsity(capsys, tmp_path: Path, extra: list[str], msg: str) -> None:
    code, err = _run(capsys, "prune", "--method", "wanda", *extra, "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.startswith("error: ") and msg in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_prune_refuses_existing_output(capsys, tmp_path: Path) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    code, err = _run(capsys, "prune", "--method", "wanda", "--ratio", "0.5", "--out", str(out))
    assert code == 2 and "already exists" in err and "--force" in err


def test_missing_model_path(capsys, tmp_path: Path) -> None:
    code, err = _run(
        capsys,
        "prune",
        "--model",
        str(tmp_path / "nope"),
        "--method",
        "wanda",
        "--ratio",
        "0.5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "does not exist" in err


def test_directory_without_config(capsys, tmp_path: Path) -> None:
    code, err = _run(capsys, "eval", str(tmp_path), "--max-windows", "1")
    assert code == 2 and "config.json" in err


def test_unknown_method(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    code, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "nosuch",
        "--ratio",
        "0.5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "unknown method" in err and "sparsegpt" in err
    assert not (tmp_path / "o").exists()


def test_unknown_family(capsys, tiny_gpt2_dir: Path, tmp_path: Path) -> None:
    code, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_gpt2_dir),
        "--method",
        "magnitude",
        "--ratio",
        "0.5",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and "unsupported model family 'gpt2'" in err and "llama" in err


def test_unknown_dataset(capsys, tiny_llama_dir: Path) -> None:
    code, err = _run(capsys, "eval", str(tiny_llama_dir), "--ppl", "nosuch", "--max-windows", "1")
    assert code == 2 and "nosuch" in err


def test_missing_data_dir(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    code, err = _run(
        capsys, "eval", str(tiny_llama_dir), "--ppl", "ptb", "--data-dir", str(tmp_path), "--max-windows", "1"
    )
    assert code == 2 and "ptb" in err


def test_corrupt_checkpoint(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_llama_dir, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    code, err = _run(capsys, "eval", str(bad), "--max-windows", "1")
    assert code == 2 and "cannot load model" in err and "\n" not in err


def test_cuda_unavailable(capsys, tiny_llama_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    code, err = _run(capsys, "eval", str(tiny_llama_dir), "--device", "cuda", "--max-windows", "1")
    assert code == 2 and "CUDA is not available" in err


def test_prune_eval_roundtrip(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "pruned"
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "sparsegpt",
            "--pattern",
            "2:4",
            "--calib-samples",
            "4",
            "--seqlen",
            "32",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert "Loading weights" not in capsys.readouterr().err  # --quiet silences transformers' bars too
    report = json.loads((out / "report.json").read_text())
    for key in (
        "schema_version",
        "method",
        "kind",
        "ratio",
        "pattern",
        "params_before",
        "params_after",
        "seconds",
        "peak_rss_mb",
        "unstructured",
        "structured",
    ):
        assert key in report
    assert report["kind"] == "unstructured" and report["structured"] is None
    assert report["pattern"] == "2:4" and report["params_after"] < report["params_before"]
    assert all(abs(layer["sparsity"] - 0.5) < 1e-6 for layer in report["unstructured"]["layers"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    capsys.readouterr()
    code = main(["eval", str(out), "--seqlen", "32", "--max-windows", "2", "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ppl"]["wikitext2"] > 1 and result["protocol"]["wikitext2"]["seqlen"] == 32
    # --force replaces the directory
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "magnitude",
            "--ratio",
            "0.3",
            "--out",
            str(out),
            "--force",
            "--quiet",
        ]
    )
    assert code == 0 and json.loads((out / "report.json").read_text())["method"] == "magnitude"
