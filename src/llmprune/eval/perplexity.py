"""Perplexity over non-overlapping windows (the GPTQ / SparseGPT / Wanda protocol).

``ppl = exp( Σ NLL / Σ scored tokens )`` where each window of ``seqlen`` tokens scores
its last ``seqlen − 1`` tokens (next-token prediction, no context across windows).
"""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checks import check_seqlen
from ..data import eval_windows, load_text, protocol, tokenize
from ..errors import LlmpruneError

EVAL_SPLIT = {"wikitext2": "test", "ptb": "test", "c4": "validation"}


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "ppl",
) -> float:
    """Perplexity of ``model`` on ``windows`` ([n, seqlen]), batch 1, float32 loss."""
    nll, count = 0.0, 0
    with torch.inference_mode():
        for i in tqdm(range(windows.shape[0]), desc=desc, disable=not progress, file=sys.stderr):
            ids = windows[i : i + 1].to(device)
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
            loss = F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            if not math.isfinite(loss):
                raise LlmpruneError(
                    f"perplexity is not finite (window {i}): the model produces NaN/inf logits; "
                    "evaluate in float32 (--dtype float32) or check the pruned checkpoint"
                )
            nll += loss
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def evaluate_ppl(
    model: nn.Module,
    tokenizer,
    datasets: list[str],
    seqlen: int = 2048,
    max_windows: int | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """``{"ppl": {name: value}, "protocol": {name: {...}}}`` for each dataset."""
    result: dict = {"ppl": {}, "protocol": {}}
    for name in datasets:
        key = name.lower()
        split = EVAL_SPLIT.get(key)
        if split is None:
            raise LlmpruneError(f"unknown perplexity dataset {name!r}: choose from {', '.join(EVAL_SPLIT)}")
        ids = tokenize(tokenizer, load_text(key, split, data_dir))
        check_seqlen(model, seqlen)
        all_windows = ids.numel() // seqlen
        windows = eval_windows(ids, seqlen, max_windows)
        result["ppl"][key] = perplexity(model, windows, device=device, progress=progress, desc=key)
        result["protocol"][key] = protocol(key, split, seqlen, windows.shape[0], all_windows)
    return result
