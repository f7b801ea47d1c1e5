"""Configuration of per-layer pruned LLaMA-style checkpoints in the DeciLM / Nemotron-NAS
``block_configs`` format (``model_type: "nemotron-nas"``).

This file is self-contained (transformers only) because it is copied into every such
checkpoint, where ``AutoConfig`` imports it through ``auto_map`` (vLLM, SGLang and
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` all read the
config this way). It is llmprune's own small class, not NVIDIA's: it holds the LLaMA
hyper-parameters plus one entry per decoder block::

    {"attention": {"no_op": false, "replace_with_linear": false, "n_heads_in_group": 3},
     "ffn": {"no_op": false, "replace_with_linear": false, "intermediate_size": 1336}}

The hidden size, the query-head count and ``head_dim`` are global; a block's KV-head
count is ``num_attention_heads // n_heads_in_group``. ``no_op`` removes the attention
(with its input norm) or the MLP (with its post-attention norm). Serving engines read
the entries as attributes (``block.attention.no_op``), so they are dicts that also
answer attribute access, which keeps ``config.json`` plain JSON.
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig


class BlockSection(dict):
    """One ``block_configs`` entry (or its ``attention``/``ffn`` part): a dict whose keys
    are also attributes; a missing key is a missing attribute (``hasattr`` is False)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def as_block_configs(blocks: list | None) -> list | None:
    """``block_configs`` read from JSON (or given as objects) as :class:`BlockSection`."""
    if blocks is None:
        return None
    out = []
    for block in blocks:
        block = dict(block) if isinstance(block, dict) else dict(vars(block))
        out.append(
            BlockSection(
                {
                    key: BlockSection(value if isinstance(value, dict) else vars(value))
                    if key in ("attention", "ffn")
                    else value
                    for key, value in block.items()
                }
            )
        )
    return out


class LlmpruneDeciLMConfig(LlamaConfig):
    """LLaMA hyper-parameters plus per-block ``block_configs`` (see the module docstring).

    ``qkv_bias`` (present only when it differs from ``attention_bias``, e.g. Qwen2-style
    models) gives q/k/v projections a bias while ``attention_bias`` governs ``o_proj``.
    """

    model_type = "nemotron-nas"

    def __init__(self, block_configs: list | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_configs = as_block_configs(block_configs)
        if self.block_configs is not None and len(self.block_configs) != self.num_hidden_layers:
            raise ValueError(
                f"block_configs lists {len(self.block_configs)} blocks but num_hidden_layers is "
                f"{self.num_hidden_layers}"
            )
