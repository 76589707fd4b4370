"""Evaluation spread over torchrun workers (gloo on CPU) gives the samples and tables of one process.

The toy base student is sampled on the six toy tiers by 1, 2 and 3 workers: the sample rows and the
table files (Markdown, CSV, LaTeX) must be byte-identical. Then a 2-worker run is killed mid-way
(SIGKILL to one worker: torchrun stops the other) and resumed by a single process: the tables equal
the uninterrupted run's and no unit was sampled twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from workbench.records import ShardStore, read_records

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TABLES = [f"toy_{m}.{ext}" for m in ("avg@4", "pass@4", "pass@4_unbiased") for ext in ("md", "csv", "tex")]


def _args(out: Path, toy_size: int, unit_size: int) -> list[str]:
    return ["--toy-size", str(toy_size), "--num-samples", "4", "--unit-size", str(unit_size),
            "--runs-root", str(out / "no-runs"), "--samples-dir", str(out / "samples"),
            "--tables-dir", str(out / "tables"), "--no-figure", "--quiet"]


def _command(workers: int, args: list[str]) -> list[str]:
    if workers == 1:
        return [sys.executable, "-m", "eval.reproduce", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(workers),
            "--standalone", "-m", "eval.reproduce", *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(workers: int, out: Path, toy_size: int = 2, unit_size: int = 2) -> subprocess.CompletedProcess:
    done = subprocess.run(_command(workers, _args(out, toy_size, unit_size)), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _samples(out: Path) -> pd.DataFrame:
    return read_records(out / "samples" / "base" / "seed0")


def test_one_two_and_three_workers_give_the_same_samples_and_tables(tmp_path):
    runs = {w: tmp_path / f"w{w}" for w in (1, 2, 3)}
    for workers, out in runs.items():
        printed = _run(workers, out).stdout
        assert "toy Avg@4" in printed
        assert (f", {workers} workers," in printed) == (workers > 1)
    reference = _samples(runs[1])
    assert len(reference) == 6 * 2 * 4  # six tiers x 2 problems x 4 samples
    for workers in (2, 3):
        pd.testing.assert_frame_equal(_samples(runs[workers]), reference)
        for name in TABLES:
            assert (runs[workers] / "tables" / name).read_bytes() == (runs[1] / "tables" / name).read_bytes(), name
        folder = runs[workers] / "samples" / "base" / "seed0"
        # one shard per unit, named by the unit, whoever wrote it; one verdict cache per worker
        assert sorted(p.name[:11] for p in folder.glob("part-*.parquet")) == [f"part-{i:06d}" for i in range(6)]
        assert sorted(p.name for p in folder.glob("grades*.sqlite")) == [f"grades.rank{r}.sqlite"
                                                                         for r in range(workers)]


def test_a_killed_worker_resumes_with_another_world_size_to_the_same_tables(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(1, whole, toy_size=6, unit_size=1)
    proc = subprocess.Popen(_command(2, _args(killed, 6, 1)), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    folder, units = killed / "samples" / "base" / "seed0", 36
    try:
        deadline = time.monotonic() + 300
        while len(ShardStore(folder).shards()) < 4:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no shards written in 300 s"
            time.sleep(0.05)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "eval.reproduce" in " ".join(c.cmdline())]
        assert len(workers) == 2
        workers[-1].send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    kept = len(ShardStore(folder).shards())
    assert 4 <= kept < units, f"the kill came too late to test a resume ({kept} of {units} units on disk)"
    _run(1, killed, toy_size=6, unit_size=1)
    for name in TABLES:
        assert (killed / "tables" / name).read_bytes() == (whole / "tables" / name).read_bytes(), name
    shards = ShardStore(folder).shards()
    assert len(shards) == units
    rows = sum(len(pd.read_parquet(s)) for s in shards)
    assert rows == units * 4  # no unit sampled twice
    pd.testing.assert_frame_equal(_samples(killed), _samples(whole))
