"""Greedy generation with vLLM, run as a script under the vLLM environment's python
(``.venv-vllm``, built by ``make vllm-env``): ``python vllm_generate.py REQUEST.json RESULT.json``.

REQUEST holds ``jobs``: ``{"model": DIR, "prompts": [[token ids]], "max_tokens": N,
"max_model_len": L}``;
RESULT holds, per job, ``tokens`` (the greedy continuation of each prompt) or ``error``
(the exception's last line) when vLLM could not serve the model. One
process serves the models one after another (engine and worker in-process, so vLLM is
imported once); float32 and eager mode so that the tokens can be compared with
transformers'. vLLM may start helper processes, hence the ``__main__`` guard.
"""

from __future__ import annotations

import gc
import json
import os
import sys


def generate(model: str, prompts: list[list[int]], max_tokens: int, max_model_len: int = 512) -> list[list[int]]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(
        model=model,
        dtype="float32",
        enforce_eager=True,
        trust_remote_code=True,
        max_model_len=max_model_len,
        skip_tokenizer_init=True,
        seed=0,
        distributed_executor_backend="uni",
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    try:
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]
    finally:
        del llm
        gc.collect()


def main(request_path: str, result_path: str) -> None:
    with open(request_path) as f:
        req = json.load(f)
    result = []
    for job in req["jobs"]:
        try:
            result.append(
                {"tokens": generate(job["model"], job["prompts"], job["max_tokens"], job.get("max_model_len", 512))}
            )
        except Exception as exc:  # reported to the test, which fails with the message
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            result.append({"error": f"{type(exc).__name__}: {' | '.join(lines[:4])}"})
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main(sys.argv[1], sys.argv[2])
