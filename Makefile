# The two README commands: `make test` and `make paper`. Each sets itself up from nothing
# (.venv with the pinned stack, llama-cpp-python and the llama.cpp tools, cached builds).
SHELL := /bin/bash
PY := .venv/bin/python
export SILENTZONE_HOME ?= $(HOME)/.cache/silentzone
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PYTHONWARNINGS := ignore

.PHONY: setup test test-fast paper analysis power numbers smoke lab perf bench accuracy clean-venv
setup: .venv/.ready

.venv/.ready: requirements.txt requirements-nodeps.txt pyproject.toml scripts/setup_env.sh scripts/build_llama.sh
	scripts/setup_env.sh

test: setup
	$(PY) -m pytest -q

test-fast: setup  ## everything but the real-model tests
	$(PY) -m pytest -q -m "not slow"

CORES ?= $(shell nproc)
SZ := $(PY) -m silentzone.cli

# The whole study on the embedded default, both models: quants -> reference logits and fidelity ->
# per-prompt benchmarks -> analysis notebooks -> figures (Snakemake; reruns only what changed).
# Regenerates data/<study>/ and figures/<study>/, then compares them with the committed ones.
paper: setup
	$(SZ) reproduce --study smollm2 --profile default --cores $(CORES)
	$(SZ) reproduce --study gemma3 --profile default --cores $(CORES)
	$(SZ) compare-results --against HEAD smollm2 gemma3

# The analysis alone (notebooks 04-07, executed copies and HTML in data/<study>/notebooks/) from the shipped
# tables quants.csv, fidelity.csv, samples.csv: no quantization or benchmark is rerun. Then the README's
# generated numbers. Seconds per study.
ANALYSIS_NBS := 04_decomposition 05_sensitivity 06_per_prompt 07_figures
analysis: setup
	for s in smollm2 gemma3; do for nb in $(ANALYSIS_NBS); do \
	  out=data/$$s/notebooks/$$nb.ipynb; \
	  $(PY) -m papermill notebooks/$$nb.ipynb $$out.part -k python3 --cwd notebooks --no-progress-bar \
	    -p study $$s -p profile default -p results ../data/$$s -p figures ../figures/$$s && mv $$out.part $$out && \
	  $(PY) -m nbconvert --to html --log-level WARN $$out || exit 1; done; done
	$(MAKE) numbers

# The powered profile (issue 19) from the GPU leases' packed results, committed under
# docs/performance/gpu/: `gather-leases` puts their finished pieces together into data/<study>-power/
# (quants.csv, fidelity.csv, samples.csv -- the last one ignored by git: the tars are its source --
# and leases.json: which quants are in, which are left out and why), then the analysis notebooks write
# the products there and the figures to figures/<study>-power/. Interim while the leases have not
# finished the cohort (leases.json says how far they got). The reference's answers come from a float
# run, docs/performance/gpu/*-<study>-power-reference-f32.tar.xz (llama.cpp's CPU build, F32 KV cache;
# exactly one per study): the CUDA build computes F32 products in TF32. Seconds to a minute.
POWER_STUDIES := smollm2
power: setup
	for s in $(POWER_STUDIES); do \
	  ref=$$(ls docs/performance/gpu/*-$$s-power-reference-f32.tar.xz); \
	  [ $$(echo $$ref | wc -w) = 1 ] || { echo "make power: want one docs/performance/gpu/*-$$s-power-reference-f32.tar.xz, found: $$ref"; exit 1; }; \
	  $(SZ) gather-leases --study $$s --profile power --out data/$$s-power --reference $$ref \
	    $$(ls docs/performance/gpu/*-power-$$s-*results*.tar.xz | sort) || exit 1; \
	  for nb in $(ANALYSIS_NBS); do \
	  out=data/$$s-power/notebooks/$$nb.ipynb; mkdir -p data/$$s-power/notebooks; \
	  $(PY) -m papermill notebooks/$$nb.ipynb $$out.part -k python3 --cwd notebooks --no-progress-bar \
	    -p study $$s -p profile power -p results ../data/$$s-power -p figures ../figures/$$s-power && mv $$out.part $$out && \
	  $(PY) -m nbconvert --to html --log-level WARN $$out || exit 1; done; done
	$(MAKE) numbers

# Rewrite the README's generated results blocks from data/<study>/ (`--check` is a test).
numbers: setup
	$(SZ) numbers

# The reduced DAG (4 quants + 1 failing, 1 corpus, 2 tasks x 20 items) in a few minutes.
smoke: setup
	$(SZ) reproduce --study smollm2 --profile smoke --cores $(CORES)

# The performance suite (perf/*.py, issue 8): side-by-side ratios against their targets, written to
# perf/cpu/results.json and the CPU block of docs/performance.md. Minutes on 2 cores.
# ("bench" alone means the LLM benchmarks; `make bench` is kept as an alias of `make perf`.)
perf: setup
	$(PY) perf/run_all.py

bench: perf

# The float references alone on their default suites, 200 items per task: accuracy with Wilson 95%
# intervals against chance (data/<study>/reference_accuracy.csv, the README's table).
accuracy: setup
	$(SZ) bench-accuracy --study smollm2 gemma3 --n-items 200

# JupyterLab on the notebooks (the explorer is notebooks/00_explore.ipynb); as root (containers) it needs
# --allow-root, which it refuses to assume.
lab: setup
	.venv/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean-venv:
	rm -rf .venv
