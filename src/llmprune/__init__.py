"""llmprune: retraining-free pruning of Hugging Face causal LMs.

Public API (imported lazily so ``import llmprune`` stays fast)::

    model, tok = llmprune.load()                       # SmolLM2-135M, embedded
    report = llmprune.prune(model, tok, "sparsegpt", ratio=0.5)
    llmprune.evaluate(model, tok, ppl="wikitext2")
    llmprune.save(model, tok, "pruned/", report)
    llmprune.prune_streamed("big-model/", "wanda", "pruned/", ratio=0.5)  # block by block from disk
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"load", "prune", "evaluate", "save", "calibration_data"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "prune_streamed":
        from .streamed import prune_streamed

        return prune_streamed
    raise AttributeError(name)


__all__ = sorted(_API) + ["__version__", "prune_streamed"]
