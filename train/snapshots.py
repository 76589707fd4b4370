"""Per-step weight snapshots: every rollout of a generation batch with its route, weight and PPLs.

Analysis (weight distributions, effective sample size, tau sweeps, PPL-vs-correctness) needs the
rollouts as the trainer saw them, so each snapshot is one parquet shard under
``<output_dir>/snapshots/`` in workbench.records' ROLLOUT_SCHEMA, readable with
``workbench.records.read_records(folder)``. Column conventions for training rollouts:

* ``sample_idx`` is the rollout's index in the whole run (generation * batch + row), so the
  schema's key (benchmark, problem_id, sample_idx) stays unique when a problem recurs;
  ``group_id`` is unique in the run too; a rollout's place in its group is its row order.
* ``path`` is the loss it was routed to: "mle" (correct path, Eq. 2) or "opd" (Eq. 3).
  ``weight`` is its dual-path weight; with the paper's scale each (group_id, path) sums to 1.
* ``student_logps`` are the behaviour policy's per-token log-probs (TRL's, at the sampling
  temperature), ``teacher_logps`` the teacher's; either list is empty when not kept or not scored.
* Extra columns: ``step`` (optimizer steps done when the batch was generated), ``generation``,
  ``student_log_ppl`` and ``teacher_log_ppl`` (NaN where the teacher did not score the rollout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.models.base import Completion
from workbench.records import ROLLOUT_SCHEMA, ShardStore

SNAPSHOT_DIR = "snapshots"


def snapshot_store(output_dir: str | Path) -> ShardStore:
    return ShardStore(Path(output_dir) / SNAPSHOT_DIR, ROLLOUT_SCHEMA)


@dataclass(frozen=True)
class RolloutBatch:
    """One process's rollouts of one generation batch, as plain per-row values."""

    benchmarks: Sequence[str]
    problem_ids: Sequence[str]
    prompts: Sequence[str]
    completions: Sequence[Completion]
    grades: Sequence[Any]
    route_mle: torch.Tensor
    weights: torch.Tensor
    student_logps: Sequence[torch.Tensor]
    teacher_logps: Sequence[torch.Tensor | None]
    student_log_ppl: torch.Tensor
    teacher_log_ppl: torch.Tensor


def snapshot_rows(batch: RolloutBatch, *, step: int, generation: int, sample_idx: Sequence[int],
                  group_ids: Sequence[int], keep_token_logps: bool) -> list[dict[str, Any]]:
    """One ROLLOUT_SCHEMA row per rollout, with the run-wide ids the trainer assigned."""
    rows = []
    for i, completion in enumerate(batch.completions):
        teacher = batch.teacher_logps[i]
        grade = batch.grades[i]
        rows.append({
            "benchmark": batch.benchmarks[i],
            "problem_id": batch.problem_ids[i],
            "sample_idx": int(sample_idx[i]),
            "prompt": batch.prompts[i],
            "response": completion.text,
            "n_tokens": completion.n_tokens,
            "finish_reason": completion.finish_reason,
            "correct": bool(grade.correct),
            "extracted": grade.extracted,
            "grade_error": grade.error,
            "group_id": int(group_ids[i]),
            "student_logps": batch.student_logps[i].tolist() if keep_token_logps else [],
            "teacher_logps": teacher.tolist() if keep_token_logps and teacher is not None else [],
            "weight": float(batch.weights[i]),
            "path": "mle" if bool(batch.route_mle[i]) else "opd",
            "step": step,
            "generation": generation,
            "student_log_ppl": float(batch.student_log_ppl[i]),
            "teacher_log_ppl": float(batch.teacher_log_ppl[i]),
        })
    return rows
