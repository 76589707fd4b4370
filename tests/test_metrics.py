"""Metric values against hand-computed numbers, exact binomials and the authors' own loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from repo_scripts import load_script

from eval.metrics import (
    avg_at_k,
    bootstrap_ci,
    counts,
    default_ks,
    macro_average,
    macro_bootstrap_ci,
    pass_at_k,
    pass_at_k_bootstrap,
    pass_at_k_bootstrap_mc,
    seed_ci,
)


# --- Avg@k -------------------------------------------------------------------------------------


def test_avg_at_k_from_matrix_counts_and_ragged_rows():
    grades = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert avg_at_k(grades).tolist() == [0.75, 0.0, 1.0]
    assert avg_at_k([3, 0, 4], [4, 4, 4]).tolist() == [0.75, 0.0, 1.0]
    assert avg_at_k([[1, 0], [1, 1, 1]]).tolist() == [0.5, 1.0]
    assert avg_at_k(np.array([[True, False, False, False]])).tolist() == [0.25]


def test_counts():
    n, c = counts([[1, 0, 1], [0, 0], [1]])
    assert n.tolist() == [3, 2, 1] and c.tolist() == [2, 0, 1]


def test_grades_must_be_binary():
    with pytest.raises(ValueError, match="problem 1 has grades other than 0/1"):
        avg_at_k(np.array([[1, 0], [2, 0]]))
    with pytest.raises(ValueError, match="2-D"):
        avg_at_k(np.array([1, 0, 1]))


# --- unbiased Pass@k ---------------------------------------------------------------------------


def test_pass_at_k_hand_values():
    assert float(pass_at_k(4, 1, 2)) == pytest.approx(0.5, abs=1e-15)
    # 1 - C(3,2)/C(5,2) = 1 - 3/10; 1 - C(7,2)/C(10,2) = 1 - 21/45
    assert pass_at_k([4, 5, 10], [1, 2, 3], 2) == pytest.approx([0.5, 0.7, 24 / 45], abs=1e-15)
    assert float(pass_at_k(1000, 1, 1)) == pytest.approx(0.001, abs=1e-15)


def test_pass_at_k_edges():
    assert pass_at_k([32, 8], [0, 0], 4).tolist() == [0.0, 0.0]
    assert pass_at_k([32, 8], [32, 8], 4).tolist() == [1.0, 1.0]
    # k = n: any correct sample means every k-subset contains it
    assert pass_at_k([32, 32, 32], [1, 5, 0], 32).tolist() == [1.0, 1.0, 0.0]
    # k = 1 is the plain fraction correct
    assert pass_at_k([32, 8], [8, 3], 1) == pytest.approx([0.25, 0.375], abs=1e-15)


def test_pass_at_k_matches_exact_binomials():
    for n in (1, 5, 16, 200):
        for c in range(0, n + 1, max(1, n // 7)):
            for k in sorted({1, min(2, n), max(1, n // 2), n}):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert float(pass_at_k(n, c, k)) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_pass_at_k_keeps_shape_and_monotone_in_k():
    c = np.array([[0, 3], [7, 16]])
    out = pass_at_k(16, c, 4)
    assert out.shape == (2, 2)
    curve = [pass_at_k(16, 3, k) for k in range(1, 17)]
    assert all(b >= a for a, b in zip(curve, curve[1:]))


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [
        (4, 1, 5, "k=5 exceeds the samples of problem 0"),
        ([8, 3], [1, 1], 4, "problem 1"),
        (4, 5, 2, "0 <= c <= n"),
        (4, -1, 2, "0 <= c <= n"),
        (0, 0, 1, "n must be >= 1"),
        (4, 1.5, 1, "whole numbers"),
        (4, 1, 0, "positive integer"),
        (4, 1, 2.0, "positive integer"),
        ([], [], 1, "no problems"),
    ],
)
def test_pass_at_k_rejects_bad_input(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


# --- the paper's bootstrap Pass@k --------------------------------------------------------------


def test_bootstrap_form_hand_values():
    assert float(pass_at_k_bootstrap(4, 1, 2)) == pytest.approx(0.4375, abs=1e-15)
    assert pass_at_k_bootstrap([32, 32], [0, 32], 32).tolist() == [0.0, 1.0]
    assert float(pass_at_k_bootstrap(32, 1, 32)) == pytest.approx(1 - (31 / 32) ** 32, abs=1e-15)
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k_bootstrap(4, 1, 5)


def test_bootstrap_form_never_exceeds_unbiased():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert float(pass_at_k_bootstrap(n, c, k)) <= float(pass_at_k(n, c, k)) + 1e-15


def test_monte_carlo_matches_authors_loop_bit_for_bit():
    authors_loop = load_script("benchmarks/bench_metrics.py").authors_mc  # their loop, transcribed once
    rng = np.random.default_rng(3)
    grades = (rng.random((6, 8)) < rng.uniform(size=(6, 1))).astype(int)
    grades[0] = 0
    grades[1] = 1
    for k in (8, 3):
        assert pass_at_k_bootstrap_mc(grades, k).tolist() == authors_loop(grades, k).tolist()
    ragged = [[1, 0, 0, 0], [0, 1], [1], [0, 0, 1, 1]]
    assert pass_at_k_bootstrap_mc(ragged, 1, draws=50).tolist() == authors_loop(ragged, 1, draws=50).tolist()


def test_monte_carlo_is_reproducible_and_leaves_global_rng_alone():
    grades = np.array([[1, 0, 0, 0], [1, 1, 0, 0]])
    np.random.seed(7)
    expected_next = np.random.random()
    np.random.seed(7)
    first = pass_at_k_bootstrap_mc(grades, 2)
    assert np.random.random() == expected_next
    assert pass_at_k_bootstrap_mc(grades, 2).tolist() == first.tolist()
    assert pass_at_k_bootstrap_mc(grades, 2, seed=1).tolist() != first.tolist()


def test_monte_carlo_close_to_exact_expectation():
    grades = np.zeros((4, 32), dtype=int)
    grades[0, :1] = 1
    grades[1, :4] = 1
    grades[2, :16] = 1
    grades[3, :2] = 1
    draws = 1000
    exact = 1 - (1 - np.array([1, 4, 16, 2]) / 32) ** 32
    mc = pass_at_k_bootstrap_mc(grades, 32, draws=draws)
    se = np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(mc - exact) <= 4 * se + 1e-12)
    # n=4, c=1, k=2: exact 0.4375, binomial SE over 1000 draws is 0.0157
    assert abs(float(pass_at_k_bootstrap_mc(np.array([[1, 0, 0, 0]]), 2)[0]) - 0.4375) <= 4 * 0.0157


# --- curves, intervals, averages ---------------------------------------------------------------


def test_default_ks():
    assert default_ks(32) == [1, 2, 4, 8, 16, 32]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(1) == [1]


def test_bootstrap_ci_properties():
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    values = np.r_[np.zeros(50), np.ones(50)]
    mean, lo, hi = bootstrap_ci(values, n_boot=2000, seed=1)
    assert mean == 0.5
    # binomial SE of a mean of 100 fair coins is 0.05: a 95% interval spans about +-0.098
    assert lo == pytest.approx(0.5 - 0.098, abs=0.02) and hi == pytest.approx(0.5 + 0.098, abs=0.02)
    assert bootstrap_ci(values, n_boot=2000, seed=1) == (mean, lo, hi)
    _, lo80, hi80 = bootstrap_ci(values, level=0.8, n_boot=2000, seed=1)
    assert lo < lo80 < hi80 < hi
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(values, level=95)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])


def test_bootstrap_interval_is_the_percentiles_of_seeded_resample_means():
    """The interval is the percentile interval of the means of default_rng(seed) resamples drawn
    as one (n_boot x n) block: the draws the workbench's intervals have always used."""
    values = np.random.default_rng(7).uniform(0, 100, 23)
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, values.size, (500, values.size))].mean(axis=1)
    assert bootstrap_ci(values, level=0.9, n_boot=500, seed=3)[1:] == pytest.approx(
        tuple(np.percentile(means, [5.0, 95.0])), abs=1e-9)


