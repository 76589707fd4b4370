"""Statistics for the perplexity analyses: rank correlation, a logistic slope and a trend test.

Each "perplexity versus outcome" question gets a different tool, so no one test's assumptions carry the
conclusion alone; which tool answers what: docs/analysis.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special, stats

from eval.metrics import percentile_bootstrap

log = logging.getLogger(__name__)

Alternative = Literal["increasing", "decreasing", "two-sided"]


def _vector(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    return float(level)


# ------------------------------------------------------------------------------------ correlation
@dataclass(frozen=True)
class Correlation:
    """Spearman's rho with its two-sided p-value; ``n`` counts the paired units that entered."""

    rho: float
    p_value: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"rho": self.rho, "p_value": self.p_value, "n": self.n}


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Correlation:
    """Spearman's rank correlation (scipy; t-distribution p-value), refusing degenerate input.

    A constant variable has no ranks to correlate; scipy would return NaN silently, so that case
    is an error here, as is a length mismatch or fewer than three pairs.
    """
    xa, ya = _vector(x, "x"), _vector(y, "y")
    if xa.size != ya.size:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    if xa.size < 3:
        raise ValueError(f"Spearman's rho needs at least 3 pairs, got {xa.size}")
    for name, arr in (("x", xa), ("y", ya)):
        if np.all(arr == arr[0]):
            raise ValueError(f"{name} is constant, so its rank correlation is undefined")
    result = stats.spearmanr(xa, ya)
    return Correlation(float(result.statistic), float(result.pvalue), int(xa.size))


