"""The analyses' pure parts on hand-made inputs whose every number is known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.boundary import BoundaryConfig, analyse_boundary, boundary_markdown, solve_counts
from analysis.corrective import (
    CorrectiveConfig,
    analyse_recovery,
    paper_recovery_table,
    quantile_buckets,
    recovery_markdown,
    truncation_point,
)
from analysis.weights import compute_weights, effective_sample_size, prepare, summarise, tau_sweep
from train.scope import WeightConfig


def test_truncation_lands_on_the_separator_nearest_the_ratio():
    response = "3+5=8;8*2=6;\\boxed{6}"  # 21 characters, steps end at 6 and 12
    assert truncation_point(response, 0.2, ";").prefix_chars == 6
    assert truncation_point(response, 0.5, ";").prefix_chars == 12
    assert truncation_point(response, 0.8, ";").prefix_chars == 12
    assert truncation_point("ab;cd;ef", 4.5 / 8, ";").prefix_chars == 3  # a tie goes to the earlier cut
    assert truncation_point("a;b;", 0.9, ";").prefix_chars == 2  # a cut keeping everything is no cut
    assert truncation_point("step one\n\nstep two\n\nanswer", 0.7, "\n\n").prefix_chars == 20
    fallback = truncation_point("abcdef", 0.5, ";")
    assert (fallback.prefix_chars, fallback.at_separator) == (3, False)
    with pytest.raises(ValueError):
        truncation_point("a;b", 1.0, ";")


def _markdown_row(text, label):
    """The stripped cells of the Markdown table row whose first cell is ``label``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in {text}")


def test_quantile_buckets_are_equal_sized_and_ordered():
    labels = quantile_buckets([5, 1, 3, 2, 4, 6, 8, 7], 4)
    assert labels.tolist() == ["Q3", "Q1", "Q2", "Q1", "Q2", "Q3", "Q4", "Q4"]
    assert sorted(quantile_buckets([1.0] * 4, 4)) == ["Q1", "Q2", "Q3", "Q4"]
    # 10 into 4: the outer buckets take the two extra values, so reversing the order mirrors the buckets
    assert pd.Series(quantile_buckets(np.arange(10.0), 4)).value_counts().sort_index().tolist() == [3, 2, 2, 3]
    mirror = {"Q1": "Q4", "Q2": "Q3", "Q3": "Q2", "Q4": "Q1"}
    assert [mirror[q] for q in quantile_buckets(-np.arange(10.0), 4)] == quantile_buckets(np.arange(10.0), 4).tolist()
    with pytest.raises(ValueError):
        quantile_buckets([1.0, 2.0], 4)


def _recovery_inputs():
    """8 wrong rollouts (teacher log-PPL 0.1..0.8, so two per quartile), 4 continuations each."""
    wrong = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"p{i}" for i in range(8)], "sample_idx": 0,
                          "teacher_log_ppl": np.arange(1, 9) / 10})
    recovered = {0.2: [4, 3, 3, 2, 2, 1, 1, 0], 0.6: [2, 2, 1, 1, 1, 0, 0, 0]}
    rows = []
    for ratio, counts in recovered.items():
        for i, c in enumerate(counts):
            for j in range(4):
                rows.append({"benchmark": "toy-3", "problem_id": f"p{i}", "sample_idx": 0, "ratio": ratio,
                             "cont_idx": j, "correct": j < c, "prefix_chars": 6, "response_chars": 21,
                             "at_separator": True})
    solve = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"p{i}" for i in range(8)],
                          "teacher_solve_rate": [1, 1, 1, 0.75, 1, 0.5, 0.75, 0.25]})
    return wrong, pd.DataFrame(rows), solve, recovered


def test_recovery_table_statistics_and_paper_columns():
    wrong, continuations, solve, recovered = _recovery_inputs()
    analysis = analyse_recovery(wrong, continuations, CorrectiveConfig(n_boot=500), solve)
    values = analysis.table.values
    assert values.loc[0.2].tolist() == pytest.approx([87.5, 62.5, 37.5, 12.5, 75.0])
    assert values.loc[0.6].tolist() == pytest.approx([50.0, 25.0, 12.5, 0.0, 50.0])
    assert analysis.table.paper.loc[0.2].tolist() == pytest.approx([64.9, 59.7, 54.0, 45.4, 64.9 - 45.4])
    assert analysis.table.paper.loc[0.6, "Q4"] == pytest.approx(34.5)
    assert (analysis.table.ci_lo <= values).all().all() and (values <= analysis.table.ci_hi).all().all()
    assert analysis.buckets["teacher_solve_pct"].tolist() == pytest.approx([100.0, 87.5, 75.0, 50.0])
    assert analysis.buckets["teacher_nll_mean"].tolist() == pytest.approx([0.15, 0.35, 0.55, 0.75])
    st = analysis.statistics
    rates = np.array(recovered[0.2]) / 4
    assert st["per_ratio"]["0.2"]["spearman"]["rho"] == pytest.approx(stats.spearmanr(np.arange(8), rates).statistic)
    assert st["per_ratio"]["0.2"]["monotonicity"]["monotone"] is True
    assert st["per_ratio"]["0.2"]["trend"]["p_value"] < 0.05
    assert st["pooled"]["ratios_with_q1_above_qn"] == 2 and st["pooled"]["n_ratios"] == 2
    assert st["pooled"]["logistic_ratio_controlled"]["slope"] < 0
    assert "teacher_solve_rate" in st["pooled"]["logistic_ratio_and_teacher_solve_controlled"]["terms"]
    assert st["n_wrong_rollouts"] == 8 and st["n_continuations"] == 64 and st["cuts_without_separator"] == 0
    text = recovery_markdown(analysis)
    ours, paper = (_markdown_row(table, "0.2") for table in text.split("paper (arXiv 2604.10688)"))
    assert ours[:3] == ["0.2", "87.5 ± 12.5", "62.5 ± 12.5"] and paper[:3] == ["0.2", "64.9", "59.7"]


