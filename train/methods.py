"""Every training method behind one switch: build the trainer a ScopeConfig asks for, run it, save it.

``build_trainer(cfg)`` returns a ready TRL trainer: a ScopeTrainer for scope / opd / grpo, or a
TRL SFTTrainer on teacher samples for kd (see train.kd). ``train_run(cfg)`` trains it and leaves
in ``cfg.output_dir`` what the rest of the workbench reads: ``model/`` (weights and tokenizer,
loadable like the base student), ``log_history.jsonl`` and ``.csv`` (TRL's per-step logs) and,
for scope and opd, ``snapshots/``; with several processes only the main one writes them.
Resources are checked in the order a run needs them (GPU for vLLM, tokenizer, data, student,
teacher), so a recipe that cannot run here stops at the first missing one with
train.resources.ResourceUnavailable.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from train.config import ScopeConfig, parse_config
from train.dataset import build_train_dataset, load_student_tokenizer
from train.resources import require_cuda_for_vllm
from workbench.locking import LOCK_FILE, folder_lock
from workbench.runs import is_finished, run_folder

log = logging.getLogger(__name__)

MODEL_DIR = "model"
LOG_JSONL = "log_history.jsonl"
LOG_CSV = "log_history.csv"
RECIPE_DIR = Path(__file__).resolve().parent / "recipes"


def toy_recipe(method: str) -> Path:
    """The committed toy-world recipe of ``method`` (``train/recipes/toy_<method>.yaml``)."""
    path = RECIPE_DIR / f"toy_{method}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no toy recipe for method {method!r} at {path}")
    return path


def train_toy_run(method: str, seed: int, folder: Path, overrides: Sequence[str] = (),
                  **manifest: Any) -> dict[str, Any] | None:
    """Train ``method``'s toy recipe with ``seed`` (and ``overrides``) into ``folder``, with its manifest;
    returns the run's summary, or None when a finished run is already there.

    A run left "running" or "failed" by a process that has gone is wiped and started again: a partial run
    cannot be continued bit for bit. A run another live process is writing is refused (``FolderLocked``,
    naming it), never wiped. ``manifest`` adds fields to the run's manifest.
    """
    if is_finished(folder):
        log.info("%s: finished earlier, skipped", folder)
        return None
    cfg = parse_config(["--config", str(toy_recipe(method)), "--seed", str(seed), "--output_dir", str(folder),
                        *overrides])
    with folder_lock(folder):
        if is_finished(folder):  # finished by another process between the first check and the lock
            log.info("%s: finished earlier, skipped", folder)
            return None
        leftovers = [p for p in folder.iterdir() if p.name != LOCK_FILE]
        if leftovers:
            log.info("%s: unfinished run found, starting it again", folder)
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        with run_folder(folder, cfg.to_dict(), seed, method=method, **manifest):
            return train_run(cfg)


def build_trainer(cfg: ScopeConfig) -> Any:
    """The trainer for ``cfg.method``, with its data, student and (for scope/opd/kd) teacher loaded."""
    if cfg.use_vllm:
        require_cuda_for_vllm(cfg.vllm_mode)
    tokenizer = load_student_tokenizer(cfg)
    dataset = build_train_dataset(cfg, tokenizer)
    log.info("%s: %d training prompts, student %s", cfg.method, len(dataset), cfg.resolved_student())
    if cfg.method == "kd":
        from train.kd import build_kd_trainer

        trainer = build_kd_trainer(cfg, tokenizer, dataset)
    else:
        from train.trainer import ScopeTrainer

        trainer = ScopeTrainer(cfg.resolved_student(), cfg, dataset, processing_class=tokenizer)
    if cfg.heldout_every:
        trainer.add_callback(heldout_callback(cfg, tokenizer))
    return trainer


def heldout_callback(cfg: ScopeConfig, tokenizer: Any) -> Any:
    """Held-out toy accuracy every `cfg.heldout_every` steps (the same problems for every method and seed)."""
    from train.heldout import HeldOutAccuracy
    from workbench.data import load_benchmark

    problems = [p for tier in cfg.toy_tiers for p in load_benchmark(tier, toy_size=cfg.heldout_problems_per_tier)]
    return HeldOutAccuracy(problems, tokenizer, every=cfg.heldout_every, n=cfg.heldout_samples,
                           max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature, seed=0)


def write_log_history(history: list[dict[str, Any]], folder: Path) -> None:
    with open(folder / LOG_JSONL, "w") as fh:
        for row in history:
            fh.write(json.dumps(row) + "\n")
    pd.DataFrame(history).to_csv(folder / LOG_CSV, index=False)


def train_run(cfg: ScopeConfig, trainer: Any | None = None) -> dict[str, Any]:
    """Train, then save the model and the log history under ``cfg.output_dir``; returns a summary."""
    trainer = trainer or build_trainer(cfg)
    resume = cfg.resume_from_checkpoint
    if resume:
        from train.checkpoints import resolve_checkpoint

        resume = resolve_checkpoint(cfg.output_dir, resume)
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume or None)
    out = Path(cfg.output_dir)
    trainer.save_model(str(out / MODEL_DIR))  # every process calls it; only the main one writes
    if trainer.accelerator.is_main_process:
        # The trainer's copy of the tokenizer is left-padded for generation; ship the student's own.
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(cfg.resolved_student()).save_pretrained(str(out / MODEL_DIR))
        write_log_history(trainer.state.log_history, out)
    summary = {"method": cfg.method, "global_step": trainer.state.global_step,
               "train_runtime_s": result.metrics.get("train_runtime"), "train_loss": result.training_loss}
    log.info("%s finished: %s", out, summary)
    return summary
