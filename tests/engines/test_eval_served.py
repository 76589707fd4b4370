"""Evaluation through a pool of two live vLLM `api_server` replicas (`--backend server --base-url A,B`):
both replicas sample, and the samples equal the in-process vLLM engine's on the same model and seeds.

The model is the toy teacher (the servers the served-teacher tests start), on made-up problems in the
real benchmarks' file format. This file sorts before the tests that kill those servers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.records import read_records  # noqa: E402
from workbench.toy import TEACHER_DIR  # noqa: E402

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
COLUMNS = ["benchmark", "problem_id", "sample_idx", "response", "n_tokens", "finish_reason"]


def _answered(server) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def _data(folder: Path) -> Path:
    """Toy-world questions in the real benchmarks' format, two per benchmark."""
    folder.mkdir()
    for b, name in enumerate(BENCHMARKS):
        rows = [{"id": f"{name}_{i}", "problem": f"{b}+{i}*3-1", "answer": str((b + i * 3 - 1) % 10)} for i in range(2)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _evaluate(out: Path, data: Path, *backend: str, key: str) -> pd.DataFrame:
    args = [sys.executable, "-m", "eval.reproduce", "--model", str(TEACHER_DIR), "--data-dir", str(data),
            "--label", "teacher", "--limit", "2", "--num-samples", "4", "--max-new-tokens", "24", "--unit-size", "3",
            "--samples-dir", str(out / "samples"), "--tables-dir", str(out / "tables"), "--no-figure", "--quiet",
            *backend]
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "SCOPE_TEACHER_API_KEY": key,
                        "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    folder = next((out / "samples" / "teacher").iterdir())
    return read_records(folder)[COLUMNS]


def test_two_server_replicas_sample_what_the_in_process_engine_samples(tmp_path, served_teacher,
                                                                       second_served_teacher):
    data = _data(tmp_path / "data")
    before = (_answered(served_teacher), _answered(second_served_teacher))
    served = _evaluate(tmp_path / "served", data, "--backend", "server", "--base-url",
                       f"{served_teacher.url},{second_served_teacher.url}", "--concurrency", "2",
                       key=served_teacher.key)
    took = (_answered(served_teacher) - before[0], _answered(second_served_teacher) - before[1])
    # 12 problems, one request of 4 samples each: vLLM counts a success per request or per sample
    assert took[0] > 0 and took[1] > 0 and sum(took) in (12, 48), took
    engine = _evaluate(tmp_path / "engine", data, "--backend", "vllm", key=served_teacher.key)
    assert len(served) == 12 * 4
    pd.testing.assert_frame_equal(served, engine)
    assert (tmp_path / "served" / "tables" / "real_avg@4.csv").is_file()