def test_other_bucket_counts_show_no_paper_values():
    wrong, continuations, solve, _ = _recovery_inputs()
    analysis = analyse_recovery(wrong, continuations, CorrectiveConfig(n_buckets=2, n_boot=200), solve)
    assert analysis.table.paper is None  # the paper's quartiles are not comparable with halves
    assert list(analysis.table.values.columns) == ["Q1", "Q2", "Q1−Q2"]
    assert analysis.table.values.loc[0.2].tolist() == pytest.approx([75.0, 25.0, 50.0])
    assert "paper" not in recovery_markdown(analysis)


def test_paper_table_shape():
    paper = paper_recovery_table()
    assert list(paper.columns) == ["Q1", "Q2", "Q3", "Q4", "Q1−Q4"]
    assert paper.loc[0.8, "Q1−Q4"] == pytest.approx(7.2)
    assert paper.attrs["source"].startswith("paper")


def test_boundary_buckets_against_hand_counts():
    correct = pd.DataFrame({"benchmark": "toy-4", "problem_id": [f"p{i}" for i in range(8)], "sample_idx": 1,
                            "student_log_ppl": np.arange(1, 9) / 100})
    samples = pd.DataFrame([{"benchmark": "toy-4", "problem_id": f"p{i}", "sample_idx": j, "correct": j < solved}
                            for i, solved in enumerate([8, 8, 8, 6, 4, 6, 2, 0]) for j in range(8)])
    analysis = analyse_boundary(correct, solve_counts(samples), BoundaryConfig(n_boot=500))
    b = analysis.buckets.set_index("bucket")
    assert b["solve_pct"].tolist() == pytest.approx([100.0, 87.5, 62.5, 12.5])
    assert b["sometimes_pct"].tolist() == pytest.approx([0.0, 50.0, 100.0, 50.0])
    assert b["always_pct"].tolist() == pytest.approx([100.0, 50.0, 0.0, 0.0])
    st = analysis.statistics
    rates = np.array([8, 8, 8, 6, 4, 6, 2, 0]) / 8
    assert st["spearman_per_rollout"]["rho"] == pytest.approx(stats.spearmanr(np.arange(8), rates).statistic)
    assert st["monotonicity"]["monotone"] is True and st["trend"]["p_value"] < 0.05
    assert st["logistic"]["slope"] < 0
    assert _markdown_row(boundary_markdown(analysis), "Q1")[:3] == ["Q1", "2", "2"]
    with pytest.raises(ValueError, match="no fresh samples"):
        analyse_boundary(correct, solve_counts(samples[samples["problem_id"] != "p3"]), BoundaryConfig())


def test_weights_reproduce_the_papers_worked_example():
    # Figure 2 of the paper (tau = 1): student PPLs 1.2, 2.6, 3.8 -> 0.158, 0.342, 0.500;
    # teacher PPLs 4.5, 2.9, 1.7 -> 0.192, 0.298, 0.510.
    frame = pd.DataFrame({
        "group_id": [0] * 6, "correct": [True] * 3 + [False] * 3,
        "student_log_ppl": np.log([1.2, 2.6, 3.8, 1.0, 1.0, 1.0]),
        "teacher_log_ppl": np.log([1.0, 1.0, 1.0, 4.5, 2.9, 1.7]),
    })
    prepared = prepare(frame)
    weights = compute_weights(prepared)
    assert weights == pytest.approx([0.158, 0.342, 0.500, 0.192, 0.298, 0.510], abs=1e-3)  # paper rounds 0.5092 up
    ess = effective_sample_size(prepared.assign(weight=weights)).set_index("path")
    assert ess.loc["mle", "ess"] == pytest.approx(1 / np.sum(weights[:3] ** 2))
    assert ess.loc["opd", "n"] == 3
    sweep = tau_sweep(prepared, (0.5, 1.0, 1000.0))
    summary = summarise(sweep).set_index(["tau", "path"])
    assert summary.loc[(1000.0, "opd"), "ess_frac_mean"] == pytest.approx(1.0, abs=1e-6)
    assert summary.loc[(0.5, "opd"), "ess_frac_mean"] < summary.loc[(1.0, "opd"), "ess_frac_mean"] < 1
    assert summary.loc[(1.0, "mle"), "spearman_weight_vs_own_log_ppl"] == pytest.approx(1.0)
    assert summary.loc[(1.0, "opd"), "spearman_weight_vs_own_log_ppl"] == pytest.approx(-1.0)
    # Per-token log-prob lists give the same log-PPLs as the columns.
    lists = frame.drop(columns=["student_log_ppl", "teacher_log_ppl"]).assign(
        student_logps=[[-v, -v] for v in frame["student_log_ppl"]],
        teacher_logps=[[-v] for v in frame["teacher_log_ppl"]])
    assert compute_weights(prepare(lists), WeightConfig()) == pytest.approx(weights, rel=1e-6)
