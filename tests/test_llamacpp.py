"""llama.cpp as the judge of GGUF exports (needs llama-cpp-python: ``make test-llamacpp``).

At f32 (weights and KV cache), llama.cpp's greedy tokens equal transformers' and its perplexity on the same
WikiText-2 windows is within 1 % of ours, for dense, unstructured (SparseGPT 50 %),
uniform structured (SoBP, same counts per layer) and heterogeneous (SoBP, PG, ShortGPT;
a manual plan with an attention-free first layer and a block without MLP) exports of
SmolLM2-135M and of a tiny Qwen2 (FFN widths padded with zero channels to multiples of 32,
as written by default, and as pruned); SoBP re-quantized by llama.cpp to Q4_1 and Q4_K_M has every
matrix quantized, loads, generates and is smaller than the shipped Q4_1 file. ``llmprune prune
--out F.gguf`` (one step) runs too, and its Q4_1 file equals ``llmprune export --quantize q4_1``'s.

The SmolLM2 cases prune a 135M model on CPU (SparseGPT took 5-10 minutes on a shared
2-core machine), hence their longer timeout.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="llama-cpp-python is not installed: `make test-llamacpp` builds it into .venv-llamacpp "
    "and runs these tests there",
)

import llmprune  # noqa: E402
from llmprune.data import eval_windows, load_text, tokenize  # noqa: E402
from llmprune.eval import llamacpp as lc  # noqa: E402
from llmprune.eval.perplexity import perplexity  # noqa: E402
from llmprune.export.gguf import FF_MULTIPLE, source_gguf_for, write_gguf, write_quantized_gguf  # noqa: E402
from tiny_models import build_tiny  # noqa: E402

NEW_TOKENS = 16
PROMPT = "The history of the city begins in the Middle Ages, when"

#: case -> (method, prune options); small calibration (SmolLM2 4 x 128, tiny 4 x 32)
CASES = {
    "dense": None,
    "sparsegpt50": ("sparsegpt", {"ratio": 0.5}),
    "uniform": ("sobp", {"ratio": 0.2, "global_selection": False}),
    "sobp": ("sobp", {"ratio": 0.2}),
    "pg": ("pg", {"ratio": 0.2, "steps": 4, "keep_best": 0}),
    "shortgpt": ("shortgpt", {"ratio": 0.2}),
    "manual": (
        "manual",
        {
            "spec": {
                "layers": {
                    0: {"remove_attention": True, "remove_channels": {"count": 24}},
                    1: {"remove_mlp": True, "remove_kv_heads": [0]},
                }
            }
        },
    ),
}
ARCH = {
    "dense": {"llama", "qwen2"},
    "sparsegpt50": {"llama", "qwen2"},
    "uniform": {"llama", "qwen2"},
    "shortgpt": {"llama", "qwen2"},
    "sobp": {"deci"},
    "pg": {"deci"},
    "manual": {"deci"},
}


def _prune(model, tok, case: str, seqlen: int, **override) -> None:
    if CASES[case] is None:
        return
    method, options = CASES[case]
    options = {**copy.deepcopy(options), **override}
    llmprune.prune(model, tok, method, calib_samples=4, seqlen=seqlen, progress=False, **options)


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0, len(prompt) :].tolist()


def _judge(model, tok, gguf_path: Path, prompt: list[int], windows: torch.Tensor) -> dict:
    llm = lc.open_gguf(gguf_path, n_ctx=max(windows.shape[1], len(prompt) + NEW_TOKENS), threads=2, f32_cache=True)
    try:
        ours = perplexity(model, windows, progress=False)
        theirs = lc.perplexity(llm, windows.numpy())
        return {
            "hf": _hf_greedy(model, prompt, NEW_TOKENS),
            "llamacpp": lc.greedy(llm, prompt, NEW_TOKENS),
            "ppl": ours,
            "ppl_llamacpp": theirs,
        }
    finally:
        llm.close()


@pytest.fixture(scope="module")
def smol():
    model, tok = llmprune.load()
    ids = tokenize(tok, load_text("wikitext2", "test"))
    return model, tok, eval_windows(ids, 256, 3), source_gguf_for(None, tok)


SMOL_TIMEOUT = pytest.mark.timeout(1800)


@SMOL_TIMEOUT
@pytest.mark.parametrize("case", [c for c in CASES if c != "manual"])
def test_smollm2_llamacpp_equals_transformers(case: str, smol, tmp_path: Path) -> None:
    base, tok, windows, source = smol
    model = copy.deepcopy(base)
    _prune(model, tok, case, seqlen=128)
    info = write_gguf(model, tok, tmp_path / f"{case}.gguf", "f32", source_gguf=source)
    assert info["arch"] in ARCH[case], info
    r = _judge(model, tok, tmp_path / f"{case}.gguf", tok(PROMPT).input_ids, windows)
    assert r["llamacpp"] == r["hf"], r
    assert abs(r["ppl_llamacpp"] / r["ppl"] - 1) < 0.01, r


@pytest.mark.parametrize("case", list(CASES))
def test_tiny_qwen2_llamacpp_equals_transformers(case: str, toy_tokenizer, tmp_path: Path) -> None:
    model = build_tiny("qwen2", vocab_size=len(toy_tokenizer))
    _prune(model, toy_tokenizer, case, seqlen=32, **({"ratio": 0.5} if case == "shortgpt" else {}))  # 1 of 2 blocks
    info = write_gguf(model, toy_tokenizer, tmp_path / f"{case}.gguf", "f32")
    assert info["arch"] in ARCH[case] | {"llama"}, info
    windows = eval_windows(tokenize(toy_tokenizer, load_text("wikitext2", "test")[:20000]), 64, 3)
    r = _judge(model, toy_tokenizer, tmp_path / f"{case}.gguf", toy_tokenizer(PROMPT).input_ids, windows)
    assert r["llamacpp"] == r["hf"], r
    assert abs(r["ppl_llamacpp"] / r["ppl"] - 1) < 0.01, r


def test_tiny_llama_attention_free_layers(toy_tokenizer, tmp_path: Path) -> None:
    """deci's attention-free path for a later layer, next to a head-pruned one."""
    model = build_tiny("llama", vocab_size=len(toy_tokenizer))
    llmprune.prune(model, None, "manual", spec={"layers": {0: {"remove_heads": [1, 3]}, 1: {"remove_attention": True}}})
    info = write_gguf(model, toy_tokenizer, tmp_path / "m.gguf", "f32")
    assert info["arch"] == "deci" and [lp["heads"] for lp in info["layers"]] == [2, 0]
    windows = eval_windows(tokenize(toy_tokenizer, load_text("wikitext2", "test")[:20000]), 64, 3)
    r = _judge(model, toy_tokenizer, tmp_path / "m.gguf", toy_tokenizer(PROMPT).input_ids, windows)
    assert r["llamacpp"] == r["hf"], r
    assert abs(r["ppl_llamacpp"] / r["ppl"] - 1) < 0.01, r


