"""Where the workbench's files live and the toy world's fixed settings, each defined once.

Every path here resolves from the repository root, never from the current folder, so a notebook in
``notebooks/``, a shell in the root and a test in a temporary folder read and write the same files.
Committed outputs (tables, figures, small logs) sit under ``results/`` beside the folders that are
git-ignored because they are large or machine-specific (``results/runs/``, ``results/toy/runs/``).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parents[1]

DATA_DIR_ENV = "SCOPE_DATA_DIR"
"""Environment variable naming a folder of benchmark JSONL files (read before the hub)."""

RESULTS: Path = REPO_ROOT / "results"
REFERENCE: Path = RESULTS / "reference"  # the paper's numbers, labelled as the paper's
TABLES: Path = RESULTS / "tables"
FIGURES: Path = RESULTS / "figures"
NOTEBOOK_SCREENS: Path = RESULTS / "notebooks"
RUNS: Path = RESULTS / "runs"  # git-ignored: raw samples and stage shards, resumable
TOY_EVAL_RUNS: Path = RUNS / "toy-eval"
REAL_EVAL_RUNS: Path = RUNS / "eval"

TOY_RESULTS: Path = RESULTS / "toy"
TOY_RUNS: Path = TOY_RESULTS / "runs"  # git-ignored: trained toy checkpoints
TOY_TRAINING_LOGS: Path = TOY_RESULTS / "training_logs"
TOY_SAMPLES: Path = TOY_RESULTS / "samples"
DEMO_TABLES: dict[str, Path] = {"hf": TOY_RESULTS / "demo", "vllm": TOY_RESULTS / "demo-vllm"}
DEMO_SAMPLES: dict[str, Path] = {"hf": RUNS / "demo", "vllm": RUNS / "demo-vllm"}

TOY_TIERS: tuple[str, ...] = ("toy-1", "toy-2", "toy-3", "toy-4", "toy-5", "toy-6")
TOY_MAX_NEW_TOKENS = 96  # a toy-6 restart after a flawed start: up to 5 steps, "!" and 46 tokens
TOY_ASSETS: Path = REPO_ROOT / "workbench" / "toy" / "assets"

METHODS: tuple[str, ...] = ("scope", "opd", "grpo", "kd")
ROUTED_METHODS: tuple[str, ...] = ("scope", "opd")  # rollouts routed by correctness, no outcome advantage