def test_a_single_value_resamples_to_itself():
    assert bootstrap_ci([0.7]) == (0.7, 0.7, 0.7)
    mean, lo, hi = macro_bootstrap_ci({"a": [1.0, 0.0], "b": [1.0]}, n_boot=500)
    assert mean == 0.75 and 0.5 <= lo < hi <= 1.0  # a resamples to 0, 0.5 or 1; b stays 1


def test_macro_bootstrap_ci_weights_benchmarks_equally():
    mean, lo, hi = macro_bootstrap_ci({"a": [1.0, 0.0], "b": [1.0, 1.0, 1.0, 1.0]}, n_boot=500)
    assert mean == 0.75  # (0.5 + 1.0) / 2, not the pooled 5/6
    # benchmark a resamples to 0, 0.5 or 1; b is always 1
    assert 0.5 <= lo <= mean <= hi <= 1.0


def test_seed_ci_is_a_t_interval():
    mean, lo, hi = seed_ci([1.0, 2.0, 3.0])
    # sd = 1, t(0.975, df=2) = 4.302653 (printed t tables)
    half = 4.302653 / math.sqrt(3)
    assert mean == 2.0
    assert (lo, hi) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        seed_ci([1.0])


def test_macro_average():
    assert macro_average({"a": 10.0, "b": 20.0, "c": 60.0}) == 30.0
    with pytest.raises(ValueError, match="empty"):
        macro_average({})
    with pytest.raises(ValueError, match="'b'"):
        macro_average({"a": 1.0, "b": float("nan")})
