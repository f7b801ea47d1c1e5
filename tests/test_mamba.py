"""The Mamba adapter on a tiny random ``MambaForCausalLM``: layer-wise replay, what each
linear's statistics see, unstructured pruning end to end, save and reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_mamba

from llmprune.engine import LayerwiseEngine
from llmprune.errors import LlmpruneError
from llmprune.methods import get_method, prune_unstructured
from llmprune.models import get_adapter
from llmprune.solvers import Sparsity


def _ids(n: int = 2, length: int = 24, seed: int = 0, vocab: int = 128) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_adapter_groups_and_structured_refusal() -> None:
    model = build_tiny_mamba()
    adapter = get_adapter(model)
    assert adapter.family == "mamba" and adapter.tied_embeddings()
    block = adapter.blocks()[0]
    assert list(adapter.prunable_linears(block)) == ["in_proj", "x_proj", "dt_proj", "out_proj"]
    assert [g.names for g in adapter.linear_groups(block)] == [("in_proj",), ("x_proj",), ("dt_proj",), ("out_proj",)]
    with pytest.raises(LlmpruneError, match="structured pruning is not supported for mamba"):
        adapter.attention(block)
    with pytest.raises(LlmpruneError, match="structured pruning is not supported for mamba"):
        adapter.mlp(block)


def test_layerwise_forward_equals_full_forward() -> None:
    model = build_tiny_mamba()
    adapter = get_adapter(model)
    ids = _ids()
    engine = LayerwiseEngine(model, adapter, progress=False)
    engine.run(ids, lambda i, block, runner: None)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits
    assert torch.allclose(adapter.logits(engine.final_hidden), full, atol=1e-5, rtol=1e-5)


class _RecordMatmul(torch.overrides.TorchFunctionMode):
    """Records the right operand of every ``weight @ x`` (how the mixer applies dt_proj)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.seen: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("matmul", "__matmul__") and args and args[0] is self.weight:
            self.seen.append(args[1].detach().clone())
        return func(*args, **(kwargs or {}))


def test_every_linear_sees_its_real_input() -> None:
    """Hessians of the four groups equal 2/N·XᵀX of what each weight really multiplies;
    dt_proj (applied as ``dt_proj.weight @ dt``, never as a module) included."""
    model = build_tiny_mamba()
    adapter = get_adapter(model)
    ids = _ids(2, 16)
    block = adapter.blocks()[0]
    mixer = block.mixer
    inputs: dict[str, list[torch.Tensor]] = {"in_proj": [], "x_proj": [], "out_proj": []}
    handles = [
        getattr(mixer, name).register_forward_pre_hook(
            lambda m, args, name=name: inputs[name].append(args[0].detach().clone())
        )
        for name in inputs
    ]
    captured = {}

    def on_block(i: int, blk, runner) -> None:
        if i == 0:
            with _RecordMatmul(mixer.dt_proj.weight) as rec:
                captured["stats"] = runner.collect(adapter.linear_groups(blk), hessian=True, dtype=torch.float64)
            captured["dt"] = rec.seen

    LayerwiseEngine(model, adapter, progress=False).run(ids, on_block)
    for h in handles:
        h.remove()
    stats = captured["stats"]
    dt = torch.cat([x.transpose(1, 2).reshape(-1, x.shape[1]) for x in captured["dt"]]).double()
    real = {
        name: torch.cat([x.reshape(-1, x.shape[-1]) for x in xs[: len(ids)]]).double() for name, xs in inputs.items()
    }
    real["dt_proj"] = dt
    for name, X in real.items():
        assert X.shape[1] == getattr(mixer, name).in_features
        assert torch.allclose(stats[name].hessian, 2 * X.T @ X / X.shape[0], atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("method,spec", [("magnitude", "0.3"), ("sparsegpt", "0.5"), ("mrp", "0.5"), ("mrp", "2:4")])
def test_prune_save_reload(method: str, spec: str, tmp_path: Path) -> None:
    from transformers import MambaForCausalLM

    model = build_tiny_mamba()
    adapter = get_adapter(model)
    sparsity = Sparsity.parse(pattern=spec) if ":" in spec else Sparsity.parse(ratio=spec)
    report = prune_unstructured(model, adapter, get_method(method)(sparsity), _ids(4, 32, seed=1), progress=False)
    assert len(report.layers) == 8
    for block in adapter.blocks():
        for name, lin in adapter.prunable_linears(block).items():
            zero = lin.weight == 0
            if sparsity.is_nm:
                assert (~zero).reshape(zero.shape[0], -1, sparsity.m).sum(-1).max() <= sparsity.n, name
            else:
                assert int(zero.sum()) == round(sparsity.ratio * zero.numel()), name
    ids = _ids(1, 16, seed=2)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    assert torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    reloaded = MambaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids, use_cache=False).logits, logits)


def test_api_prune_save_load(toy_tokenizer, tmp_path: Path) -> None:
    import llmprune

    model = build_tiny_mamba(vocab_size=len(toy_tokenizer))
    report = llmprune.prune(model, toy_tokenizer, "mrp", pattern="2:4", calib_samples=2, seqlen=32, progress=False)
    assert report.model_type == "mamba" and report.unstructured.block_sparsity == pytest.approx(0.5)
    out = llmprune.save(model, toy_tokenizer, tmp_path / "m", report)
    again, _ = llmprune.load(out)
    ids = _ids(1, 16, seed=3, vocab=len(toy_tokenizer))
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, use_cache=False).logits, model(input_ids=ids, use_cache=False).logits)
    with pytest.raises(LlmpruneError, match="not supported for mamba"):
        llmprune.prune(model, toy_tokenizer, "wanda-sp", ratio=0.2, calib_samples=2, seqlen=16, progress=False)
