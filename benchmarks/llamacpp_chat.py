"""Does a GGUF answer? Greedy chat replies of GGUF files in llama.cpp (llama-cpp-python's
``create_chat_completion`` with the file's own chat template, temperature 0).

    .venv-llamacpp/bin/python benchmarks/llamacpp_chat.py DENSE.gguf PRUNED.gguf [--out JSON]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for staying healthy.",
    "Write one sentence about the ocean.",
)


def main() -> None:
    from llama_cpp import Llama

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="GGUF files")
    ap.add_argument("--max-tokens", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the replies as JSON")
    args = ap.parse_args()
    out: dict = {"protocol": {"prompts": list(PROMPTS), "max_tokens": args.max_tokens, "temperature": 0.0}}
    for path in args.models:
        llm = Llama(model_path=path, n_ctx=512, n_threads=args.threads, verbose=False, seed=0)
        replies = []
        for q in PROMPTS:
            r = llm.create_chat_completion(
                messages=[{"role": "user", "content": q}], max_tokens=args.max_tokens, temperature=0.0
            )
            replies.append({"prompt": q, "reply": r["choices"][0]["message"]["content"]})
        llm.close()
        out[Path(path).name] = {"bytes": Path(path).stat().st_size, "replies": replies}
    text = json.dumps(out, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
