"""KD's teacher samples from a sampling launch of their own (`python -m train.kd`, torchrun workers on gloo):
two workers write the samples one process writes, and the training launch then finds them all on disk and
trains without loading a teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from train.methods import toy_recipe
from workbench.records import ShardStore

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return env | {"OMP_NUM_THREADS": "1"}


def _args(out: Path) -> list[str]:
    return ["--config", str(toy_recipe("kd")), "--output_dir", str(out), "--kd_unit_prompts", "48",
            "--kd_samples_per_prompt", "2", "--disable_tqdm", "true"]


def _sample(workers: int, out: Path) -> str:
    launch = ([sys.executable, "-m", "train.kd"] if workers == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(workers), "--standalone",
               "-m", "train.kd"])
    done = subprocess.run([*launch, *_args(out)], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _samples(out: Path) -> pd.DataFrame:
    frame = ShardStore(out / "kd_samples").read()
    return frame.sort_values(["benchmark", "problem_id", "sample_idx"]).reset_index(drop=True)


def test_two_sampling_workers_write_the_samples_of_one_and_training_reuses_them(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    printed = _sample(1, one)
    assert "384 teacher samples of 192 prompts" in printed
    _sample(2, two)
    pd.testing.assert_frame_equal(_samples(two), _samples(one))
    # one shard per unit of 48 prompts, whoever wrote it
    assert sorted(p.name[:11] for p in (two / "kd_samples").glob("part-*.parquet")) == [
        f"part-{i:06d}" for i in range(4)]
    manifest = json.loads((two / "kd_samples" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["world_size"] == 2

    # The training launch finds every sample: it trains (one step) and loads no teacher, which a
    # teacher that cannot be loaded proves.
    before = {p.name: p.read_bytes() for p in (two / "kd_samples").glob("part-*.parquet")}
    done = subprocess.run([sys.executable, "-m", "train.cli", *_args(two), "--max_steps", "1",
                           "--teacher_dtype", "no-such-dtype"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["global_step"] == 1
    assert {p.name: p.read_bytes() for p in (two / "kd_samples").glob("part-*.parquet")} == before
