"""Document processing referenced by the task yamls (``!function llmprune.eval.tasks.utils...``)."""

from __future__ import annotations


def hellaswag_process_docs(dataset):
    """Apply lm-eval's own HellaSwag text clean-up to our ``{query, choices, label}`` rows.

    lm-eval builds ``query`` from ``activity_label``, ``ctx_a`` and ``ctx_b`` and cleans
    query and endings with ``lm_eval.tasks.hellaswag.utils.preprocess``; our file already
    holds the joined query, so only the clean-up (idempotent on clean text) is re-applied.
    ``gold`` mirrors lm-eval's processed field.
    """
    from lm_eval.tasks.hellaswag.utils import preprocess

    def _doc(doc: dict) -> dict:
        return {
            "query": preprocess(doc["query"]),
            "choices": [preprocess(c) for c in doc["choices"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_doc)
