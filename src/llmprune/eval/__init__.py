"""Evaluation: perplexity."""

from .perplexity import evaluate_ppl, perplexity

__all__ = ["evaluate_ppl", "perplexity"]
