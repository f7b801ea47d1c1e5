"""Tokenizer metadata of a GGUF file: carried over from the source GGUF, or built from a
Hugging Face byte-level BPE tokenizer (GGUF's ``gpt2`` tokenizer model).

Keys follow the GGUF specification (``tokenizer.ggml.*``, ``tokenizer.chat_template``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..errors import LlmpruneError

#: ``general.*`` keys that describe the *source* file's encoding or size, not the model.
_SOURCE_ONLY = {
    "general.architecture",
    "general.file_type",
    "general.quantization_version",
    "general.size_label",
    "general.alignment",
}

# GGUF token types (llama.cpp's llama_token_type)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def metadata(source: Path) -> dict[str, tuple]:
    """``{key: (value, type, array element type)}`` of a GGUF file's tokenizer and
    general fields (parsed once per file: ``GGUFReader`` takes seconds on a 49k vocabulary)."""
    source = Path(source)
    return _metadata(str(source.resolve()), source.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _metadata(path: str, mtime_ns: int) -> dict[str, tuple]:
    import gguf

    out = {}
    for key, f in gguf.GGUFReader(path).fields.items():
        if key.startswith(("tokenizer.", "general.")):
            vtype = f.types[0]
            out[key] = (f.contents(), vtype, f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None)
    return out


def carry_over(writer, source: Path, n_vocab: int) -> list[str]:
    """Copy ``tokenizer.*`` and descriptive ``general.*`` fields of ``source`` into
    ``writer``; the source's token list must match the model's embedding rows."""
    fields = metadata(source)
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise LlmpruneError(f"{source.name} has no tokenizer.ggml.tokens: cannot carry its tokenizer over")
    if len(tokens[0]) != n_vocab:
        raise LlmpruneError(
            f"{source.name} lists {len(tokens[0])} tokens but the model has {n_vocab} embedding "
            "rows: the model does not come from that GGUF"
        )
    copied = []
    for key, (value, vtype, sub) in fields.items():
        if key not in _SOURCE_ONLY:
            writer.add_key_value(key, value, vtype, sub_type=sub)
            copied.append(key)
    return copied


def _backend_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise LlmpruneError(
            "GGUF export needs a fast (tokenizers) tokenizer to build the vocabulary: "
            "save the model with its tokenizer.json"
        )
    return json.loads(backend.to_str())


def _is_byte_level(spec: dict) -> bool:
    def has(node) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has(n) for n in node.get("pretokenizers", []) + node.get("decoders", []))

    return has(spec.get("pre_tokenizer")) or has(spec.get("decoder"))


def check_hf_vocab(tokenizer, n_vocab: int) -> dict:
    """The tokenizer's ``tokenizers`` JSON if :func:`add_hf_vocab` can write it for a model
    with ``n_vocab`` embedding rows, else a one-line error (before any pruning work)."""
    spec = _backend_json(tokenizer)
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or not _is_byte_level(spec):
        kind = model.get("type", "?") + (
            " with byte fallback (SentencePiece-style)" if model.get("byte_fallback") else ""
        )
        raise LlmpruneError(
            f"GGUF export builds byte-level BPE vocabularies only; this tokenizer is {kind}: "
            "SentencePiece/Unigram vocabularies are not implemented"
        )
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise LlmpruneError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model only {n_vocab} "
            "embedding rows: tokenizer and model do not match"
        )
    return spec


def add_hf_vocab(writer, tokenizer, n_vocab: int) -> None:
    """Write a byte-level BPE tokenizer as GGUF's ``gpt2`` model: tokens by id (ids the
    tokenizer lacks up to the embedding size become unused ``[PAD{i}]``), types, merges,
    special ids, BOS/EOS insertion and the chat template. Pre-tokenization uses
    llama.cpp's ``default`` regex; SentencePiece-style tokenizers are refused."""
    spec = check_hf_vocab(tokenizer, n_vocab)
    model = spec.get("model", {})
    vocab = tokenizer.get_vocab()
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    tokens: list[str] = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [UNUSED] * n_vocab
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = (CONTROL if added[i].get("special") else USER_DEFINED) if i in added else NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for name, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("unk", writer.add_unk_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        value = getattr(tokenizer, f"{name}_token_id", None)
        if value is not None:
            add(int(value))
    probe = tokenizer("a").input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    writer.add_add_bos_token(bool(bos is not None and probe and probe[0] == bos))
    writer.add_add_eos_token(bool(eos is not None and probe and probe[-1] == eos))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)
