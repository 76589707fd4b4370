"""Benchmark: grading throughput on an evaluation-shaped workload, and where the time goes.

A naive one-at-a-time loop against the batch grader with 1 and 2 workers (cold and warm) and against the
filled cache, on the same items with identical verdicts required; what the workload imitates and what each
line measures: docs/grading.md.

Run: ``python benchmarks/bench_grading.py [--problems 8] [--samples 32] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from fractions import Fraction
from pathlib import Path

from workbench.grading import GradeCache, grade_batch, prepare, shutdown, start_workers
from workbench.grading.worker import verify_all

BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"

BUILT_IN_GOLDS = {
    "aime24": ["204", "25", "116", "104", "33", "73", "236", "45", "540", "371"],
    "aime25": ["70", "588", "16", "117", "279", "504", "821", "77", "62", "81"],
    "amc23": ["27", "36", "-1", "4", "50", "3", "9", "12", "5", "901"],
    "math500": ["\\frac{14}{3}", "\\left( 3, \\frac{\\pi}{2} \\right)", "10,\\!080", "\\$18.90", "1,-2",
                "58,500", "6 - 5i", "\\sqrt{51}", "\\text{Evelyn}", "(-\\sqrt{3}, \\sqrt{3})"],
    "minerva": ["4.5e33", "1.6", "6630", "\\frac{K-1}{L}", "7.26e6", "41.8", "3e8", "1.70e4", "0.003",
                "\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}"],
    "olympiadbench": ["69$,$84", "(1,1), (3,2)", "2^{1009}", "62.5%", "\\frac{9 \\sqrt{3}}{20}", "5,15",
                      "(2,251,252)", "[\\frac{1}{2}, 8]", "2-\\sqrt{3}", "-1,0,1"],
}

REASONING_LINES = [  # <a>, <b>, <c>, <d> become random numbers
    "We substitute $x = <a>$ into the expression and obtain $<a>^2 + <b> = <c>$.",
    "By the AM-GM inequality, $\\frac{<a> + <b>}{2} \\ge \\sqrt{<a> \\cdot <b>}$, with equality when they agree.",
    "Let $f(n) = n^2 - <a>n + <b>$. Then $f(<c>) = <c>^2 - <a>\\cdot <c> + <b>$.",
    "Counting the cases separately gives $\\binom{<a>}{2} + <b> \\cdot <c>$ arrangements.",
    "Hmm, let me double-check the sum: $<a> + <b> + <c> = <d>$, which matches.",
    "The area is $\\frac{1}{2} \\cdot <a> \\cdot <b> \\sin\\theta$ where $\\theta$ is the included angle.",
    "Since $\\gcd(<a>, <b>) = 1$, the fraction $\\frac{<a>}{<b>}$ is already in lowest terms.",
]


def data_dir() -> Path | None:
    """$SCOPE_DATA_DIR, else the shared benchmark folder beside the repository, if it holds the files."""
    path = Path(os.environ.get("SCOPE_DATA_DIR") or DEFAULT_DATA_DIR)
    return path if all((path / f"{name}.jsonl").is_file() for name in BENCHMARKS) else None


def golds(n_problems: int) -> dict[str, list[str]]:
    """``n_problems`` golds per benchmark, spread over each file (or the built-in set)."""
    folder = data_dir()
    out = {}
    for name in BENCHMARKS:
        if folder is None:
            answers = BUILT_IN_GOLDS[name]
        else:
            with open(folder / f"{name}.jsonl", encoding="utf-8") as f:
                answers = [json.loads(line)["answer"] for line in f if line.strip()]
        out[name] = answers[:: max(1, len(answers) // n_problems)][:n_problems]
    return out


def _respellings(gold: str) -> list[str]:
    """The gold as models write it differently: integers grouped or with a unit, fractions as
    decimals, \\dfrac, multi-value golds as labelled boxes (the box markup is added by the caller
    unless the spelling already has it)."""
    try:
        value = Fraction(gold)
    except ValueError:
        plain = gold.replace("$,$", ",")
        if "," in plain and not any(char in plain for char in "()[]{}\\"):
            parts = [p.strip() for p in plain.split(",")]
            labelled = ", ".join(f"$x_{i + 1} = \\boxed{{{p}}}$" for i, p in enumerate(parts))
            return [gold, labelled]
        return [gold, gold.replace("\\frac", "\\dfrac") if "\\frac" in gold else f" {gold} "]
    if value.denominator != 1:
        return [gold, repr(float(value))]
    number = int(value)
    grouped = f"{number:,}".replace(",", "\\,") if abs(number) >= 1000 else f"{number} \\text{{ units}}"
    return [gold, str(number), grouped]


def _wrong(gold: str, others: list[str], rng: random.Random) -> list[str]:
    """A few recurring wrong answers: near misses for numbers, other problems' golds otherwise."""
    try:
        value = Fraction(gold)
        wrong = [str(value + 1), str(2 * value)]
    except ValueError:
        wrong = []
    return wrong + rng.sample([o for o in others if o != gold], min(len(others) - 1, 4 - len(wrong)))


