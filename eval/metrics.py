"""Evaluation metrics for sampled reasoning: Avg@k, Pass@k and their confidence intervals.

Two Pass@k definitions coexist on purpose, because they disagree: :func:`pass_at_k` (unbiased, Chen et
al.) and :func:`pass_at_k_bootstrap` (what the SCOPE paper reports). How, and input shapes: docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Integral

import numpy as np
from scipy import stats

ArrayLike = np.ndarray | Sequence[float] | float | int
CorrectnessInput = np.ndarray | Sequence[Sequence[float]]


def _as_count_array(values: ArrayLike, name: str) -> np.ndarray:
    """Integer array from counts that may arrive as floats (e.g. pandas sums), rejecting fractions."""
    arr = np.asarray(values)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be integer counts, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must hold whole numbers, got {arr!r}")
    return arr.astype(np.int64)


def _check_counts(n: ArrayLike, c: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast n and c to one shape and reject impossible counts, naming the first bad problem."""
    n_arr, c_arr = np.broadcast_arrays(_as_count_array(n, "n"), _as_count_array(c, "c"))
    if n_arr.size == 0:
        raise ValueError("n and c hold no problems")
    bad = np.flatnonzero((n_arr < 1).ravel())
    if bad.size:
        raise ValueError(f"n must be >= 1 sample per problem; problem {bad[0]} has n={n_arr.ravel()[bad[0]]}")
    bad = np.flatnonzero((c_arr < 0).ravel() | (c_arr > n_arr).ravel())
    if bad.size:
        i = bad[0]
        raise ValueError(
            f"c must satisfy 0 <= c <= n; problem {i} has c={c_arr.ravel()[i]}, n={n_arr.ravel()[i]}"
        )
    return n_arr, c_arr


def _check_k(k: int, n: np.ndarray) -> int:
    """k is a positive integer no larger than any problem's sample count."""
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    bad = np.flatnonzero((n < k).ravel())
    if bad.size:
        raise ValueError(f"k={k} exceeds the samples of problem {bad[0]} (n={n.ravel()[bad[0]]})")
    return int(k)


