# The two README commands: `make test` and `make paper`. Each sets itself up from nothing
# (.venv with the pinned stack, llama-cpp-python and the llama.cpp tools, cached builds).
SHELL := /bin/bash
PY := .venv/bin/python
export SILENTZONE_HOME ?= $(HOME)/.cache/silentzone
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore

.PHONY: setup test test-fast paper lab bench clean-venv
setup: .venv/.ready

.venv/.ready: requirements.txt requirements-nodeps.txt pyproject.toml scripts/setup_env.sh scripts/build_llama.sh
	scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q

test-fast: setup  ## everything but the real-model tests
	$(PY) -m pytest -q -m "not slow"

# Runs the stages that exist today: export + check both embedded references. Later stages
# (quantize, fidelity, benchmarks, analysis, figures) are added here as their issues land.
paper: setup
	$(PY) -m silentzone.cli prepare --study smollm2
	$(PY) -m silentzone.cli prepare --study gemma3
	@echo "make paper: references ready. The quantize/fidelity/benchmark/analysis stages are not built yet;"
	@echo "no results or figures were produced."

lab: setup
	.venv/bin/jupyter lab notebooks/

clean-venv:
	rm -rf .venv
