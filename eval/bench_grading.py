"""Benchmark: the batch grader against a naive sequential math-verify loop, identical verdicts.

The workload imitates an evaluation run: for each of ``n_problems_per_benchmark`` problems of the
six benchmarks, ``k`` sampled responses with real LaTeX reasoning text, ending in a correct
answer (sometimes reformatted), one of a few recurring wrong answers, or no boxed answer at all
(a truncated generation). Real samples repeat their final answers a lot, and so does this.

(a) the naive loop: per response, the grader's own extraction and per-benchmark handling, then
    ``math_verify.parse`` on gold and answer and ``math_verify.verify``, in this process;
(b) :func:`workbench.grading.grade_batch` with a fresh cache: integer fast path, deduplication,
    a process pool with per-item time limits.

Both run in the same process on the same items; the verdicts must be identical, so the timing
compares equal work. Run: ``python -m eval.bench_grading``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from fractions import Fraction
from pathlib import Path

from workbench.grading import GradeCache, final_answer, grade_batch, verify_inputs

BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


def data_dir() -> Path:
    """$SCOPE_DATA_DIR, else the shared benchmark folder beside the repository."""
    path = Path(os.environ.get("SCOPE_DATA_DIR", DEFAULT_DATA_DIR))
    if not (path / "math500.jsonl").is_file():
        raise FileNotFoundError(f"benchmark data not found in {path}: set SCOPE_DATA_DIR")
    return path


def _reformatted(gold: str) -> str:
    """The gold as a model might write it differently: '025' -> '25', '1/2' -> '0.5', \\dfrac."""
    try:
        value = Fraction(gold)
    except ValueError:
        return gold.replace("\\frac", "\\dfrac") if "\\frac" in gold else " " + gold + " "
    return str(value.numerator) if value.denominator == 1 else repr(float(value))


def _wrong(gold: str, others: list[str], rng: random.Random) -> list[str]:
    """A few recurring wrong answers: off-by-one for numbers, other problems' golds otherwise."""
    try:
        value = Fraction(gold)
        wrong = [str(value + 1), str(2 * value)]
    except ValueError:
        wrong = []
    return wrong + rng.sample([o for o in others if o != gold], 3 - len(wrong) + 1)


def workload(n_problems_per_benchmark: int, k: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(response, gold, benchmark) items: k responses for each of n problems of each benchmark."""
    rng = random.Random(seed)
    items = []
    for name in BENCHMARKS:
        with open(data_dir() / f"{name}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        golds = [row["answer"] for row in rows]
        chosen = rows[:: max(1, len(rows) // n_problems_per_benchmark)][:n_problems_per_benchmark]
        for row in chosen:
            gold = row["answer"]
            correct = [gold, _reformatted(gold)]
            wrong = _wrong(gold, golds, rng)
            solve_rate = rng.random()
            reasoning = "Let us restate the problem. " + row["problem"][:1500] + "\nWorking through the cases, "
            for _ in range(k):
                draw = rng.random()
                if draw < 0.1:
                    items.append((reasoning + "the remaining case needs", gold, name))
                    continue
                if draw < 0.1 + 0.9 * solve_rate:
                    answer = rng.choices(correct, weights=(3, 1))[0]
                else:
                    answer = rng.choices(wrong, weights=(4, 2, 1, 1)[: len(wrong)])[0]
                items.append((reasoning + "so the final answer is $\\boxed{" + answer + "}$.", gold, name))
    return items


def naive(items: list[tuple[str, str, str]]) -> list[bool]:
    """One item at a time: the same extraction and handling, then math-verify directly."""
    from math_verify import parse, verify

    verdicts = []
    for response, gold, benchmark in items:
        extracted, error = final_answer(response, gold, benchmark)
        if error is not None:
            verdicts.append(False)
            continue
        gold_latex, answer_latex = verify_inputs(extracted, gold, benchmark)
        verdicts.append(bool(verify(parse(gold_latex), parse(answer_latex))))
    return verdicts


def run(n_problems_per_benchmark: int = 8, k: int = 32, workers: int | None = None) -> dict:
    """Time both graders on one workload, check the verdicts agree, return the measurements."""
    items = workload(n_problems_per_benchmark, k)
    start = time.perf_counter()
    slow = naive(items)
    naive_s = time.perf_counter() - start

    start = time.perf_counter()
    grades = grade_batch(items, workers=workers, cache=GradeCache(), progress=False)
    batch_s = time.perf_counter() - start
    fast = [g.correct for g in grades]
    if fast != slow:
        differ = [(items[i][2], items[i][1], grades[i]) for i in range(len(items)) if fast[i] != slow[i]]
        raise AssertionError(f"{len(differ)} verdicts differ, e.g. {differ[:3]}")
    distinct = {(b, g, x.extracted) for (_, g, b), x in zip(items, grades) if x.extracted}
    return {
        "items": len(items),
        "distinct_answers": len(distinct),
        "unboxed": sum(g.error == "no_boxed" for g in grades),
        "accuracy": sum(fast) / len(fast),
        "naive_s": naive_s,
        "batch_s": batch_s,
        "speedup": naive_s / batch_s,
    }


def main() -> None:
    """Print the measurements of :func:`run`."""
    logging.basicConfig(level=logging.WARNING)
    res = run()
    print(f"{res['items']} responses ({len(BENCHMARKS)} benchmarks), {res['distinct_answers']} distinct "
          f"answers, {res['unboxed']} unboxed, accuracy {res['accuracy']:.3f}")
    print(f"  naive math-verify loop {res['naive_s']:8.2f} s")
    print(f"  grade_batch            {res['batch_s']:8.2f} s   (fresh cache, {os.cpu_count()} CPUs)")
    print(f"  speed-up               {res['speedup']:8.1f} x   (verdicts identical)")


if __name__ == "__main__":
    main()