def _grade_groups(correct: CorrectnessInput) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Problem count and (problem indices, 0/1 float matrix) per distinct sample count.

    A rectangular matrix is one group, handled without a Python loop over problems; ragged rows
    are grouped by length so every later step stays a matrix operation.
    """
    if isinstance(correct, np.ndarray):
        if correct.ndim != 2 or correct.shape[0] == 0 or correct.shape[1] == 0:
            raise ValueError(
                f"correctness matrix must be non-empty 2-D (problems x samples), got shape {correct.shape}"
            )
        groups = [(np.arange(correct.shape[0]), correct)]
        n_problems = correct.shape[0]
    else:
        rows = [np.asarray(row) for row in correct]
        if not rows:
            raise ValueError("correctness input holds no problems")
        for i, row in enumerate(rows):
            if row.ndim != 1 or row.size == 0:
                raise ValueError(f"problem {i} must have a non-empty 1-D row of grades, got shape {row.shape}")
        sizes = np.array([row.size for row in rows])
        groups = []
        for size in np.unique(sizes):
            members = np.flatnonzero(sizes == size)
            groups.append((members, np.stack([rows[m] for m in members])))
        n_problems = len(rows)
    checked = []
    for members, grades in groups:
        values = grades.astype(np.float64)
        bad = np.flatnonzero(~np.all((values == 0.0) | (values == 1.0), axis=1))
        if bad.size:
            raise ValueError(f"problem {members[bad[0]]} has grades other than 0/1: {grades[bad[0]]!r}")
        checked.append((members, values))
    return n_problems, checked


def counts(correct: CorrectnessInput) -> tuple[np.ndarray, np.ndarray]:
    """Per-problem (n, c) from graded samples, the input every count-based metric takes."""
    n_problems, groups = _grade_groups(correct)
    n = np.empty(n_problems, dtype=np.int64)
    c = np.empty(n_problems, dtype=np.int64)
    for members, grades in groups:
        n[members] = grades.shape[1]
        c[members] = grades.sum(axis=1).astype(np.int64)
    return n, c


def avg_at_k(correct_or_c: CorrectnessInput | ArrayLike, n: ArrayLike | None = None) -> np.ndarray:
    """Per-problem mean correctness (Avg@k's inner average).

    Pass a correctness matrix (or ragged rows) alone, or correct counts ``c`` with sample counts ``n``.
    """
    if n is None:
        n_arr, c_arr = counts(correct_or_c)  # type: ignore[arg-type]
    else:
        n_arr, c_arr = _check_counts(n, correct_or_c)  # type: ignore[arg-type]
    return c_arr / n_arr


def pass_at_k(n: ArrayLike, c: ArrayLike, k: int) -> np.ndarray:
    """Unbiased Pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), per problem.

    Computed in Chen et al.'s product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms
    the huge binomials, once per distinct (n, c) pair: a benchmark of any size has at most
    n + 1 of them per sample count. Problems with fewer than k wrong samples score exactly 1.
    """
    n_arr, c_arr = _check_counts(n, c)
    k = _check_k(k, n_arr)
    base = int(n_arr.max()) + 1
    unique_key, inverse = np.unique(n_arr.ravel() * base + c_arr.ravel(), return_inverse=True)
    nn, cc = np.divmod(unique_key, base)
    values = np.ones(unique_key.shape, dtype=np.float64)
    need = (nn - cc) >= k
    if need.any():
        nn, cc = nn[need], cc[need]
        j = np.arange(int(cc.max()))
        valid = j[None, :] < cc[:, None]
        i = (nn - cc + 1)[:, None] + j[None, :]
        terms = np.where(valid, 1.0 - k / np.where(valid, i, 1), 1.0)
        values[need] = 1.0 - terms.prod(axis=1)
    return values[inverse].reshape(n_arr.shape)


def pass_at_k_bootstrap(n: ArrayLike, c: ArrayLike, k: int) -> np.ndarray:
    """The paper's Pass@k in closed form: 1 - (1 - c/n)^k, per problem.

    This is the exact expectation of the authors' procedure (draw k of the n samples with
    replacement, take the best, average over draws). k > n is rejected as the authors' script does.
    """
    n_arr, c_arr = _check_counts(n, c)
    k = _check_k(k, n_arr)
    return 1.0 - (1.0 - c_arr / n_arr) ** k


def pass_at_k_bootstrap_mc(correct: CorrectnessInput, k: int, draws: int = 1000, seed: int = 42) -> np.ndarray:
    """The paper's Pass@k by the authors' Monte-Carlo procedure, reproducing their draws exactly.

    Replicated from ``bootstrap_metric`` in machine981/SCOPE ``scripts/eval/eval_benchmark.py``
    (identical to verl's ``verl/trainer/ppo/metric_utils.py::bootstrap_metric``), which for each
    problem calls ``np.random.seed(seed)`` and then, ``draws`` times,
    ``np.random.choice(n, size=k, replace=True)``, takes ``np.max`` of the drawn grades and
    finally ``np.mean`` of the ``draws`` maxima. Reseeding per problem means every problem with
    the same n sees the same index draws, so one legacy ``RandomState(seed)`` stream is drawn
    per distinct n, as a (draws x k) ``choice`` (the same stream as the authors' consecutive
    calls), without touching numpy's global RNG. For 0/1 grades the best of a draw is 1 exactly
    when a drawn index is correct, computed as a product with the draws' incidence matrix.
    The authors' special case n = k = 1 (return the single grade) gives the same value.
    """
    if isinstance(draws, bool) or not isinstance(draws, Integral) or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    n_problems, groups = _grade_groups(correct)
    sizes = np.empty(n_problems, dtype=np.int64)
    for members, grades in groups:
        sizes[members] = grades.shape[1]
    k = _check_k(k, sizes)
    out = np.empty(n_problems, dtype=np.float64)
    for members, grades in groups:
        n = grades.shape[1]
        idx = np.random.RandomState(seed).choice(n, size=(draws, k), replace=True)
        incidence = np.zeros((draws, n), dtype=np.float64)
        incidence[np.arange(draws)[:, None], idx] = 1.0
        best = (grades @ incidence.T) > 0.0
        out[members] = best.astype(np.float64).mean(axis=1)
    return out


def default_ks(n_max: int) -> list[int]:
    """k = 1, 2, 4, ... below n_max, then n_max itself: verl's best@k grid (2, 4, ..., N) plus k = 1."""
    ks, k = [], 1
    while k < n_max:
        ks.append(k)
        k *= 2
    ks.append(int(n_max))
    return ks


def _check_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    return float(level)


def _check_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, Integral) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    return int(n_boot)


