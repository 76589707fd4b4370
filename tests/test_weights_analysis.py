"""The weights case study and the ESS columns of the weight summary, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.weights import case_study, prepare, summarise, tau_sweep


def _group(problem: str, student: list[float], teacher: list[float], correct: list[bool]) -> list[dict]:
    return [{"benchmark": "toy-2", "problem_id": problem, "sample_idx": i, "correct": c,
             "student_log_ppl": s, "teacher_log_ppl": t if not c else np.nan,
             "prompt": f"Q:{problem}?A:", "response": f"r{i}"}
            for i, (s, t, c) in enumerate(zip(student, teacher, correct))]


def test_case_study_picks_the_paper_directions():
    # Group a: correct rollouts with student log-PPL 0.1 and 0.5; wrong ones with teacher log-PPL 0.2 and 1.0.
    rows = _group("a", [0.1, 0.5, 0.3, 0.3], [0.0, 0.0, 0.2, 1.0], [True, True, False, False])
    # Group b has one correct rollout only: not eligible (its MLE path cannot choose).
    rows += _group("b", [0.1, 0.2, 0.3], [0.0, 0.4, 0.9], [True, False, False])
    case = case_study(pd.DataFrame(rows), tau=1.0, groups=5)
    assert set(case["prompt"]) == {"Q:a?A:"}
    mle = case[case["path"] == "mle"].set_index("rank")
    opd = case[case["path"] == "opd"].set_index("rank")
    # MLE: w ∝ PPL_S^(+1): the less sure correct answer (log-PPL 0.5, response r1) ranks highest.
    assert mle.loc["highest", "response"] == "r1" and mle.loc["lowest", "response"] == "r0"
    assert mle.loc["highest", "weight"] == pytest.approx(math.exp(0.5) / (math.exp(0.5) + math.exp(0.1)))
    # OPD: w ∝ PPL_T^(-1): the mistake the teacher finds plausible (log-PPL 0.2, r2) ranks highest.
    assert opd.loc["highest", "response"] == "r2"
    assert opd.loc["highest", "weight"] == pytest.approx(math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.0)))
    assert opd.loc["highest", "ppl"] == pytest.approx(math.exp(0.2))


def test_case_study_needs_texts():
    rows = pd.DataFrame(_group("a", [0.1, 0.5], [0.0, 0.0], [True, True])).drop(columns="response")
    with pytest.raises(ValueError, match="response"):
        case_study(rows)


def test_summary_separates_subsets_that_can_choose():
    # Group a: two correct (a subset of 2), group b: one correct (a subset of 1, ESS/n = 1 by definition).
    rows = _group("a", [0.0, math.log(3.0)], [0, 0], [True, True]) + _group("b", [0.2], [0], [True])
    summary = summarise(tau_sweep(prepare(pd.DataFrame(rows)), [1.0])).set_index("path")
    # weights 1/4 and 3/4: ESS = 1 / (1/16 + 9/16) = 1.6, ESS/n = 0.8
    assert summary.loc["mle", "ess_frac_mean_2plus"] == pytest.approx(0.8)
    assert summary.loc["mle", "ess_frac_mean"] == pytest.approx((0.8 + 1.0) / 2)
    assert summary.loc["mle", "n_subsets_2plus"] == 1
