"""The bottom layer: modules that pruned checkpoints ship and load (``NoAttention``,
``IndexedLinear``, the layout that resizes stock transformers classes). It imports
nothing of llmprune, because :mod:`.modeling_llmprune` is copied verbatim into
heterogeneous checkpoints for ``trust_remote_code`` loading."""

from .modeling_llmprune import LAYOUT_KEY, LAYOUT_VERSION, IndexedLinear, NoAttention, apply_layout, pruned_class

__all__ = ["LAYOUT_KEY", "LAYOUT_VERSION", "IndexedLinear", "NoAttention", "apply_layout", "pruned_class"]
