"""--resume_from_checkpoint on the toy world: a run stopped after a checkpoint and resumed ends where the
uninterrupted run ends (weights to 1e-6, the same log history and weight snapshots), for each method."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from train.config import parse_config
from train.methods import LOG_JSONL, build_trainer, toy_recipe, train_run
from train.snapshots import read_snapshots

pytestmark = pytest.mark.slow

STEPS, SAVE_AT, STOP_AFTER = 6, 3, 5
# Wall-clock figures differ between any two runs; everything else in a log entry must be equal.
CLOCK_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time")


class Stop(Exception):
    """Stands in for a kill: raised after step STOP_AFTER, past the checkpoint at SAVE_AT."""


class StopAfter(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == STOP_AFTER:
            raise Stop


def config(method: str, out: Path, *extra: str):
    small = ["--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", str(SAVE_AT),
             "--output_dir", str(out), "--heldout_every", "0", "--toy_problems_per_tier", "4"]
    return parse_config(["--config", str(toy_recipe(method)), *small, *extra])


def log_history(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / LOG_JSONL).read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in CLOCK_KEYS and not k.startswith("timing/")} for row in rows]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.parametrize("method", ["scope", "opd", "grpo", "kd"])
def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, method):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train_run(config(method, whole))

    trainer = build_trainer(config(method, cut))
    trainer.add_callback(StopAfter())
    with pytest.raises(Stop):
        trainer.train()
    assert sorted(p.name for p in cut.glob("checkpoint-*")) == [f"checkpoint-{SAVE_AT}"]

    train_run(config(method, cut, "--resume_from_checkpoint", "last"))

    ours, reference = weights(cut), weights(whole)
    assert ours.keys() == reference.keys()
    diff = max((ours[k] - reference[k]).abs().max().item() for k in ours)
    print(f"{method}: resumed vs uninterrupted weights, max |diff| {diff:.3g}")
    assert diff <= 1e-6
    assert log_history(cut) == log_history(whole)
    assert [row["step"] for row in log_history(cut)][-1] == STEPS
    if method in ("scope", "opd"):
        a = read_snapshots(cut).sort_values("sample_idx").reset_index(drop=True)
        b = read_snapshots(whole).sort_values("sample_idx").reset_index(drop=True)
        assert len(a) == len(b) and a["generation"].max() == STEPS - 1
        pd.testing.assert_frame_equal(a, b)


def test_two_processes_killed_after_a_checkpoint_resume_to_the_uninterrupted_run(tmp_path):
    """torchrun, 2 processes (gloo): the run is SIGKILLed once checkpoint-3 is complete, then resumed."""
    import os
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "train.cli", "--config", "train/recipes/toy_scope.yaml", "--per_device_train_batch_size", "16",
                "--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", str(SAVE_AT),
                "--toy_problems_per_tier", "4", "--heldout_every", "0", "--output_dir", str(out), *extra]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run(command(whole), cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    proc = subprocess.Popen(command(cut), cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = cut / f"checkpoint-{SAVE_AT}" / "scope_state.json"  # written last of the checkpoint
    deadline = time.monotonic() + 900
    try:
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:  # torchrun's workers run in sessions of their own: kill them by pid, then torchrun
        workers = psutil.Process(proc.pid).children(recursive=True)
        for worker in workers:
            worker.kill()
        psutil.wait_procs(workers, timeout=60)
        proc.kill()
        proc.wait()
    assert marker.exists(), "the run ended or timed out before its checkpoint"
    assert not (cut / "model").exists()  # killed before the end

    done = subprocess.run(command(cut, "--resume_from_checkpoint", "last"), cwd=repo, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    ours, reference = weights(cut), weights(whole)
    diff = max((ours[k] - reference[k]).abs().max().item() for k in ours)
    print(f"2 processes: resumed vs uninterrupted weights, max |diff| {diff:.3g}")
    assert diff <= 1e-6
    assert log_history(cut) == log_history(whole)
    a = read_snapshots(cut).sort_values("sample_idx").reset_index(drop=True)
    b = read_snapshots(whole).sort_values("sample_idx").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((cut / "manifest.json").read_text())["status"] == "finished"


def test_a_finished_run_is_not_resumed_over(tmp_path, capsys):
    from train.cli import main
    from workbench.errors import main_guard
    from workbench.runs import write_manifest

    write_manifest(tmp_path, {}, 0, status="finished")
    argv = ["--config", str(toy_recipe("scope")), "--output_dir", str(tmp_path), "--resume_from_checkpoint", "last"]
    assert main_guard(main, argv) == 2
    assert "holds a finished run; --resume_from_checkpoint continues a run that stopped" in capsys.readouterr().err
