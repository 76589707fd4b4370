"""analysis.stats against scipy and closed forms on known inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import optimize, special, stats

from analysis.stats import (
    attempt,
    bootstrap_difference_ci,
    jonckheere_terpstra,
    logistic_regression,
    monotonicity,
    spearman,
)


def test_spearman_matches_scipy_and_refuses_constants():
    x = [1.2, 0.4, 3.3, 2.2, 5.0, 4.1, 0.9]
    y = [0.5, 0.25, 0.0, 0.75, 0.0, 0.25, 1.0]
    ours = spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert ours.rho == pytest.approx(ref.statistic) and ours.p_value == pytest.approx(ref.pvalue)
    assert ours.n == 7
    assert spearman([1, 2, 3, 4], [2, 4, 6, 8]).rho == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constant"):
        spearman([1, 2, 3], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2, 3], [1, 2])
    assert "undefined" in attempt(spearman, [1, 2, 3], [1, 1, 1])


def test_logistic_two_by_two_table_has_the_closed_form():
    # Binary covariate: slope = log odds ratio, SE = sqrt(1/a + 1/b + 1/c + 1/d) (Woolf).
    a, b, c, d = 30, 10, 15, 25  # x=1: 30 successes, 10 failures; x=0: 15 successes, 25 failures
    fit = logistic_regression([1, 0], [a, c], [a + b, c + d])
    assert fit.converged
    assert fit.slope == pytest.approx(np.log((a * d) / (b * c)), rel=1e-9)
    assert fit.se[1] == pytest.approx(np.sqrt(1 / a + 1 / b + 1 / c + 1 / d), rel=1e-9)
    assert fit.coef[0] == pytest.approx(np.log(c / d), rel=1e-9)
    z = stats.norm.ppf(0.975)
    assert fit.slope_ci == pytest.approx((fit.slope - z * fit.se[1], fit.slope + z * fit.se[1]))
    assert fit.slope_p_value == pytest.approx(2 * stats.norm.sf(fit.slope / fit.se[1]))


def test_logistic_matches_scipy_optimisation_and_its_hessian():
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 0.3, size=(300, 2))
    trials = rng.integers(1, 6, size=300)
    p = special.expit(-0.4 - 2.0 * x[:, 0] + 0.8 * x[:, 1])
    successes = rng.binomial(trials, p)
    fit = logistic_regression(x, successes, trials, names=["a", "b"])

    design = np.column_stack([np.ones(len(x)), x])

    def nll(beta):
        eta = design @ beta
        return np.sum(trials * np.logaddexp(0, eta) - successes * eta)

    ref = optimize.minimize(nll, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(fit.coef, ref.x, atol=1e-5)
    # Wald SEs from the numerically differentiated Hessian of the same likelihood.
    h = 1e-4
    hess = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            e_i, e_j = np.eye(3)[i] * h, np.eye(3)[j] * h
            hess[i, j] = (nll(fit.coef + e_i + e_j) - nll(fit.coef + e_i - e_j)
                          - nll(fit.coef - e_i + e_j) + nll(fit.coef - e_i - e_j)) / (4 * h * h)
    np.testing.assert_allclose(fit.se, np.sqrt(np.diag(np.linalg.inv(hess))), rtol=1e-4)
    assert fit.names == ("intercept", "a", "b") and fit.n_trials == trials.sum()


def test_logistic_counts_equal_expanded_bernoulli_rows():
    x = np.array([0.1, 0.5, 0.9, 1.4])
    successes, trials = np.array([3, 2, 1, 0]), np.array([4, 4, 4, 4])
    counted = logistic_regression(x, successes, trials)
    rows_x = np.repeat(x, trials)
    rows_y = np.concatenate([[1] * s + [0] * (t - s) for s, t in zip(successes, trials)])
    expanded = logistic_regression(rows_x, rows_y)
    np.testing.assert_allclose(counted.coef, expanded.coef, rtol=1e-9)
    np.testing.assert_allclose(counted.se, expanded.se, rtol=1e-9)
    assert counted.predict(x) == pytest.approx(special.expit(counted.coef[0] + counted.coef[1] * x))


def test_logistic_flags_separation_and_rejects_degenerate_input():
    assert not logistic_regression([1, 2, 3, 4], [0, 0, 1, 1]).converged
    with pytest.raises(ValueError, match="all outcomes"):
        logistic_regression([1, 2, 3], [0, 0, 0])
    with pytest.raises(ValueError, match="constant"):
        logistic_regression([2, 2, 2], [0, 1, 1])
    with pytest.raises(ValueError, match="successes <= trials"):
        logistic_regression([1, 2], [3, 1], [2, 2])


def _jt_by_mann_whitney(groups):
    """J as the sum over ordered group pairs of scipy's Mann-Whitney U (later group's count of wins)."""
    return sum(stats.mannwhitneyu(groups[j], groups[i]).statistic
               for i in range(len(groups)) for j in range(i + 1, len(groups)))


def test_jonckheere_statistic_is_the_sum_of_scipy_mann_whitney_u():
    groups = [[0.75, 1.0, 0.5, 0.75], [0.5, 0.25, 0.75], [0.0, 0.25, 0.25, 0.5, 0.0]]
    result = jonckheere_terpstra(groups, "decreasing")
    assert result.statistic == pytest.approx(_jt_by_mann_whitney(groups))
    assert result.z < 0 and result.p_value < 0.05
    assert jonckheere_terpstra(groups, "increasing").p_value == pytest.approx(1 - result.p_value)
    assert jonckheere_terpstra(groups, "two-sided").p_value == pytest.approx(2 * result.p_value)


def _jt_by_pairs(groups):
    """J by brute force: over ordered group pairs, count later-group wins plus half the ties."""
    return sum(float(y > x) + 0.5 * float(y == x)
               for i in range(len(groups)) for j in range(i + 1, len(groups))
               for x in groups[i] for y in groups[j])


def test_jonckheere_null_moments_equal_the_exact_permutation_distribution_with_ties():
    values = np.array([0.0, 0.0, 0.25, 0.5, 0.5, 0.5, 1.0])
    everyone = set(range(len(values)))
    stats_all = []
    # Every distinct split into groups of 2, 3, 2 is equally likely under the null.
    for first in itertools.combinations(sorted(everyone), 2):
        for second in itertools.combinations(sorted(everyone - set(first)), 3):
            third = sorted(everyone - set(first) - set(second))
            stats_all.append(_jt_by_pairs([values[list(first)], values[list(second)], values[third]]))
    assert len(stats_all) == 210
    result = jonckheere_terpstra([values[:2], values[2:5], values[5:]], "increasing")
    assert result.group_sizes == (2, 3, 2)
    assert result.statistic == pytest.approx(_jt_by_pairs([values[:2], values[2:5], values[5:]]))
    assert result.expected == pytest.approx(np.mean(stats_all))
    assert result.variance == pytest.approx(np.var(stats_all), rel=1e-9)
    with pytest.raises(ValueError, match="all outcomes tie"):
        jonckheere_terpstra([[1, 1], [1, 1]])


def test_monotonicity_counts_steps_and_matches_scipy_rho():
    m = monotonicity([64.9, 59.7, 54.0, 45.4])
    assert m.monotone and m.adjacent_in_direction == 3 and m.n_adjacent == 3
    assert m.rho == pytest.approx(-1.0)
    bumpy = monotonicity([0.6, 0.5, 0.55, 0.4], "decreasing")
    assert not bumpy.monotone and bumpy.adjacent_in_direction == 2
    assert bumpy.rho == pytest.approx(stats.spearmanr([0, 1, 2, 3], [0.6, 0.5, 0.55, 0.4]).statistic)
    assert monotonicity([1, 2, 3], "increasing").monotone


def test_bootstrap_difference_interval():
    a, b = np.array([1, 0, 1, 1, 1, 0, 1, 1.0]), np.array([0, 0, 1, 0, 0, 1, 0, 0.0])
    diff, lo, hi = bootstrap_difference_ci(a, b, n_boot=4000, seed=1)
    assert diff == pytest.approx(0.75 - 0.25)
    assert lo < diff < hi and -0.2 < lo < 0.4 and 0.6 < hi <= 1.0
    assert bootstrap_difference_ci(a, b, n_boot=4000, seed=1) == (diff, lo, hi)
    assert bootstrap_difference_ci([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert bootstrap_difference_ci([3.0], [1.0, 1.0]) == (2.0, 2.0, 2.0)  # one value resamples to itself
    # the percentiles of the differences of default_rng(seed) resample means, a's block drawn first
    rng = np.random.default_rng(3)
    diffs = (a[rng.integers(0, a.size, (500, a.size))].mean(axis=1)
             - b[rng.integers(0, b.size, (500, b.size))].mean(axis=1))
    assert bootstrap_difference_ci(a, b, level=0.9, n_boot=500, seed=3)[1:] == pytest.approx(
        tuple(np.percentile(diffs, [5.0, 95.0])), abs=1e-9)


def test_cluster_robust_errors_do_not_count_correlated_trials_as_evidence():
    # Every unit's 4 trials agree (all succeed or all fail): 4 copies of one outcome, not 4 outcomes. The
    # model errors shrink by sqrt(4) against the one-trial fit; the cluster-robust ones do not move.
    from analysis.stats import logistic_regression

    x = np.array([0.1, 0.4, 0.5, 0.9, 1.2, 1.3, 1.7, 2.0, 2.2, 2.8])
    y = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0])
    one = logistic_regression(x, y, 1)
    four = logistic_regression(x, 4 * y, 4)
    np.testing.assert_allclose(four.coef, one.coef, rtol=1e-8)
    np.testing.assert_allclose(four.se, one.se / 2.0, rtol=1e-8)
    one_r = logistic_regression(x, y, 1, se="cluster")
    four_r = logistic_regression(x, 4 * y, 4, se="cluster")
    np.testing.assert_allclose(four_r.se, one_r.se, rtol=1e-8)
    assert four_r.se[1] > four.se[1] and four_r.n_clusters == 10 and four_r.as_dict()["se_kind"] == "cluster"
    # Two rows of one rollout form one cluster: duplicating every unit leaves the clustered errors unchanged.
    twice = logistic_regression(np.repeat(x, 2), np.repeat(y, 2), 1, se="cluster", clusters=np.repeat(np.arange(10), 2))
    np.testing.assert_allclose(twice.se, one_r.se, rtol=1e-8)
    with pytest.raises(ValueError):
        logistic_regression(x, y, 1, se="robust")