def _finite_1d(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr!r}")
    return arr


def percentile_bootstrap(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], level: float,
                         n_boot: int, seed: int) -> tuple[float, float]:
    """scipy's percentile bootstrap interval of ``statistic`` (vectorised, ``axis`` keyword), each
    sample resampled with replacement on its own, in order, from ``default_rng(seed)``.

    scipy refuses a sample of one value. Such a sample resamples only to itself, as its value taken
    twice does, so it is passed doubled: the same interval for any statistic of sample means.
    """
    data = tuple(np.repeat(s, 2) if s.size == 1 else s for s in samples)
    result = stats.bootstrap(data, statistic, n_resamples=n_boot, confidence_level=level, method="percentile",
                             vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean_of_means(*samples: np.ndarray, axis: int) -> np.ndarray:
    return np.mean([s.mean(axis=axis) for s in samples], axis=0)


def bootstrap_ci(
    per_problem_values: ArrayLike, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): a percentile bootstrap interval over problems, the dominant noise in Avg@k.

    Problems are resampled with replacement; the sample-level noise inside each problem is
    already averaged into its value.
    """
    values = _finite_1d(per_problem_values, "per_problem_values")
    level, n_boot = _check_level(level), _check_boot(n_boot)
    lo, hi = percentile_bootstrap((values,), np.mean, level, n_boot, seed)
    return float(values.mean()), lo, hi


def macro_bootstrap_ci(
    per_benchmark_values: Mapping[str, ArrayLike], level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi) for the unweighted mean over benchmarks, resampling problems inside each one.

    Stratifying by benchmark keeps every benchmark's weight at 1/B, as in the paper's "Average".
    """
    if not per_benchmark_values:
        raise ValueError("per_benchmark_values is empty")
    level, n_boot = _check_level(level), _check_boot(n_boot)
    arrays = {name: _finite_1d(v, f"benchmark {name!r}") for name, v in per_benchmark_values.items()}
    lo, hi = percentile_bootstrap(tuple(arrays.values()), _mean_of_means, level, n_boot, seed)
    return macro_average({name: float(v.mean()) for name, v in arrays.items()}), lo, hi


def seed_ci(per_seed_values: ArrayLike, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval over independent runs (seeds) of one configuration."""
    values = _finite_1d(per_seed_values, "per_seed_values")
    level = _check_level(level)
    if values.size < 2:
        raise ValueError(f"a t-interval needs at least 2 runs, got {values.size}")
    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + level / 2.0, df=values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return mean, mean - half, mean + half


def macro_average(per_benchmark: Mapping[str, float]) -> float:
    """The paper's "Average": the unweighted mean of benchmark scores, whatever their sizes."""
    if not per_benchmark:
        raise ValueError("per_benchmark is empty")
    for name, value in per_benchmark.items():
        if not np.isfinite(value):
            raise ValueError(f"benchmark {name!r} has a non-finite score {value!r}")
    return float(np.mean(list(per_benchmark.values())))
