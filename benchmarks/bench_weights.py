"""Benchmark: vectorised ``scope_weights`` against the authors' per-rollout Python loop.

The released code computes the dual-path weights with Python dictionaries and a loop over
rollouts, once per training step. This script measures what the segment softmax saves on a
paper-sized batch (256 prompts x 8 rollouts) and checks on the same data that both give the
same weights. Run with ``python benchmarks/bench_weights.py``.
"""

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor

from train.scope import ABLATIONS, scope_weights


def loop_weights_reference(
    group_ids: Tensor,
    correct: Tensor,
    student_log_ppl: Tensor,
    teacher_log_ppl: Tensor,
    tau: float = 1.0,
) -> Tensor:
    """The authors' code's weights, computed their way: one Python step per rollout.

    Per group, each subset gets softmax(+mean log-prob / tau) = softmax(-log PPL / tau) times
    the subset size; a subset of one gets 1. On correct rollouts this is PPL_S^(-1/tau) (the
    shipped scripts' sign), on incorrect ones PPL_T^(-1/tau). Kept as the timing baseline.
    """
    n = group_ids.shape[0]
    weights = torch.zeros(n, dtype=student_log_ppl.dtype)
    correct_rows: dict[int, list[int]] = defaultdict(list)
    wrong_rows: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        if correct[i]:
            correct_rows[int(group_ids[i])].append(i)
        else:
            wrong_rows[int(group_ids[i])].append(i)
    for rows_by_group, log_ppl in ((correct_rows, student_log_ppl), (wrong_rows, teacher_log_ppl)):
        for rows in rows_by_group.values():
            if len(rows) == 1:
                weights[rows[0]] = 1.0
                continue
            logits = torch.stack([-log_ppl[i] / tau for i in rows])
            w = torch.softmax(logits, dim=0) * len(rows)
            for j, i in enumerate(rows):
                weights[i] = w[j]
    return weights


def _random_batch(n_prompts: int, n_rollouts: int, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random correctness and log-PPLs in a realistic range, with sparse non-contiguous group ids."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(100 * n_prompts, generator=gen)[:n_prompts]
    group_ids = ids.repeat_interleave(n_rollouts)
    n = group_ids.shape[0]
    correct = torch.rand(n, generator=gen) < 0.5
    student = torch.empty(n, dtype=torch.float64).uniform_(0.05, 2.0, generator=gen)
    teacher = torch.empty(n, dtype=torch.float64).uniform_(0.05, 3.0, generator=gen)
    return group_ids, correct, student, teacher


def _seconds_per_call(fn: Callable[[], Tensor], calls: int) -> float:
    """Mean over back-to-back calls, so a sub-millisecond call rises above timer resolution."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def run(n_prompts: int = 256, n_rollouts: int = 8, repeats: int = 7, seed: int = 0) -> dict[str, float]:
    """Time both implementations on one random batch and check they agree to 1e-6.

    Returns median and best seconds per call for each, the speedup (median over repeats of
    the paired loop/vectorised ratio, the figure least disturbed by other work on a shared
    machine), the ratio of the best times, and the maximum absolute difference. Runs on one
    CPU thread so numbers compare across machines.
    """
    if n_prompts <= 0 or n_rollouts <= 0 or repeats <= 0:
        raise ValueError(
            f"n_prompts, n_rollouts, repeats must be > 0, got {n_prompts}, {n_rollouts}, {repeats}"
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        group_ids, correct, student, teacher = _random_batch(n_prompts, n_rollouts, seed)
        cfg = ABLATIONS["authors_code"]
        vectorised = scope_weights(group_ids, correct, student, teacher, cfg)
        reference = loop_weights_reference(group_ids, correct, student, teacher, cfg.tau)
        max_abs_diff = float((vectorised - reference).abs().max())
        if max_abs_diff > 1e-6:
            raise AssertionError(f"vectorised and loop weights differ by {max_abs_diff:.3g} > 1e-6")
        # Interleaved so both see the same background load; each repeat gives one paired ratio.
        vec_times, loop_times = [], []
        for _ in range(repeats):
            vec_times.append(_seconds_per_call(
                lambda: scope_weights(group_ids, correct, student, teacher, cfg), calls=50))
            loop_times.append(_seconds_per_call(
                lambda: loop_weights_reference(group_ids, correct, student, teacher, cfg.tau), calls=1))
    finally:
        torch.set_num_threads(threads)
    return {
        "n_rollouts_total": float(n_prompts * n_rollouts),
        "vectorised_median_s": statistics.median(vec_times),
        "vectorised_best_s": min(vec_times),
        "loop_median_s": statistics.median(loop_times),
        "loop_best_s": min(loop_times),
        "speedup": statistics.median(lp / v for lp, v in zip(loop_times, vec_times)),
        "speedup_best": min(loop_times) / min(vec_times),
        "max_abs_diff": max_abs_diff,
    }


def main() -> None:
    """Command-line entry: print both timings and the speedup."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=256)
    parser.add_argument("--n-rollouts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    result = run(args.n_prompts, args.n_rollouts, args.repeats)
    print(f"scope_weights on {args.n_prompts} prompts x {args.n_rollouts} rollouts "
          f"({int(result['n_rollouts_total'])} rollouts), 1 thread, {args.repeats} repeats")
    print(f"  vectorised : median {result['vectorised_median_s'] * 1e3:8.3f} ms  "
          f"best {result['vectorised_best_s'] * 1e3:8.3f} ms")
    print(f"  python loop: median {result['loop_median_s'] * 1e3:8.3f} ms  "
          f"best {result['loop_best_s'] * 1e3:8.3f} ms")
    print(f"  speedup: {result['speedup']:.1f}x (median of paired ratios), best/best {result['speedup_best']:.1f}x")
    print(f"  max |vectorised - loop| = {result['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
