"""Sample and grade: the one way a model's answers to problems become graded sample rows.

Evaluation, the perplexity analyses, held-out accuracy during training and the KD teacher's data all
ask a model for ``n`` answers per problem and grade them; they go through :func:`sample_and_grade`,
so every number the workbench reports is graded by the same grader under the same truncation rule.

The truncation rule (:func:`final_verdict`): a sample cut off at ``max_new_tokens`` (finish reason
``"length"``) never counts as solved. It is graded like any other (so ``extracted`` shows what it had
boxed so far), then forced to ``correct=False`` with ``grade_error="truncated"``, replacing whatever
error the grader gave: answers boxed before the end of an unfinished response are not final answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from workbench.data import get_spec
from workbench.grading import GradeCache, GradingPool, grade_batch
from workbench.models import Completion, Sampler, SamplingConfig
from workbench.records import SAMPLE_SCHEMA, TOKEN_IDS, Problem

TRUNCATED = "truncated"
"""``grade_error`` of a sample that ran out of tokens: wrong whatever its text."""
UNGRADED = "ungraded"
"""``grade_error`` of a sample nobody graded (``correct`` is null), so no table counts it as wrong."""
FINISH_REASONS = ("stop", "length")
SAMPLE_COLUMNS = (*SAMPLE_SCHEMA.names, "answer")


def final_verdict(correct: bool, finish_reason: str, error: str | None = None) -> tuple[bool, str | None]:
    """The truncation rule: the grader's verdict (``correct``, ``error``) on a sample that finished as
    ``finish_reason``, as ``(correct, grade_error)``. A ``"length"`` sample is ``(False, TRUNCATED)``."""
    if finish_reason not in FINISH_REASONS:
        raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {finish_reason!r}")
    if finish_reason == "length":
        return False, TRUNCATED
    return bool(correct), error


def render_prompts(backend: Sampler, problems: Sequence[Problem]) -> list[str]:
    """Each problem's prompt, in its benchmark's style and the backend's chat template."""
    tokenizer = getattr(backend, "tokenizer", None)
    return [get_spec(p.benchmark).prompt(p.problem, tokenizer) for p in problems]


def grade_rows(rows: list[dict[str, Any]], *, workers: int | None = None, grader: GradingPool | None = None,
               cache: GradeCache | None = None, timeout: float | None = None, progress: bool = False) -> None:
    """Fill ``correct``, ``extracted`` and ``grade_error`` of rows holding ``response``, ``answer``,
    ``benchmark`` and ``finish_reason``, in place, under the truncation rule. ``grader``: the caller's
    pool (else the default pool with at most ``workers`` workers); ``timeout``: the grader's CPU
    seconds per item (None: its default)."""
    if grader is not None and workers is not None:
        raise ValueError("pass either grader (a pool with its own workers) or workers, not both")
    options: dict[str, Any] = {"cache": cache, "progress": progress, **({} if timeout is None else {"timeout": timeout})}
    items = [(r["response"], r["answer"], r["benchmark"]) for r in rows]
    grades = grader.grade_batch(items, **options) if grader is not None else grade_batch(items, workers=workers,
                                                                                            **options)
    for row, g in zip(rows, grades, strict=True):
        row["correct"], row["grade_error"] = final_verdict(g.correct, row["finish_reason"], g.error)
        row["extracted"] = g.extracted


def sample_and_grade(backend: Sampler, problems: Sequence[Problem], sampling: SamplingConfig, *,
                     prompts: Sequence[str] | None = None, grade: bool = True, grade_workers: int | None = None,
                     grader: GradingPool | None = None, cache: GradeCache | None = None, grade_timeout: float | None = None, token_ids: bool = False,
                     progress: bool = False) -> pd.DataFrame:
    """``sampling.n`` samples of each problem from one ``backend.generate`` call seeded with
    ``sampling.seed``, graded under the truncation rule.

    ``prompts``: what the model sees for each problem (default :func:`render_prompts`); ``grader``,
    ``grade_workers``: as in :func:`grade_rows`. Rows have the
    SAMPLE_SCHEMA columns and ``answer`` (plus ``token_ids`` when asked), in problem order, sample
    index 0..n-1. With ``grade=False`` ``correct`` is null and ``grade_error`` is ``"ungraded"``.
    """
    prompts = render_prompts(backend, problems) if prompts is None else list(prompts)
    if len(prompts) != len(problems):
        raise ValueError(f"{len(prompts)} prompts for {len(problems)} problems")
    groups = backend.generate(prompts, sampling) if problems else []
    if len(groups) != len(problems) or any(len(g) != sampling.n for g in groups):
        raise RuntimeError(f"backend returned {[len(g) for g in groups]} completions for {len(problems)} prompts "
                           f"x n={sampling.n}")
    rows = [_row(problem, prompt, idx, completion, token_ids)
            for problem, prompt, group in zip(problems, prompts, groups) for idx, completion in enumerate(group)]
    if grade:
        grade_rows(rows, workers=grade_workers, grader=grader, cache=cache, timeout=grade_timeout, progress=progress)
    else:
        for row in rows:
            row.update(correct=None, extracted=None, grade_error=UNGRADED)
    columns = [*SAMPLE_COLUMNS, TOKEN_IDS.name] if token_ids else list(SAMPLE_COLUMNS)
    return pd.DataFrame(rows, columns=columns)


def _row(problem: Problem, prompt: str, idx: int, completion: Completion, token_ids: bool) -> dict[str, Any]:
    row = {"benchmark": problem.benchmark, "problem_id": problem.problem_id, "sample_idx": idx, "prompt": prompt,
           "response": completion.text, "n_tokens": completion.n_tokens, "finish_reason": completion.finish_reason,
           "answer": problem.answer}
    if token_ids:
        row[TOKEN_IDS.name] = list(completion.token_ids)
    return row


def accuracy(frame: pd.DataFrame) -> float:
    """The share of samples graded correct (the mean of ``correct``); ungraded samples have none."""
    if frame.empty:
        raise ValueError("no samples to take the accuracy of")
    if frame["correct"].isna().any():
        raise ValueError("ungraded samples have no accuracy")
    return float(frame["correct"].astype(float).mean())