def test_tiny_unpadded_ffn_equals_transformers(toy_tokenizer, tmp_path: Path) -> None:
    """The manual case with its FFN widths as pruned (``ff_multiple=1``; padded by default)."""
    model = build_tiny("qwen2", vocab_size=len(toy_tokenizer))
    _prune(model, toy_tokenizer, "manual", seqlen=32)
    info = write_gguf(model, toy_tokenizer, tmp_path / "p.gguf", "f32", ff_multiple=1)
    assert info["arch"] == "deci" and any(lp["ff"] % FF_MULTIPLE for lp in info["layers"]), info
    windows = eval_windows(tokenize(toy_tokenizer, load_text("wikitext2", "test")[:20000]), 64, 3)
    r = _judge(model, toy_tokenizer, tmp_path / "p.gguf", toy_tokenizer(PROMPT).input_ids, windows)
    assert r["llamacpp"] == r["hf"], r
    assert abs(r["ppl_llamacpp"] / r["ppl"] - 1) < 0.01, r


@SMOL_TIMEOUT
def test_sobp_requantized_by_llamacpp_is_smaller(smol, tmp_path: Path) -> None:
    import gguf

    base, tok, windows, source = smol
    model = copy.deepcopy(base)
    _prune(model, tok, "sobp", seqlen=128)
    prompt = tok(PROMPT).input_ids
    floats = {gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32}
    for qtype in ("q4_1", "q4_k_m"):
        out = tmp_path / f"sobp-{qtype}.gguf"
        info = write_quantized_gguf(model, tok, out, qtype, "f16", source_gguf=source, threads=2)
        assert info["bytes"] < source.stat().st_size
        kept_float = [
            t.name for t in gguf.GGUFReader(str(out)).tensors if len(t.shape) == 2 and t.tensor_type in floats
        ]
        assert not kept_float, kept_float  # FFN widths padded to FF_MULTIPLE: llama.cpp splits every matrix
        llm = lc.open_gguf(out, n_ctx=128, threads=2)
        try:
            assert len(lc.greedy(llm, prompt, 4)) == 4
            assert np.isfinite(lc.prompt_logits(llm, prompt)).all()
        finally:
            llm.close()


def test_prune_to_gguf_in_one_step(toy_tokenizer, tmp_path: Path) -> None:
    """``llmprune prune --out F.f32.gguf`` of a tiny LLaMA (a manual plan: the ``deci``
    stand-ins) runs in llama.cpp with transformers' greedy tokens; ``--out F.Q4_1.gguf``
    equals ``llmprune export DIR --format gguf --quantize q4_1`` byte for byte."""
    from llmprune.cli import main

    src = tmp_path / "src"
    build_tiny("llama", vocab_size=len(toy_tokenizer)).save_pretrained(src)  # a saved Qwen2 reloads with one more token
    toy_tokenizer.save_pretrained(src)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "layers:\n  0: {remove_attention: true, remove_channels: {count: 24}}\n"
        "  1: {remove_mlp: true, remove_kv_heads: [0]}\n"
    )

    def prune(out: Path) -> None:
        argv = ["prune", "--model", str(src), "--method", "manual", "--method-args", f"spec={plan}"]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0

    prune(tmp_path / "p.f32.gguf")
    prune(tmp_path / "dir")
    model, tok = llmprune.load(tmp_path / "dir")
    windows = eval_windows(tokenize(tok, load_text("wikitext2", "test")[:20000]), 64, 3)
    r = _judge(model, tok, tmp_path / "p.f32.gguf", tok(PROMPT).input_ids, windows)
    assert r["llamacpp"] == r["hf"], r
    assert abs(r["ppl_llamacpp"] / r["ppl"] - 1) < 0.01, r
    prune(tmp_path / "p.Q4_1.gguf")
    two_step = tmp_path / "two-step.gguf"
    assert (
        main(["export", str(tmp_path / "dir"), "--format", "gguf", "--quantize", "q4_1", "--out", str(two_step)]) == 0
    )
    assert (tmp_path / "p.Q4_1.gguf").read_bytes() == two_step.read_bytes()
