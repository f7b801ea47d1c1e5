"""The method contract: a method defined and registered here (no file outside tests/
changes) runs through the CLI; options are validated by the method's Config before any
model is loaded; old per-method flags still work, with a deprecation line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import Field
from torch import nn

from llmprune.cli import main
from llmprune.errors import LlmpruneError
from llmprune.methods import Method, MethodConfig, PruneContext, PruneResult, build_method, register


class ToyConfig(MethodConfig):
    scale: float = Field(0.5, ge=0, le=1, description="factor applied to every block linear weight")
    blocks: int | None = Field(None, description="only the first N blocks")


@register
class Toy(Method):
    """Scales the block linears of the first ``blocks`` blocks by ``scale`` (keeps shapes)."""

    name = "toy"
    kind = "unstructured"
    summary = "scales block linear weights (a test method)"
    Config = ToyConfig
    config: ToyConfig

    def __init__(self, sparsity: object, /, **options: object) -> None:
        self.sparsity = sparsity
        self.config = self.Config.parse(self.name, options)

    @property
    def needs_calibration(self) -> bool:
        return False

    def run(self, ctx: PruneContext) -> PruneResult:
        layers = []
        blocks = list(ctx.adapter.blocks())[: self.config.blocks]
        for b, block in enumerate(blocks):
            for name, lin in ctx.adapter.prunable_linears(block).items():
                with torch.no_grad():
                    lin.weight.mul_(self.config.scale)
                layers.append(
                    {
                        "block": b,
                        "linear": name,
                        "shape": list(lin.weight.shape),
                        "sparsity": float((lin.weight == 0).float().mean()),
                    }
                )
        return PruneResult(seconds=0.0, peak_rss_mb=0.0, layers=layers, details={"scaled_blocks": len(blocks)})


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_toy_method_runs_through_the_cli(capsys, tiny_llama_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "toy"
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--method",
            "toy",
            "--ratio",
            "0.5",
            "--method-args",
            "scale=0,blocks=1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, _err(capsys)
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "toy" and report["details"] == {"scaled_blocks": 1}
    assert report["method_args"] == {"scale": 0.0, "blocks": 1}
    weights = load_file(out / "model.safetensors")
    zeroed = [k for k, v in weights.items() if k.startswith("model.layers.0.") and k.endswith("proj.weight")]
    assert zeroed and all(bool((weights[k] == 0).all()) for k in zeroed)
    assert not (weights["model.layers.1.mlp.down_proj.weight"] == 0).all()
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["method"] == "toy" and recipe["ratio"] == 0.5 and recipe["method_args"]["blocks"] == 1
    # the recorded recipe repeats the run
    code = main(
        [
            "prune",
            "--model",
            str(tiny_llama_dir),
            "--recipe",
            str(out / "recipe.yaml"),
            "--out",
            str(tmp_path / "again"),
            "--quiet",
        ]
    )
    assert code == 0, _err(capsys)
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["method_args"] == report["method_args"] and again["ratio"] == 0.5
    capsys.readouterr()
    assert main(["methods", "toy"]) == 0
    listing = capsys.readouterr().out
    assert "scale" in listing and "factor applied" in listing and "0.5" in listing


@pytest.mark.parametrize(
    "args,msg",
    [
        ("scale=2", "toy option scale=2"),
        ("scale=abc", "toy option scale=abc"),
        ("scal=0.1", "unknown option 'scal' for method toy"),
        ("blocks=1.5", "toy option blocks"),
        ("scale", "is not key=value"),
    ],
)
def test_bad_method_args_fail_before_loading(capsys, tmp_path: Path, args: str, msg: str) -> None:
    """--model points nowhere: the error is about the option, so the model was never loaded."""
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "no-model"),
            "--method",
            "toy",
            "--ratio",
            "0.5",
            "--method-args",
            args,
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = _err(capsys)
    assert code == 2 and err.startswith("error: ") and msg in err and "\n" not in err
    assert "does not exist" not in err and not (tmp_path / "o").exists()
    if "unknown" in msg:
        assert "valid options: scale, blocks" in err


def test_bad_option_of_a_real_method_fails_before_loading(capsys, tmp_path: Path) -> None:
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "no-model"),
            "--method",
            "wanda-sp",
            "--ratio",
            "0.2",
            "--method-args",
            "damp=0.1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = _err(capsys)
    assert (
        code == 2 and "unknown option 'damp' for method wanda-sp" in err and "valid options: units, allow_empty" in err
    )


def test_method_args_are_converted_to_the_config_types() -> None:
    m = build_method(
        "pg",
        ratio="0.3",
        options={
            "steps": "7",
            "lr": "0.5",
            "units": "groups,channels,blocks",
            "budget": "params",
            "offload": "true",
            "seed": "none",
        },
    )
    assert m.config.steps == 7 and m.config.lr == 0.5 and m.config.offload is True and m.config.seed is None
    assert m.config.units == ("groups", "channels", "blocks")
    sobp = build_method("sobp", ratio=0.2, options={"refit_damp": "heldout", "refine": "false"})
    assert sobp.config.refit_damp == "heldout" and sobp.config.refine is False
    assert build_method("sobp", ratio=0.2, options={"refit_damp": "0.1"}).config.refit_damp == 0.1
    with pytest.raises(LlmpruneError, match="is structured"):
        build_method("flap", pattern="2:4")


def test_parse_method_args() -> None:
    from llmprune.recipe import parse_method_args

    assert parse_method_args("a=1,units=groups,channels,b=x") == {"a": "1", "units": "groups,channels", "b": "x"}
    assert parse_method_args(None) == {} and parse_method_args("") == {}
    with pytest.raises(LlmpruneError, match="given twice"):
        parse_method_args("a=1,a=2")


def test_recipe_errors_and_cli_overrides(capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: toy\nratio: 0.5\nsparsity: 0.5\n")
    code = main(["prune", "--recipe", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2 and "unknown key 'sparsity'" in _err(capsys)
    good = tmp_path / "good.yaml"
    good.write_text("method: toy\nratio: 0.5\nmethod_args: {scale: 0.25}\n")
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "none"),
            "--recipe",
            str(good),
            "--method-args",
            "scale=7",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "toy option scale=" in _err(capsys)  # --method-args override the recipe's
    options_only = tmp_path / "options.yaml"
    options_only.write_text("scale: 3\n")  # a plain mapping of method options
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "none"),
            "--method",
            "toy",
            "--ratio",
            "0.5",
            "--recipe",
            str(options_only),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "toy option scale=3" in _err(capsys)


def test_deprecated_flags_map_to_method_args(capsys, tmp_path: Path) -> None:
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "none"),
            "--method",
            "sobp",
            "--ratio",
            "0.3",
            "--refit-damp",
            "-1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    lines = _err(capsys).splitlines()
    assert code == 2 and len(lines) == 2
    assert "--refit-damp is deprecated" in lines[0] and "--method-args refit_damp=-1" in lines[0]
    assert lines[1].startswith("error: ") and "use 'heldout' or a positive number" in lines[1]
    code = main(
        [
            "prune",
            "--model",
            str(tmp_path / "none"),
            "--method",
            "flap",
            "--ratio",
            "0.3",
            "--no-refine",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "unknown option 'refine' for method flap" in _err(capsys)


def test_prune_help_lists_at_most_15_options(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = capsys.readouterr().out
    options = {line.split()[0].rstrip(",") for line in text.splitlines() if line.strip().startswith("--")}
    assert len(options) <= 15 and "--method-args" in options and "--recipe" in options
    assert "--refit-damp" not in text and "--steps" not in text


def test_registry_refuses_a_taken_name() -> None:
    class Other(Toy):
        name = "wanda"

    with pytest.raises(ValueError, match="taken"):
        register(Other)


def test_method_objects_go_to_the_api(toy_tokenizer) -> None:
    import llmprune
    from tiny_models import build_tiny

    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    m = build_method("toy", ratio=0.5, options={"scale": 0.0})
    report = llmprune.prune(model, toy_tokenizer, m, progress=False)
    assert report.kind == "unstructured" and report.unstructured.block_sparsity == 1.0
    with pytest.raises(LlmpruneError, match="when building the method"):
        llmprune.prune(model, toy_tokenizer, m, ratio=0.3)
    assert isinstance(m, Method) and not isinstance(m, nn.Module)


def test_sobp_stage1_is_passed_in_not_patched(toy_tokenizer) -> None:
    """``reuse={"first_order_scores": ...}`` replaces SoBP's stage 1: the scores it would
    compute give the same model; other scores give another selection."""
    import llmprune
    from llmprune.methods.sobp import first_order_scores
    from llmprune.models import get_adapter
    from tiny_models import build_tiny

    kw = dict(ratio=0.3, calib_samples=2, seqlen=16, progress=False, reconstruct=False)
    ref = build_tiny("llama", vocab_size=len(toy_tokenizer))
    llmprune.prune(ref, toy_tokenizer, "sobp", **kw)
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    calib = llmprune.calibration_data(toy_tokenizer, 2, 16, seed=0)
    scores = first_order_scores(model, get_adapter(model), calib, progress=False)
    llmprune.prune(model, toy_tokenizer, "sobp", reuse={"first_order_scores": scores}, **kw)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values()))
    # other scores: block 0 made 1000x more important, so every removal moves to block 1
    flipped = [
        ([s * 1000 for s in gs], [s * 1000 for s in cs]) if b == 0 else (gs, cs) for b, (gs, cs) in enumerate(scores)
    ]
    other = build_tiny("llama", vocab_size=len(toy_tokenizer))
    llmprune.prune(other, toy_tokenizer, "sobp", reuse={"first_order_scores": flipped}, **kw)
    widths = [m.mlp.down_proj.in_features for m in other.model.layers]
    assert widths != [m.mlp.down_proj.in_features for m in ref.model.layers] or not all(
        torch.equal(a, b) for a, b in zip(ref.state_dict().values(), other.state_dict().values())
    )
