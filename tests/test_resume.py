"""--resume_from_checkpoint on the toy world: a run stopped after a checkpoint and resumed ends where the
uninterrupted run ends (weights to 1e-6, the same log history and weight snapshots), for each method."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
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
