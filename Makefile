# SCOPE workbench. Every target installs the environment on demand (.venv, CPU PyTorch).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The six real benchmarks as JSONL (see README "Real benchmarks"); override with DATA_DIR=...
DATA_DIR ?= $(if $(SCOPE_DATA_DIR),$(SCOPE_DATA_DIR),$(abspath ../shared/data/benchmarks))
export SCOPE_DATA_DIR := $(DATA_DIR)

.PHONY: setup lab demo test toy-models toy-check real-smoke real-slice reproduce-tables train-toy figures bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0   # the CPU wheel; never the CUDA build
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv: CPU torch 2.13.0, then the workbench with test extras

lab: $(STAMP)  ## install JupyterLab and open the notebooks
	$(PY) -m pip install --quiet -e '.[lab]'
	$(VENV)/bin/jupyter lab notebooks/

demo: $(STAMP)  ## the main job on the toy world: evaluation, analysis, tables
	$(PY) -m analysis.demo

test: $(STAMP)  ## the test suite (unit + integration)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

toy-models: $(STAMP)  ## rebuild the committed toy tokenizer, teacher and student (deterministic)
	$(PY) -m workbench.toy.build

toy-check: $(STAMP)  ## rebuild the toy world in a scratch folder and compare it byte for byte with the committed one
	$(PY) -m workbench.toy.build --check

real-smoke: $(STAMP)  ## SmolLM2-135M-Instruct on 2 problems of each real benchmark, n=4 (CPU: 10-40 min)
	$(MAKE) reproduce-tables MODEL=smollm2 LIMIT=2 N=4 MAX_NEW_TOKENS=256

real-slice: $(STAMP)  ## SmolLM2-135M-Instruct, 2 problems per real benchmark, n=8, 256 tokens (CPU: 15-60 min)
	$(MAKE) reproduce-tables MODEL=smollm2 LIMIT=2 N=8 MAX_NEW_TOKENS=256

reproduce-tables: $(STAMP)  ## Avg@k/Pass@k tables: toy checkpoints (default) | MODEL=.. BACKEND=hf|vllm [LIMIT N MAX_NEW_TOKENS] | FROM_SAMPLES=dir
	$(PY) -m eval.reproduce $(if $(FROM_SAMPLES),--from-samples $(FROM_SAMPLES)) \
	  $(if $(MODEL),--model $(MODEL) --backend $(or $(BACKEND),hf) --data-dir $(DATA_DIR)) \
	  $(if $(LIMIT),--limit $(LIMIT)) $(if $(N),--n $(N)) $(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS)) \
	  $(if $(TOY_SIZE),--toy-size $(TOY_SIZE))

train-toy: $(STAMP)  ## train scope, opd, grpo and kd from the toy student, 3 seeds each (results/toy/runs/)
	$(PY) -m train.toy_suite --check-accuracy 30

figures: $(STAMP)  ## redraw every figure from what is in results/ (results/figures/, PDF + PNG)
	$(PY) -m analysis.cli figures

bench: $(STAMP)  ## benchmarks, each a ratio against a baseline measured in the same run
	$(PY) -m train.bench_weights
	$(PY) -m eval.bench_metrics
	$(PY) -m eval.bench_grading
	$(PY) -m train.bench_step

clean:  ## remove run outputs that are not committed
	rm -rf results/runs results/toy/runs .pytest_cache
