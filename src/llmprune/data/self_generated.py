"""Self-generated calibration text: windows the dense model samples itself.

Ji et al. 2024, "Beware of Calibration Data for Pruning Large Language Models" (ICLR 2025),
find that calibration text close to the model's own training distribution prunes better
than the usual WikiText/C4 windows, and propose text the model generates itself as a proxy
when that distribution is not available. Here the prefix follows the model's kind:

- a **chat model** (the tokenizer has a chat template) starts each window at the opening
  of a user turn, as its template renders it (the default system prompt included), and
  writes the user's message, its own reply and the turns that follow; the calibration then
  exercises the chat format the pruned model will be used with. Calibrating an instruct
  model on encyclopaedic text alone can remove what it needs to follow that format;
- a **base model** starts from its BOS token (or, lacking one, its EOS token).

Sampling: temperature 1, top-k 50, top-p 0.95, no early stop at the end-of-turn token, so
every window is exactly ``seqlen`` tokens; batches of ``batch_size`` windows, each batch
after seeding torch with ``seed + batch index`` (the same windows for the same seed, model,
torch build and device). Unlike the paper, no perplexity filter is applied to the samples.

Generated windows are cached (``$LLMPRUNE_CACHE``/calib, keyed by the model's config and
weights fingerprint, the tokenizer's template and every argument above), since generating
``128 × 2048`` tokens on a CPU takes as long as a pruning run.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from ..errors import LlmpruneError

NAME = "self"
SAMPLING = {"temperature": 1.0, "top_k": 50, "top_p": 0.95}
_SENTINEL = "llmprune calibration turn"


def prefix_ids(tokenizer) -> list[int]:
    """Token ids every window starts with: the chat template's opening of a user turn,
    else ``[bos]``, else ``[eos]``."""
    template = getattr(tokenizer, "chat_template", None)
    if template:
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False)
        except Exception as exc:  # a template that needs other roles or kwargs
            raise LlmpruneError(
                f"--calib-dataset self: the tokenizer's chat template does not render a user turn "
                f"({type(exc).__name__}: {exc}); use --calib-dataset wikitext2"
            ) from None
        cut = text.find(_SENTINEL)
        if cut < 0:
            raise LlmpruneError(
                "--calib-dataset self: the chat template changes the user's text, so the turn's opening "
                "cannot be found; use --calib-dataset wikitext2"
            )
        ids = tokenizer(text[:cut], add_special_tokens=False).input_ids
        if ids:
            return list(ids)
    for attr in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return [int(tid)]
    raise LlmpruneError(
        "--calib-dataset self: the tokenizer has no chat template, BOS or EOS token to start from; "
        "use --calib-dataset wikitext2"
    )


def _pad_id(tokenizer, prefix: list[int]) -> int:
    """Any valid id: nothing is padded (no window stops early), but ``generate`` wants one."""
    for tid in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    return prefix[0]


def _fingerprint(model: Any, tokenizer, parts: tuple) -> str:
    h = hashlib.sha256()
    h.update(model.config.to_json_string().encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(repr((len(tokenizer), parts, torch.__version__)).encode())
    for name, p in model.named_parameters():  # a cheap but weight-sensitive digest
        flat = p.detach().reshape(-1)
        h.update(name.encode())
        h.update(flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def self_generated_windows(
    model: Any,  # a transformers PreTrainedModel (config, generate)
    tokenizer,
    n: int,
    seqlen: int,
    seed: int = 0,
    batch_size: int = 8,
    cache: bool = True,
) -> torch.Tensor:
    """``[n, seqlen]`` token windows sampled from ``model`` (see the module docstring)."""
    prefix = prefix_ids(tokenizer)
    if len(prefix) >= seqlen:
        raise LlmpruneError(
            f"--calib-dataset self: the prompt opening takes {len(prefix)} tokens, not fewer than --seqlen {seqlen}; "
            "raise --seqlen"
        )
    device = next(model.parameters()).device
    parts = (n, seqlen, seed, batch_size, tuple(sorted(SAMPLING.items())), str(device), str(model.dtype))
    from ..models.loading import cache_dir

    path = cache_dir() / "calib" / f"self-{_fingerprint(model, tokenizer, parts)}.pt"
    if cache and path.is_file():
        try:
            ids = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(ids, torch.Tensor) and tuple(ids.shape) == (n, seqlen):
                return ids
        except Exception:
            pass  # a damaged cache entry is regenerated
    rows = []
    was_training = model.training
    model.eval()
    try:
        for b, start in enumerate(range(0, n, batch_size)):
            k = min(batch_size, n - start)
            torch.manual_seed(seed + b)
            inp = torch.tensor([prefix] * k, device=device)
            with torch.no_grad():
                out = model.generate(
                    inp,
                    attention_mask=torch.ones_like(inp),
                    do_sample=True,
                    max_new_tokens=seqlen - len(prefix),
                    eos_token_id=None,
                    pad_token_id=_pad_id(tokenizer, prefix),
                    **SAMPLING,
                )
            rows.append(out[:, :seqlen].cpu())
    finally:
        model.train(was_training)
    ids = torch.cat(rows)
    if ids.shape != (n, seqlen):
        raise LlmpruneError(
            f"--calib-dataset self: generation returned {tuple(ids.shape)} tokens, not ({n}, {seqlen}); "
            "use --calib-dataset wikitext2"
        )
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(ids, tmp)
            tmp.replace(path)
        except OSError:
            pass  # caching is an optimisation
    return ids
