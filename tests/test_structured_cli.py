"""`--method manual` and `llmprune bench` through the CLI; SmolLM2-135M heterogeneous
round trip (the real default model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmprune.cli import main

SPEC = """
layers:
  0: {remove_kv_heads: [1], remove_channels: {count: 40}}
  1: {remove_attention: true, remove_channels: [0, 1, 2]}
"""


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip()


def test_manual_prune_eval_bench(capsys, tmp_path: Path, tiny_llama_dir: Path) -> None:
    spec = tmp_path / "plan.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "pruned"
    code, stdout, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "manual",
        "--spec",
        str(spec),
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["params_after"] < report["params_before"]
    assert (
        report["structured"]["layers_structured"][0]["kv_heads"] == 1
        and report["structured"]["layers_structured"][1]["heads"] == 0
    )
    assert report["structured"]["layers_structured"][0]["intermediate"] == 128 - 40
    assert report["export"]["kind"] == "layout"
    code, stdout, err = _run(capsys, "eval", str(out), "--seqlen", "64", "--max-windows", "2", "--json", "--quiet")
    assert code == 0, err
    assert json.loads(stdout)["ppl"]["wikitext2"] > 1
    code, stdout, err = _run(
        capsys,
        "bench",
        str(out),
        "--vs",
        str(tiny_llama_dir),
        "--trials",
        "2",
        "--prompt-len",
        "8",
        "--new-tokens",
        "3",
        "--batch",
        "2",
        "--json",
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert set(result["models"]) == {str(out), str(tiny_llama_dir)}
    pruned = result["models"][str(out)]
    assert pruned["parameters"] < result["models"][str(tiny_llama_dir)]["parameters"]
    for key in ("prefill_tok_s_b1", "decode_tok_s_b1", "decode_tok_s_b8", "ttft_s"):
        assert pruned["metrics"][key]["median"] > 0
    assert "decode_tok_s_b1" in result["speedup"]


def test_sobp_refit_options_reach_the_method(capsys, tmp_path: Path, tiny_llama_dir: Path) -> None:
    out = tmp_path / "sobp"
    code, _, err = _run(
        capsys,
        "prune",
        "--model",
        str(tiny_llama_dir),
        "--method",
        "sobp",
        "--ratio",
        "0.3",
        "--method-args",
        "refit_target=stream,refit_damp=0.1",
        "--calib-samples",
        "2",
        "--seqlen",
        "16",
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0, err
    options = json.loads((out / "report.json").read_text())["options"]
    assert options["refit_target"] == "stream" and options["refit_damp"] == 0.1


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--method", "manual"], "needs a plan"),
        (["--method", "manual", "--ratio", "0.3", "--method-args", "spec=x.yaml"], "not --ratio"),
        (["--method", "manual", "--method-args", "spec=missing.yaml"], "not found"),
        (
            ["--method", "wanda-sp", "--ratio", "0.3", "--method-args", "refit_prior=zero"],
            "unknown option 'refit_prior' for method wanda-sp",
        ),
        (
            ["--method", "wanda-sp", "--ratio", "0.3", "--method-args", "refit_damp=heldout"],
            "unknown option 'refit_damp' for method wanda-sp",
        ),
        (
            ["--method", "flap", "--ratio", "0.3", "--method-args", "refit_target=stream"],
            "unknown option 'refit_target' for method flap",
        ),
        (
            ["--method", "sobp", "--ratio", "0.3", "--method-args", "refit_damp=-1"],
            "use 'heldout' or a positive number",
        ),
    ],
)
def test_manual_errors(capsys, tmp_path: Path, args: list[str], msg: str) -> None:
    code, _, err = _run(capsys, "prune", *args, "--out", str(tmp_path / "o"))
    assert code == 2 and msg in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_malformed_spec(capsys, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("layers: [1, 2\n")
    code, _, err = _run(
        capsys, "prune", "--method", "manual", "--method-args", f"spec={spec}", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "not valid YAML" in err


def test_smollm2_heterogeneous_roundtrip(tmp_path: Path) -> None:
    """The real default model: non-uniform heads/channels, a removed attention and a
    removed block; reload with llmprune.load and with trust_remote_code."""
    from transformers import AutoModelForCausalLM

    import llmprune
    from llmprune.models import get_adapter
    from llmprune.surgery import block_widths

    model, tok = llmprune.load(None)
    plan = {
        "layers": {
            0: {"remove_kv_heads": [2]},
            3: {"remove_heads": [0, 3, 6]},
            5: {"remove_channels": {"count": 500}},
            7: {"remove_attention": True},
            9: {"remove_block": True},
            12: {"remove_kv_heads": [0, 1], "remove_channels": {"count": 1000}},
        }
    }
    report = llmprune.prune(model, tok, "manual", spec=plan)
    assert report.params_after < report.params_before
    assert model.config.num_hidden_layers == 29
    ids = tok("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        want = model(ids).logits
    out = tmp_path / "smollm2-pruned"
    llmprune.save(model, tok, out, report)
    reloaded, _ = llmprune.load(out)
    assert block_widths(get_adapter(reloaded)) == block_widths(get_adapter(model))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, want, rtol=1e-5, atol=1e-4)
    remote = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(remote(ids).logits, want, rtol=1e-5, atol=1e-4)
    disk = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    assert disk < 4 * report.params_before


def test_demo_prunes_structured_and_reports_speed(capsys, tmp_path: Path, tiny_llama_dir: Path) -> None:
    """The demo's pipeline (SoBP by default) on a tiny model: before/after perplexity,
    parameters, decode speed dense vs pruned, and a reloadable saved model."""
    import json

    from llmprune.cli import main

    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--model",
            str(tiny_llama_dir),
            "--calib-samples",
            "2",
            "--calib-seqlen",
            "32",
            "--seqlen",
            "32",
            "--eval-windows",
            "2",
            "--speed-trials",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "pruned with sobp ratio 0.2" in text and "decode tokens/s" in text and "fewer" in text
    assert "sobp stages 1-2 only" in text  # 64 calibration tokens: stage 3 skipped, and said so
    report = json.loads((out / "report.json").read_text())
    assert report["options"]["reconstruct"] is False
    assert report["params_after"] < report["params_before"]
    assert set(report["speed"]["models"]) == {"dense", "pruned"}
    assert report["speed"]["models"]["pruned"]["parameters"] < report["speed"]["models"]["dense"]["parameters"]
