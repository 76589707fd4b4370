"""Weight snapshots: every rollout the trainer routed, with its path, weight and perplexities.

The weight analyses need the rollouts as the trainer saw them: parquet shards in ROLLOUT_SCHEMA under
``<output_dir>/snapshots/``, buffered a few thousand rows a write. Column conventions: docs/training.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.grading import Grade
from workbench.models.base import Completion
from workbench.records import ROLLOUT_SCHEMA, ShardStore

SNAPSHOT_DIR = "snapshots"
EXPORT_FILE = "snapshots.parquet"  # a finished run's snapshots in one small file (committed copies)
FLUSH_ROWS = 4096


def snapshot_store(output_dir: str | Path) -> ShardStore:
    return ShardStore(Path(output_dir) / SNAPSHOT_DIR, ROLLOUT_SCHEMA)


def has_snapshots(run_dir: str | Path) -> bool:
    return (Path(run_dir) / EXPORT_FILE).is_file() or bool(snapshot_store(run_dir).shards())


def read_snapshots(run_dir: str | Path) -> pd.DataFrame:
    """A run's weight snapshots, with ``step``: its exported file when it has one, else the trainer's shards."""
    run = Path(run_dir)
    if (run / EXPORT_FILE).is_file():
        frame = pd.read_parquet(run / EXPORT_FILE)
    elif snapshot_store(run).shards():
        frame = snapshot_store(run).read()
    else:
        raise FileNotFoundError(f"no weight snapshots in {run}: neither {EXPORT_FILE} nor {SNAPSHOT_DIR}/ shards")
    if "step" not in frame.columns:
        raise ValueError(f"snapshots in {run} lack a 'step' column")
    return frame


@dataclass(frozen=True)
class RowMeta:
    """What is known of a rollout when it is graded; travels with it through TRL's shuffles."""

    benchmark: str
    problem_id: str
    sample_idx: int
    group_id: int
    grade: Grade
    step: int
    generation: int


def rollout_row(meta: RowMeta, *, prompt: str, completion: Completion, route_mle: bool, weight: float,
                student_logps: list[float], teacher_logps: list[float], student_log_ppl: float,
                teacher_log_ppl: float) -> dict[str, Any]:
    """One ROLLOUT_SCHEMA row (plus the extra columns above)."""
    return {
        "benchmark": meta.benchmark,
        "problem_id": meta.problem_id,
        "sample_idx": meta.sample_idx,
        "prompt": prompt,
        "response": completion.text,
        "n_tokens": completion.n_tokens,
        "finish_reason": completion.finish_reason,
        "correct": bool(meta.grade.correct),
        "extracted": meta.grade.extracted,
        "grade_error": meta.grade.error,
        "group_id": meta.group_id,
        "student_logps": student_logps,
        "teacher_logps": teacher_logps,
        "weight": weight,
        "path": "mle" if route_mle else "opd",
        "step": meta.step,
        "generation": meta.generation,
        "student_log_ppl": student_log_ppl,
        "teacher_log_ppl": teacher_log_ppl,
    }
