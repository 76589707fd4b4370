"""What `make demo` prints after its analyses: each statistic on one aligned line, to 3 significant
digits, with every bucket name, interval and symbol defined on the line that introduces it."""

from __future__ import annotations

import pandas as pd

from analysis.cli import aligned, bucket_table, sig, statistics_rows

RECOVERY = {
    "pooled": {"spearman_mean_over_ratios": {"rho": -0.27112008393797477, "p_value": 2.7280973704278336e-05, "n": 233},
               "ratios_with_q1_above_qn": 2, "n_ratios": 4,
               "logistic_ratio_controlled": {"slope_ci": [-0.6862993460725177, -0.4803366568824243]},
               "logistic_ratio_and_teacher_solve_controlled": {"undefined": "separation"}},
    "teacher_solve_by_bucket": {"adjacent_in_direction": 2, "n_adjacent": 3},
}


def test_numbers_keep_three_significant_digits():
    assert [sig(v) for v in (-0.27112008393797477, 2.7280973704278336e-05, 98.72881355932203, 233, 1.0)] == \
        ["-0.271", "2.73e-05", "98.7", "233", "1"]
    assert sig("n/a") == "n/a" and sig(True) == "True"


def test_recovery_statistics_read_as_an_aligned_table():
    rows = statistics_rows("recovery", RECOVERY, 4)
    assert rows == [
        ("Spearman ρ, teacher PPL vs recovery (mean over r)", "-0.271  (p = 2.73e-05, n = 233)"),
        ("ratios r where Q1 recovers more than Q4", "2 of 4"),
        ("logistic slope per unit log-PPL, r held fixed: 95% CI", "[-0.686, -0.48]"),
        ("  ... teacher's own solve rate also held fixed: 95% CI", "undefined"),
        ("teacher's from-scratch solve rate by bucket", "2 of 3 steps fall from Q1 to Q4"),
    ]
    lines = aligned(rows).splitlines()
    width = max(len(name) for name, _ in rows)
    assert len(lines) == 5 and all(line[2 + width:4 + width] == "  " and line[4 + width] != " " for line in lines)


def test_boundary_statistics_name_their_buckets_and_survive_undefined_ones():
    stats = {"spearman_per_rollout": {"undefined": "constant input"},
             "spearman_per_problem": {"rho": -0.3559869366809839, "p_value": 0.00025865037040821845, "n": 101},
             "logistic": {"slope_ci": [-2.9920686562390655, -1.2137827794228775]},
             "trend": {"p_value": 5.62139714159472e-09}, "monotonicity": {"adjacent_in_direction": 1, "n_adjacent": 2}}
    assert dict(statistics_rows("boundary", stats, 3)) == {
        "Spearman ρ, student PPL vs solve rate (per rollout)": "undefined",
        "Spearman ρ, the same per problem": "-0.356  (p = 0.000259, n = 101)",
        "logistic slope per unit log-PPL: 95% CI": "[-2.99, -1.21]",
        "Jonckheere-Terpstra p, solve rate falling Q1 to Q3": "5.62e-09",
        "solve rate by bucket": "1 of 2 steps fall from Q1 to Q3",
    }


def test_the_bucket_table_has_named_columns_and_no_row_numbers():
    buckets = pd.DataFrame({"bucket": ["Q1", "Q2"], "n_rollouts": [59, 58], "n_problems": [35, 41],
                            "teacher_ppl_mean": [1.2944500993308654, 13.13567724605819],
                            "teacher_solve_pct": [98.72881355932203, 96.12068965517241]})
    lines = bucket_table(buckets).splitlines()
    assert lines[0].split() == ["rollouts", "problems", "teacher", "PPL", "teacher", "solves", "%"]
    assert lines[1].split() == ["bucket"]
    assert lines[2].split() == ["Q1", "59", "35", "1.29", "98.7"] and lines[3].split() == ["Q2", "58", "41", "13.1", "96.1"]
