"""Token windows: non-overlapping evaluation windows and seeded calibration samples."""

from __future__ import annotations

import torch

from ..errors import LlmpruneError


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Tokenize a whole corpus once (GPTQ convention: the tokenizer's defaults, so a
    BOS token is added only where the tokenizer adds one). Returns a 1-D LongTensor."""
    saved = getattr(tokenizer, "model_max_length", None)
    try:
        if saved is not None:
            tokenizer.model_max_length = int(1e30)  # silence the "sequence too long" warning
        ids = tokenizer(text, return_tensors="pt").input_ids[0]
    finally:
        if saved is not None:
            tokenizer.model_max_length = saved
    return ids


def eval_windows(ids: torch.Tensor, seqlen: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows ``[n, seqlen]``; the incomplete tail is dropped."""
    n = ids.numel() // seqlen
    if n == 0:
        raise LlmpruneError(f"the text has {ids.numel()} tokens, fewer than one window of {seqlen}: lower --seqlen")
    if max_windows is not None:
        n = min(n, max_windows)
    return ids[: n * seqlen].reshape(n, seqlen).clone()


def calibration_windows(ids: torch.Tensor, n: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """``n`` windows of ``seqlen`` tokens at uniformly random starts (SparseGPT's
    sampler), drawn from a generator seeded with ``seed``."""
    if n < 1:
        raise LlmpruneError(f"--calib-samples {n} must be at least 1")
    if ids.numel() <= seqlen:
        raise LlmpruneError(
            f"calibration text has {ids.numel()} tokens, not more than --seqlen {seqlen}: lower --seqlen"
        )
    starts_available = ids.numel() - seqlen
    if n > starts_available:
        raise LlmpruneError(
            f"calibration text has {ids.numel()} tokens: only {starts_available} distinct windows of --seqlen {seqlen} "
            f"for --calib-samples {n}; lower --calib-samples or --seqlen, or use a longer --calib-dataset"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seqlen, (n,), generator=gen)
    return torch.stack([ids[s : s + seqlen] for s in starts.tolist()])


def protocol(name: str, split: str, seqlen: int, n_windows: int, total_windows: int) -> dict:
    """How a perplexity was measured; printed and saved with every number."""
    convention = {
        "wikitext2": '"\\n\\n".join(rows), GPTQ/SparseGPT convention',
        "ptb": '" ".join(lines)',
        "c4": '"\\n\\n".join(documents) of the local validation sample',
    }[name]
    return {
        "dataset": name,
        "split": split,
        "seqlen": seqlen,
        "windows": n_windows,
        "windows_available": total_windows,
        "tokens_scored": n_windows * (seqlen - 1),
        "text": convention,
        "windows_kind": "non-overlapping, tail dropped",
    }