# ---------------------------------------------------------------------------- logistic regression
@dataclass(frozen=True)
class LogisticFit:
    """A binomial logistic regression: coefficients, Wald standard errors and intervals.

    ``names[0]`` is the intercept. ``slope`` is the first covariate's coefficient, the number the
    analyses report (change in log-odds of success per unit of the covariate, e.g. per nat of
    log-perplexity). ``converged`` is False when Newton's method stopped without meeting the
    tolerance, which happens under (quasi-)separation; its numbers are then not estimates.
    """

    names: tuple[str, ...]
    coef: np.ndarray
    se: np.ndarray
    ci_lo: np.ndarray
    ci_hi: np.ndarray
    level: float
    log_likelihood: float
    n_units: int
    n_trials: int
    iterations: int
    converged: bool
    se_kind: str = "model"
    """"model": Wald errors from the binomial information, every trial independent; "cluster": sandwich
    errors robust to any dependence inside a cluster (by default a unit: the trials sharing one row)."""
    n_clusters: int | None = None

    @property
    def slope(self) -> float:
        return float(self.coef[1])

    @property
    def slope_ci(self) -> tuple[float, float]:
        return float(self.ci_lo[1]), float(self.ci_hi[1])

    @property
    def slope_p_value(self) -> float:
        """Two-sided Wald p-value of the slope (NaN when its standard error is 0 or undefined)."""
        if not np.isfinite(self.se[1]) or self.se[1] <= 0:
            return float("nan")
        return float(2.0 * stats.norm.sf(abs(self.coef[1] / self.se[1])))

    def predict(self, covariates: Sequence[float] | np.ndarray) -> np.ndarray:
        """Success probability at covariate rows (no intercept column); a 1-D input is one covariate."""
        x = np.asarray(covariates, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != self.coef.size - 1:
            raise ValueError(f"expected {self.coef.size - 1} covariate columns, got shape {x.shape}")
        return special.expit(self.coef[0] + x @ self.coef[1:])

    def as_dict(self) -> dict[str, object]:
        robust = {"se_kind": self.se_kind, "n_clusters": self.n_clusters} if self.se_kind != "model" else {}
        return {
            **robust,
            "terms": {
                name: {"coef": float(c), "se": float(s), "ci_lo": float(lo), "ci_hi": float(hi)}
                for name, c, s, lo, hi in zip(self.names, self.coef, self.se, self.ci_lo, self.ci_hi)
            },
            "slope": self.slope,
            "slope_ci": list(self.slope_ci),
            "slope_p_value": self.slope_p_value,
            "level": self.level,
            "log_likelihood": self.log_likelihood,
            "n_units": self.n_units,
            "n_trials": self.n_trials,
            "iterations": self.iterations,
            "converged": self.converged,
        }


def _binomial_loglik(eta: np.ndarray, successes: np.ndarray, trials: np.ndarray) -> float:
    """Log-likelihood without the binomial coefficient (constant in the parameters)."""
    # log p = -log(1 + e^-eta), log(1-p) = -log(1 + e^eta), both via logaddexp for stability.
    return float(np.sum(-successes * np.logaddexp(0.0, -eta) - (trials - successes) * np.logaddexp(0.0, eta)))


def logistic_regression(
    covariates: Sequence[float] | np.ndarray,
    successes: Sequence[float] | np.ndarray,
    trials: Sequence[float] | np.ndarray | int = 1,
    *,
    names: Sequence[str] | None = None,
    level: float = 0.95,
    max_iter: int = 100,
    tol: float = 1e-9,
    se: str = "model",
    clusters: Sequence[Any] | np.ndarray | None = None,
) -> LogisticFit:
    """Fit logit P(success) = b0 + x @ b by Newton-Raphson on binomial counts.

    Each unit contributes ``successes`` of ``trials`` Bernoulli outcomes sharing one covariate
    row, so per-rollout counts (e.g. 3 of 4 continuations recovered) fit exactly as if every
    continuation were its own row, at a fraction of the cost. Newton's step solves the score
    equations with the observed (= expected, for the canonical link) information X'WX; the Wald
    interval is coef ± z * sqrt(diag((X'WX)^-1)) at the optimum. Step-halving keeps every
    iteration from lowering the likelihood.

    ``se="cluster"`` replaces the model errors with the cluster-robust sandwich
    G/(G-1) * B^-1 (sum_c g_c g_c') B^-1 (B = X'WX, g_c the score summed over cluster c): trials that
    share a unit (4 continuations of one rollout) or a cluster (``clusters``, one label per unit, e.g.
    the rollout behind several rows) are not counted as independent evidence.
    """
    if se not in ("model", "cluster"):
        raise ValueError(f"se must be 'model' or 'cluster', got {se!r}")
    level = _check_level(level)
    x = np.asarray(covariates, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"covariates must be a non-empty vector or 2-D matrix, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("covariates hold non-finite values")
    n_units = x.shape[0]
    s = _vector(successes, "successes")
    t = np.full(s.shape, float(trials)) if np.ndim(trials) == 0 else _vector(trials, "trials")
    if s.size != n_units or t.size != n_units:
        raise ValueError(f"covariates have {n_units} rows but successes {s.size} and trials {t.size}")
    if np.any(t < 1) or np.any(s < 0) or np.any(s > t):
        raise ValueError("need trials >= 1 and 0 <= successes <= trials for every unit")
    if names is None:
        names = ["x"] if x.shape[1] == 1 else [f"x{i}" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} names for {x.shape[1]} covariates")
    spread = x.std(axis=0)
    flat = np.flatnonzero(spread <= 1e-8 * np.maximum(1.0, np.abs(x.mean(axis=0))))
    if flat.size:
        raise ValueError(f"covariate {names[flat[0]]!r} is constant (sd {spread[flat[0]]:.3g}): no slope to fit")
    design = np.column_stack([np.ones(n_units), x])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError("the design matrix (intercept + covariates) is rank-deficient: collinear covariates")
    total_s, total_t = s.sum(), t.sum()
    if total_s == 0 or total_s == total_t:
        raise ValueError("all outcomes are successes or all are failures: the slope is not identified")

    beta = np.zeros(design.shape[1])
    beta[0] = special.logit(total_s / total_t)
    loglik = _binomial_loglik(design @ beta, s, t)
    converged, iteration = False, 0
    for iteration in range(1, max_iter + 1):
        p = special.expit(design @ beta)
        score = design.T @ (s - t * p)
        info = design.T @ (design * (t * p * (1.0 - p))[:, None])
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            break  # the information matrix collapsed: fitted probabilities reached 0 or 1
        shrink = 1.0
        for _ in range(50):
            new_loglik = _binomial_loglik(design @ (beta + shrink * step), s, t)
            if new_loglik >= loglik - 1e-12:
                break
            shrink /= 2.0
        beta, loglik = beta + shrink * step, new_loglik
        if np.max(np.abs(shrink * step)) < tol:
            converged = True
            break
    p = special.expit(design @ beta)
    info = design.T @ (design * (t * p * (1.0 - p))[:, None])
    n_clusters = None
    try:
        bread = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        bread = np.full((design.shape[1], design.shape[1]), np.nan)
    if se == "cluster":
        labels = (np.arange(n_units) if clusters is None
                  else np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1].ravel())
        if labels.size != n_units:
            raise ValueError(f"clusters has {labels.size} labels for {n_units} units")
        n_clusters = int(labels.max()) + 1
        if n_clusters < 2:
            raise ValueError("cluster-robust errors need at least 2 clusters")
        scores = np.zeros((n_clusters, design.shape[1]))
        np.add.at(scores, labels, design * (s - t * p)[:, None])
        covariance = n_clusters / (n_clusters - 1) * bread @ (scores.T @ scores) @ bread
    else:
        covariance = bread
    se_values = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    if not converged:
        log.warning("logistic regression did not converge in %d iterations: the covariate (nearly) separates "
                    "successes from failures, so the slope is not a finite estimate", iteration)
    z = stats.norm.ppf(0.5 + level / 2.0)
    return LogisticFit(
        names=("intercept", *names), coef=beta, se=se_values, ci_lo=beta - z * se_values, ci_hi=beta + z * se_values,
        level=level, log_likelihood=loglik, n_units=n_units, n_trials=int(total_t), iterations=iteration,
        converged=converged, se_kind=se, n_clusters=n_clusters,
    )


# ------------------------------------------------------------------------------- ordered buckets
@dataclass(frozen=True)
class TrendTest:
    """Jonckheere-Terpstra test of an ordered alternative across groups.

    ``statistic`` is J = sum over group pairs i < j of #(x_i < x_j) + 0.5 #(x_i = x_j); its
    null mean and tie-corrected null variance give ``z``; ``p_value`` is one-sided in the
    direction of ``alternative`` (normal approximation) or two-sided.
    """

    statistic: float
    expected: float
    variance: float
    z: float
    p_value: float
    alternative: Alternative
    group_sizes: tuple[int, ...]

    def as_dict(self) -> dict[str, object]:
        return {"statistic": self.statistic, "expected": self.expected, "variance": self.variance, "z": self.z,
                "p_value": self.p_value, "alternative": self.alternative, "group_sizes": list(self.group_sizes)}


def jonckheere_terpstra(groups: Sequence[Sequence[float] | np.ndarray],
                        alternative: Alternative = "decreasing") -> TrendTest:
    """Jonckheere-Terpstra test that outcomes rise ("increasing") or fall ("decreasing") with group order.

    Outcomes such as a rollout's recovery rate take few distinct values, so the null variance
    carries the full tie correction (Hollander, Wolfe & Chicken, Nonparametric Statistical
    Methods, 3rd ed., eq. 6.19); it equals the exact permutation variance of J.
    """
    if alternative not in ("increasing", "decreasing", "two-sided"):
        raise ValueError(f"alternative must be 'increasing', 'decreasing' or 'two-sided', got {alternative!r}")
    arrays = [_vector(g, f"group {i}") for i, g in enumerate(groups)]
    if len(arrays) < 2:
        raise ValueError(f"a trend test needs at least 2 groups, got {len(arrays)}")
    sizes = np.array([a.size for a in arrays], dtype=np.float64)
    pooled = np.concatenate(arrays)
    n = pooled.size
    stat = 0.0
    for i in range(len(arrays)):
        for j in range(i + 1, len(arrays)):
            a, b = np.sort(arrays[i]), arrays[j]
            below = np.searchsorted(a, b, side="left")  # elements of group i strictly smaller than each b
            equal = np.searchsorted(a, b, side="right") - below
            stat += float(below.sum() + 0.5 * equal.sum())
    _, ties = np.unique(pooled, return_counts=True)
    ties = ties.astype(np.float64)
    expected = (n * n - np.sum(sizes**2)) / 4.0
    variance = (
        (n * (n - 1) * (2 * n + 5) - np.sum(sizes * (sizes - 1) * (2 * sizes + 5))
         - np.sum(ties * (ties - 1) * (2 * ties + 5))) / 72.0
        + np.sum(sizes * (sizes - 1) * (sizes - 2)) * np.sum(ties * (ties - 1) * (ties - 2))
        / (36.0 * n * (n - 1) * (n - 2))
        + np.sum(sizes * (sizes - 1)) * np.sum(ties * (ties - 1)) / (8.0 * n * (n - 1))
    ) if n > 2 else 0.0
    if variance <= 0:
        raise ValueError("the groups carry no rank information (all outcomes tie): the trend test is undefined")
    z = (stat - expected) / np.sqrt(variance)
    if alternative == "increasing":
        p = stats.norm.sf(z)
    elif alternative == "decreasing":
        p = stats.norm.cdf(z)
    else:
        p = 2.0 * stats.norm.sf(abs(z))
    return TrendTest(float(stat), float(expected), float(variance), float(z), float(p), alternative,
                     tuple(int(s) for s in sizes))


@dataclass(frozen=True)
class Monotonicity:
    """How consistently bucket means move in one direction (descriptive, no test).

    ``adjacent_in_direction`` counts neighbouring buckets whose means step the expected way (of
    ``n_adjacent``); ``rho`` is Spearman's rho between bucket order and bucket mean. Its p-value is
    scipy's t-approximation, meaningless for four points (a perfect order gives p = 0), hence the
    Jonckheere-Terpstra test on the per-unit outcomes beside it.
    """

    direction: Literal["increasing", "decreasing"]
    adjacent_in_direction: int
    n_adjacent: int
    monotone: bool
    rho: float
    rho_p_value: float

    def as_dict(self) -> dict[str, object]:
        return {"direction": self.direction, "adjacent_in_direction": self.adjacent_in_direction,
                "n_adjacent": self.n_adjacent, "monotone": self.monotone, "rho": self.rho,
                "rho_p_value": self.rho_p_value}


def monotonicity(bucket_means: Sequence[float] | np.ndarray,
                 direction: Literal["increasing", "decreasing"] = "decreasing") -> Monotonicity:
    """Sign pattern of adjacent differences and Spearman's rho of bucket means against bucket order."""
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"direction must be 'increasing' or 'decreasing', got {direction!r}")
    means = _vector(bucket_means, "bucket_means")
    if means.size < 2:
        raise ValueError(f"need at least 2 bucket means, got {means.size}")
    steps = np.diff(means)
    good = steps > 0 if direction == "increasing" else steps < 0
    if means.size >= 3 and not np.all(means == means[0]):
        result = stats.spearmanr(np.arange(means.size), means)
        rho, p = float(result.statistic), float(result.pvalue)
    else:
        rho, p = float("nan"), float("nan")
    return Monotonicity(direction, int(good.sum()), int(steps.size), bool(good.all()), rho, p)


def bootstrap_difference_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                            level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean(a) - mean(b), lo, hi): percentile interval resampling the two groups independently.

    Used for the Q1 - Q4 gap, whose buckets hold different rollouts, so they resample apart.
    """
    level = _check_level(level)
    xa, xb = _vector(a, "a"), _vector(b, "b")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    lo, hi = percentile_bootstrap((xa, xb), _difference_of_means, level, n_boot, seed)
    return float(xa.mean() - xb.mean()), lo, hi


def _difference_of_means(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    return a.mean(axis=axis) - b.mean(axis=axis)


def attempt(statistic: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A statistic's ``as_dict()``, or ``{"undefined": reason}`` when the data cannot support it.

    Small or lopsided buckets (every continuation failed, one bucket empty) make some statistics
    undefined; an analysis reports that beside the others instead of stopping.
    """
    try:
        return statistic(*args, **kwargs).as_dict()
    except ValueError as exc:
        log.info("%s undefined: %s", getattr(statistic, "__name__", statistic), exc)
        return {"undefined": str(exc)}