def _reasoning(rng: random.Random, chars: int) -> str:
    lines = []
    while sum(map(len, lines)) < chars:
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 99)
        line = rng.choice(REASONING_LINES)
        for name, value in (("<a>", a), ("<b>", b), ("<c>", c), ("<d>", a + b + c)):
            line = line.replace(name, str(value))
        lines.append(line)
    return "\n".join(lines)


def _boxed(answer: str) -> str:
    return answer if "\\boxed" in answer else f"$\\boxed{{{answer}}}$"


def workload(n_problems: int, samples: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(response, gold, benchmark) items: ``samples`` responses for each problem of each benchmark."""
    rng = random.Random(seed)
    items = []
    for name, answers in golds(n_problems).items():
        for gold in answers:
            correct, wrong = _respellings(gold), _wrong(gold, answers, rng)
            solve_rate = rng.random()
            for _ in range(samples):
                text = _reasoning(rng, rng.randint(5_000, 15_000))
                draw = rng.random()
                if draw < 0.1:
                    items.append((text + "\nThe remaining case needs", gold, name))
                    continue
                if draw < 0.15 and wrong:
                    ending = f"It is either {_boxed(rng.choice(correct))} or {_boxed(rng.choice(wrong))}."
                elif draw < 0.15 + 0.85 * solve_rate:
                    ending = f"Therefore the final answer is {_boxed(rng.choice(correct))}."
                else:
                    ending = f"Therefore the final answer is {_boxed(rng.choice(wrong) if wrong else '0')}."
                items.append((text + "\n" + ending, gold, name))
    return items


def warm_up_items() -> list[tuple[str, str, str]]:
    """Comparisons of the usual shapes (fractions, radicals, sets, intervals, text, units) that
    share no gold with the workload, to bring workers to a steady state before timing."""
    items = []
    for i in range(7, 27):
        items.append((f"so \\boxed{{\\frac{{{i}}}{{{i + 2}}}}}", f"{i}/{i + 2}", "math500"))
        items.append((f"so \\boxed{{{i}\\sqrt{{{i + 1}}}}}", f"\\sqrt{{{i * i * (i + 1)}}}", "olympiadbench"))
        items.append((f"so \\boxed{{({i}, {i + 1}]}}", f"({i},{i + 1}]", "math500"))
        items.append((f"so \\boxed{{{i}.5 \\text{{ km}}}}", f"{i}.5", "minerva"))
        items.append((f"so \\boxed{{\\text{{Option {i}}}}}", f"\\text{{Option {i}}}", "math500"))
    return items


def naive(items: list[tuple[str, str, str]]) -> list[bool]:
    """One item at a time in this process: the same reading of the answer, then math-verify."""
    verdicts = []
    for response, gold, benchmark in items:
        item = prepare(response, gold, benchmark)
        verdicts.append(item.verdict if item.verdict is not None else verify_all(item.gold, list(item.preds))[0])
    return verdicts


def timed_batch(items: list, workers: int, *, warm_up: list | None,
                cache: GradeCache | None = None) -> tuple[float, object]:
    """(seconds, grades) of one grade_batch call on fresh workers: started inside the measurement
    (cold), or first warmed on ``warm_up``, a different workload, so that nothing they cached
    while warming (parsed golds, sympy's caches) helps with ``items``."""
    shutdown()
    if warm_up is not None:
        start_workers(workers)
        grade_batch(warm_up, workers=workers, progress=False)
    start = time.perf_counter()
    grades = grade_batch(items, workers=workers, cache=cache if cache is not None else GradeCache(), progress=False)
    return time.perf_counter() - start, grades


def run(n_problems: int = 8, samples: int = 32, repeat: int = 3) -> dict:
    """All measurements of the module docstring on one workload, each the fastest of ``repeat``
    (other processes share the machine); verdicts must agree everywhere."""
    items = workload(n_problems, samples)
    warm_up = warm_up_items()
    load_before = os.getloadavg()
    naive(warm_up)  # imports math-verify, as the warm workers have
    naive_s = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        reference = naive(items)
        naive_s = min(naive_s, time.perf_counter() - start)

    runs = {}
    for label, workers, cold in (("1 worker, cold", 1, True), ("1 worker, warm", 1, False),
                                 ("2 workers, cold", 2, True), ("2 workers, warm", 2, False)):
        for _ in range(repeat):
            seconds, grades = timed_batch(items, workers, warm_up=None if cold else warm_up)
            verdicts = [g.correct for g in grades]
            if verdicts != reference:
                differ = [(item[2], item[1], g) for item, g, v, r in zip(items, grades, verdicts, reference) if v != r]
                raise AssertionError(f"{label}: {len(differ)} verdicts differ from the naive loop, e.g. {differ[:3]}")
            if label not in runs or seconds < runs[label][0]:
                runs[label] = (seconds, grades.report)
    cache = GradeCache()
    timed_batch(items, 2, warm_up=warm_up, cache=cache)
    cached_s, cached = min((timed_batch(items, 2, warm_up=warm_up, cache=cache) for _ in range(repeat)),
                           key=lambda run: run[0])
    if [g.correct for g in cached] != reference:
        raise AssertionError("verdicts from the cache differ from the naive loop")
    shutdown()
    return {
        "items": len(items),
        "chars": sum(len(r) for r, _, _ in items) / len(items),
        "accuracy": sum(reference) / len(reference),
        "naive_s": naive_s,
        "runs": runs,
        "cached_s": cached_s,
        "cached": cached.report,
        "load": (load_before, os.getloadavg()),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }


def main() -> None:
    """Print the measurements of :func:`run`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="problems per benchmark (default 8)")
    parser.add_argument("--samples", type=int, default=32, help="responses per problem (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the naive loop's "timeout disabled" notices
    res = run(args.problems, args.samples, args.repeat)
    n = res["items"]
    first = res["runs"]["2 workers, warm"][1]
    source = "real golds" if data_dir() else "built-in golds"
    print(f"{n} responses ({len(BENCHMARKS)} benchmarks x {args.problems} problems x {args.samples}, {source}), "
          f"{res['chars']:.0f} characters on average; {first.no_answer} without an answer, {first.fast} decided "
          f"without math-verify, {first.verified_items} sent as {first.distinct_verified} distinct comparisons; "
          f"accuracy {res['accuracy']:.3f}")
    print(f"{res['cpus']} usable CPUs; load average {res['load'][0][0]:.1f} before, {res['load'][1][0]:.1f} after; "
          f"each time the fastest of {args.repeat} runs")
    print(f"  {'naive math-verify loop':24s} {res['naive_s']:7.2f} s  {n / res['naive_s']:8.1f} responses/s")
    for label, (seconds, report) in res["runs"].items():
        print(f"  {'grade_batch, ' + label:24s} {seconds:7.2f} s  {n / seconds:8.1f} responses/s   "
              f"timeouts {report.timeouts}, retried {report.retried}")
    print(f"  {'grade_batch, all cached':24s} {res['cached_s']:7.2f} s  {n / res['cached_s']:8.1f} responses/s   "
          f"{res['cached'].cache_hits} cache hits")
    seconds = {label: s for label, (s, _) in res["runs"].items()}
    print("ratios (same run):")
    print(f"  2 workers warm vs naive loop     {res['naive_s'] / seconds['2 workers, warm']:6.2f} x")
    print(f"  2 workers vs 1 worker, warm      {seconds['1 worker, warm'] / seconds['2 workers, warm']:6.2f} x")
    print(f"  2 workers vs 1 worker, cold      {seconds['1 worker, cold'] / seconds['2 workers, cold']:6.2f} x")
    print(f"  all cached vs fresh (2 workers)  {seconds['2 workers, warm'] / res['cached_s']:6.2f} x")
    cpu = {label: report.verify_cpu_seconds for label, (_, report) in res["runs"].items()}
    print(f"  math-verify CPU, 2 vs 1 worker   {cpu['2 workers, warm'] / cpu['1 worker, warm']:6.2f} x   "
          "(each worker warms its own parser and sympy caches)")
    print("where the time goes (seconds; workers' columns are summed over workers):")
    print(f"  {'run':18s} {'wall':>7s} {'reading':>8s} {'mv wall':>8s} {'mv CPU':>7s} {'startup':>8s} "
          f"{'IPC+idle':>9s} {'per request':>12s}")
    for label, (wall, r) in res["runs"].items():
        other = r.pool_seconds * r.workers - r.verify_seconds - r.startup_seconds
        print(f"  {label:18s} {wall:7.2f} {r.prepare_seconds:8.2f} {r.verify_seconds:8.2f} {r.verify_cpu_seconds:7.2f} "
              f"{r.startup_seconds:8.2f} {other:9.2f} {1000 * other / max(1, r.distinct_verified):9.1f} ms")
    print("  reading = extraction, normalisation, integer fast path and cache look-ups in the calling process;")
    print("  mv = inside math-verify in the workers; IPC+idle = pool wall x workers - mv wall - startup")


if __name__ == "__main__":
    main()
