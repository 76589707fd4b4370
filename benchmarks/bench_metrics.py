"""Benchmark: vectorised metrics against a per-problem Python loop, on a full-size evaluation.

1547 problems x 32 samples is the size of the paper's six benchmarks together
(30 + 30 + 40 + 500 + 272 + 675). The loop is the obvious ``math.comb`` implementation; both run
in the same process on the same random grades and must agree to 1e-12, so the timing compares
equal work. The authors' Monte-Carlo Pass@k is checked bit for bit on a slice, since their loop
(1000 seeded draws per problem) is slow by design.

Run: ``python benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from eval.metrics import avg_at_k, counts, default_ks, pass_at_k, pass_at_k_bootstrap, pass_at_k_bootstrap_mc

N_PROBLEMS = 1547
N_SAMPLES = 32
MC_PROBLEMS = 40
TOLERANCE = 1e-12


def random_grades(n_problems: int = N_PROBLEMS, n_samples: int = N_SAMPLES, seed: int = 0) -> np.ndarray:
    """0/1 grades with a per-problem solve rate drawn uniformly, so c spans 0..n including both ends."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(size=(n_problems, 1))
    rate[:20] = 0.0
    rate[20:40] = 1.0
    return (rng.random((n_problems, n_samples)) < rate).astype(np.int64)


def vectorised(grades: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """All metrics for every k through the library's vectorised functions."""
    n, c = counts(grades)
    out = {"avg": avg_at_k(c, n)}
    for k in ks:
        out[f"pass@{k}"] = pass_at_k(n, c, k)
        out[f"pass@{k}/bootstrap"] = pass_at_k_bootstrap(n, c, k)
    return out


def naive(grades: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """The same metrics problem by problem with exact binomials from ``math.comb``."""
    rows = grades.tolist()
    out: dict[str, list[float]] = {"avg": []}
    for k in ks:
        out[f"pass@{k}"] = []
        out[f"pass@{k}/bootstrap"] = []
    for row in rows:
        n, c = len(row), sum(row)
        out["avg"].append(c / n)
        for k in ks:
            out[f"pass@{k}"].append(1.0 - math.comb(n - c, k) / math.comb(n, k))
            out[f"pass@{k}/bootstrap"].append(1.0 - (1.0 - c / n) ** k)
    return {name: np.array(values) for name, values in out.items()}


def authors_mc(grades: np.ndarray | list[list[int]], k: int, draws: int = 1000, seed: int = 42) -> np.ndarray:
    """The authors' per-problem loop (``bootstrap_metric`` in machine981/SCOPE scripts/eval/eval_benchmark.py),
    over a problems x samples matrix or ragged rows.

    It reseeds numpy's global generator per problem; the caller's global state is saved and restored.
    """
    saved = np.random.get_state()
    try:
        values = []
        for row in (grades.tolist() if isinstance(grades, np.ndarray) else grades):
            np.random.seed(seed)
            best = []
            for _ in range(draws):
                idx = np.random.choice(len(row), size=k, replace=True)
                best.append(np.max([row[i] for i in idx]))
            values.append(np.mean(best))
        return np.array(values, dtype=np.float64)
    finally:
        np.random.set_state(saved)


def _timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def run(repeats: int = 5) -> dict:
    """Time both paths, check agreement, and return the measurements.

    Vectorised paths and the count loop report the best of ``repeats`` (the machine is shared);
    the authors' Monte-Carlo loop runs once, as it takes about a second.
    """
    grades = random_grades()
    ks = default_ks(N_SAMPLES)
    fast_s, fast = min((_timed(vectorised, grades, ks) for _ in range(repeats)), key=lambda t: t[0])
    slow_s, slow = min((_timed(naive, grades, ks) for _ in range(repeats)), key=lambda t: t[0])
    max_diff = max(float(np.max(np.abs(fast[name] - slow[name]))) for name in slow)
    if max_diff > TOLERANCE:
        raise AssertionError(f"vectorised and loop metrics differ by {max_diff:.3e} > {TOLERANCE}")

    subset = grades[:MC_PROBLEMS]
    mc_fast_s, mc_fast = min((_timed(pass_at_k_bootstrap_mc, subset, N_SAMPLES) for _ in range(repeats)),
                             key=lambda t: t[0])
    mc_slow_s, mc_slow = _timed(authors_mc, subset, N_SAMPLES)
    if not np.array_equal(mc_fast, mc_slow):
        raise AssertionError("Monte-Carlo Pass@k differs from the authors' loop")
    mc_full_s = min(_timed(pass_at_k_bootstrap_mc, grades, N_SAMPLES)[0] for _ in range(repeats))
    return {
        "problems": N_PROBLEMS,
        "samples": N_SAMPLES,
        "ks": ks,
        "vectorised_s": fast_s,
        "loop_s": slow_s,
        "speedup": slow_s / fast_s,
        "max_abs_diff": max_diff,
        "mc_problems_checked": MC_PROBLEMS,
        "mc_vectorised_s": mc_fast_s,
        "mc_authors_loop_s": mc_slow_s,
        "mc_speedup": mc_slow_s / mc_fast_s,
        "mc_bit_identical": True,
        "mc_vectorised_all_problems_s": mc_full_s,
    }


def main() -> None:
    """Print the measurements of :func:`run`."""
    res = run()
    print(f"{res['problems']} problems x {res['samples']} samples, k in {res['ks']}: avg, pass@k, pass@k/bootstrap")
    print(f"  vectorised   {res['vectorised_s'] * 1e3:8.2f} ms")
    print(f"  python loop  {res['loop_s'] * 1e3:8.2f} ms")
    print(f"  speed-up     {res['speedup']:8.1f} x   (max |diff| {res['max_abs_diff']:.2e})")
    print(f"Monte-Carlo pass@{res['samples']} (1000 draws, seed 42), {res['mc_problems_checked']} problems:")
    print(f"  vectorised   {res['mc_vectorised_s'] * 1e3:8.2f} ms")
    print(f"  authors loop {res['mc_authors_loop_s'] * 1e3:8.2f} ms")
    print(f"  speed-up     {res['mc_speedup']:8.1f} x   (bit-identical: {res['mc_bit_identical']})")
    print(f"  vectorised, all {res['problems']} problems: {res['mc_vectorised_all_problems_s'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
