"""The grader: extraction, per-benchmark equivalence on the real golds, hard time limits, crashes, cache.

Worker processes are real here (no mocking of the isolation): hostile answers must time out in a
killed worker, and a worker that dies must cost only its own item.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from workbench import grading
from workbench.data import UnknownBenchmark
from workbench.grading import Grade, GradeCache, grade, grade_batch, pool

BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
HOSTILE = "Collecting powers, the value is \\boxed{9^{9^{9^{9}}}}"  # math-verify runs for minutes on it
LIMIT = 1.0  # CPU seconds; ordinary answers take milliseconds
NO_RETRY = {"timeout": LIMIT, "retry_timeout": LIMIT}


def load_golds(data_dir: Path) -> list[tuple[str, str]]:
    """(benchmark, gold answer) for every problem of the six files."""
    golds = []
    for name in BENCHMARKS:
        with open(data_dir / f"{name}.jsonl", encoding="utf-8") as f:
            golds += [(name, json.loads(line)["answer"]) for line in f if line.strip()]
    return golds


def numeric(gold: str) -> Fraction | None:
    try:
        return Fraction(gold)
    except ValueError:
        return None


# --------------------------------------------------------------------------- extraction


def test_final_box_nested_braces():
    assert grading.final_boxes("so \\boxed{\\frac{1}{2}} done") == (["\\frac{1}{2}"], None)
    assert grading.final_boxes("\\boxed{\\{1, 2\\}}") == (["\\{1, 2\\}"], None)


def test_final_box_after_a_correction_and_variants():
    assert grading.final_boxes("\\boxed{3} no wait \\boxed {4}.") == (["4"], None)
    assert grading.final_boxes("\\fbox{5}") == (["5"], None)
    assert grading.final_boxes("\\boxed 7 and \\boxed{8} then \\boxedtext") == (["8"], None)


def test_missing_or_unbalanced_final_box_is_no_answer():
    assert grading.final_boxes("the answer is 4") == ([], "no_boxed")
    assert grading.final_boxes("\\boxed{3} and finally \\boxed{\\frac{1}{2}") == ([], "unclosed_boxed")
    assert grading.final_boxes("\\boxed{\\}") == ([], "unclosed_boxed")  # an escaped brace does not close the box


def test_final_boxes_of_huge_inputs_are_fast():
    hostile = [
        "word " * 1_000_000 + "\\boxed{42}",
        "{" * 2_000_000 + "\\boxed{42}",
        "\\boxed{" * 300_000,
        "\\boxed{" + "{" * 2_000_000,
    ]
    start = time.perf_counter()
    results = [grading.final_boxes(text) for text in hostile]
    assert time.perf_counter() - start < 1.0
    # the last: its only box opens before the tail that is read
    assert results == [(["42"], None), (["42"], None), ([], "unclosed_boxed"), ([], "no_boxed")]


def test_reading_hostile_text_is_fast():
    texts = [
        "\\boxed{" + "0" * 9_000 + "x}",
        "\\boxed{" + " " * 9_000 + "a}",
        "\\boxed{1}" + ", \\boxed{2}" * 2_000,
        "\\boxed{" + "1 000" * 1_800 + "}",
        "\\boxed{" + "1\\," * 3_000 + "}",
        "\\boxed{" + "12 m " * 1_800 + "}",
        "\\boxed{1,000" + ",000" * 2_000 + " m m m}",
        "\\boxed{" + "\\text{a}" * 1_000 + "}",
        "\\boxed{1}" + " or " * 2_000 + "\\boxed{2}",
        "\\boxed{\\boxed{" * 1_000 + "}" * 2_000,
    ]
    start = time.perf_counter()
    for text in texts:
        for gold, name in (("1$,$2", "olympiadbench"), ("7", "aime24"), ("1000", "minerva"), ("(3, 4)", "math500")):
            grading.prepare(text, gold, name)
    assert time.perf_counter() - start < 1.0


def test_grade_reports_why_there_is_no_answer():
    assert grade("I think it is 7.", "7", "aime24") == Grade(False, None, "no_boxed")
    assert grade("so \\boxed{7", "7", "aime24") == Grade(False, None, "unclosed_boxed")
    assert grade("so \\boxed{ }", "7", "aime24") == Grade(False, "", "empty_boxed")


def test_bad_input_is_rejected_clearly():
    with pytest.raises(TypeError, match="response must be str"):
        grade(None, "7", "aime24")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gold answer is empty"):
        grade("\\boxed{7}", " ", "aime24")
    with pytest.raises(ValueError, match="timeout"):
        grade("\\boxed{7}", "7", "aime24", timeout=0)
    with pytest.raises(TypeError, match=r"items\[1\]"):
        grade_batch([("\\boxed{7}", "7", "aime24"), ("\\boxed{7}", "7")], progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="toy-1: the gold answer must be an integer"):
        grade("\\boxed{7}", "x", "toy-1")
    with pytest.raises(UnknownBenchmark, match=r"^items\[1\]: unknown benchmark 'gsm8k'; registered: aime24, .*deepmath"):
        grade_batch([("\\boxed{7}", "7", "aime24"), ("\\boxed{7}", "7", "gsm8k")], progress=False)


# --------------------------------------------------------------------------- the real golds


def test_every_gold_boxed_is_graded_correct(data_dir):
    golds = load_golds(data_dir)
    assert len(golds) == 1547
    items = [("... so the answer is \\boxed{" + gold + "}", gold, name) for name, gold in golds]
    grades = grade_batch(items, timeout=30.0, progress=False)
    failures = [(item[2], item[1], g) for item, g in zip(items, grades) if not g.correct]
    assert failures == []
    assert all(g.error is None for g in grades)
    assert grades.report.timeouts == 0 and grades.report.retried == 0


def wrong_answers(name: str, gold: str) -> list[str]:
    """Responses that must be graded wrong for this gold."""
    value = numeric(gold)
    if value is not None and value.denominator == 1:
        different = str(value + 1)
    elif value is not None:
        different = str(float(value) * 1.5)
    else:
        different = "y^{3} + \\sqrt{7919}"
    return ["so \\boxed{" + different + "}", "the answer is " + gold, "so \\boxed{}"]


def test_obvious_wrong_answers_are_graded_wrong(data_dir):
    golds = load_golds(data_dir)
    sample = []
    for name in BENCHMARKS:
        rows = [pair for pair in golds if pair[0] == name]
        sample += rows[:: len(rows) // 8][:8]
    items = [(response, gold, name) for name, gold in sample for response in wrong_answers(name, gold)]
    grades = grade_batch(items, progress=False)
    assert [g.correct for g in grades] == [False] * len(items)
    assert [g.error for g in grades[1::3]] == ["no_boxed"] * len(sample)
    assert [g.error for g in grades[2::3]] == ["empty_boxed"] * len(sample)


# --------------------------------------------------------------------------- per-benchmark handling


@pytest.mark.parametrize(
    ("response", "gold", "benchmark", "correct"),
    [
        ("\\boxed{25}", "025", "aime24", True),
        ("\\boxed{025}", "25", "aime25", True),
        ("\\boxed{25.0}", "025", "aime24", True),
        ("\\boxed{26}", "025", "aime24", False),
        ("\\boxed{-1}", "-1", "amc23", True),
        ("\\boxed{1}", "-1", "amc23", False),
        ("\\boxed{69, 84}", "69$,$84", "olympiadbench", True),
        ("\\boxed{84, 69}", "69$,$84", "olympiadbench", True),
        ("\\boxed{69}, \\boxed{84}", "69$,$84", "olympiadbench", True),
        ("\\boxed{69} and \\boxed{84}", "69$,$84", "olympiadbench", True),
        ("\\boxed{69}", "69$,$84", "olympiadbench", False),
        ("\\boxed{69, 85}", "69$,$84", "olympiadbench", False),
        ("\\boxed{62.5\\%}", "62.5%", "olympiadbench", True),
        ("\\boxed{(-\\infty, 0) \\cup \\{1\\}}", "(-\\infty, 0) \\cup\\{1\\}$.", "olympiadbench", True),
        ("\\boxed{1.24 \\times 10^{-8}~\\mathrm{m}}", "1.24e-8", "minerva", True),
        ("\\boxed{1.24 \\times 10^{-8}\\,\\text{m}}", "1.24e-8", "minerva", True),
        ("\\boxed{1.3 \\times 10^{-8}\\,\\text{m}}", "1.24e-8", "minerva", False),
        ("\\boxed{6630 \\mathrm{~K}}", "6630", "minerva", True),
        ("\\boxed{6630\\ \\mathrm{K}}", "6630", "minerva", True),
        ("\\boxed{6630 K}", "6630", "minerva", True),
        ("\\boxed{3 \\times 10^{8} \\mathrm{m}/\\mathrm{s}}", "3e8", "minerva", True),
        ("\\boxed{41.8\\%}", "41.8", "minerva", True),
        ("\\boxed{-\\frac{1}{3}}", "-1./3", "minerva", True),
        ("\\boxed{2\\pi}", "2", "minerva", False),
        ("\\boxed{10080}", "10,\\!080", "math500", True),
        ("\\boxed{90}", "90^\\circ", "math500", True),
        ("\\boxed{5.5}", "\\frac{11}{2}", "math500", True),
        ("\\boxed{\\text{Navin}}", "\\text{Evelyn}", "math500", False),
        ("\\boxed{x = 5}", "5", "deepmath", True),  # DeepMath's rules: math-verify on the box as written
        ("...\\boxed{7}", "7", "toy-3", True),
        ("...\\boxed{8}", "7", "toy-3", False),
        ("...\\boxed{\\frac{14}{2}}", "7", "toy-3", False),  # toy tiers take integer literals only
    ],
)
def test_per_benchmark_equivalence(response, gold, benchmark, correct):
    assert grade(response, gold, benchmark).correct is correct


def test_runs_of_boxes_are_joined_for_multi_value_golds_and_refused_for_single_ones():
    assert grade("\\boxed{69}, \\boxed{84}", "69$,$84", "olympiadbench") == Grade(True, "69, 84")
    assert grade("\\boxed{3}, \\boxed{5}", "5", "math500") == Grade(False, "3, 5", "multiple_answers")
    assert grade("\\boxed{3}, \\boxed{5}", "5", "olympiadbench") == Grade(False, "3, 5", "multiple_answers")
    assert grade("\\boxed{\\frac{1}{2}} = \\boxed{0.5}", "1/2", "math500") == Grade(True, "\\frac{1}{2}, 0.5")
    gap = "x" * grading.answers.MAX_GAP_CHARS
    assert grade("\\boxed{69} " + gap + " \\boxed{84}", "69$,$84", "olympiadbench") == Grade(False, "84")
    assert grade("\\boxed{3} " + gap + " \\boxed{5}", "5", "math500") == Grade(True, "5")
    assert grade("\\boxed{3}</think>The answer is \\boxed{5}", "5", "math500") == Grade(True, "5")


def test_final_boxes():
    assert grading.final_boxes("so \\boxed{3}") == (["3"], None)
    assert grading.final_boxes("$x = \\boxed{3}$, $y = \\boxed{4}$") == (["3", "4"], None)
    assert grading.final_boxes("\\boxed{4}\\boxed{4} and \\boxed{} \\boxed{5}") == (["4", "5"], None)
    assert grading.final_boxes("\\boxed{3}. Actually no: \\boxed{4}") == (["4"], None)
    assert grading.final_boxes("\\boxed{\\boxed{3}}") == (["3"], None)
    assert grading.final_boxes("\\boxed{ } \\boxed{}") == ([], "empty_boxed")
    many = grading.final_boxes("".join(f"\\boxed{{{i}}}, " for i in range(40)) + "\\boxed{40}")[0]
    assert many == [str(i) for i in range(41 - grading.answers.MAX_BOXES_JOINED, 41)]


def test_toy_tiers_never_start_math_verify(monkeypatch):
    def no_worker(memory_limit):
        raise AssertionError("a toy answer reached math-verify")

    monkeypatch.setattr(pool, "worker_command", no_worker)
    items = [("Q:3+5?A:3+5=8;\\boxed{8}", "8", "toy-1"), ("\\boxed{9^{9^{9}}}", "8", "toy-6")]
    with grading.GradingPool(1) as fresh:  # no workers yet: starting one would raise
        assert fresh.grade_batch(items, progress=False) == [Grade(True, "8"), Grade(False, "9^{9^{9}}")]


# --------------------------------------------------------------------------- hostile input


WALL_BOUND = pool.WALL_BACKSTOP_FACTOR * LIMIT + pool.WALL_BACKSTOP_SLACK  # CPU limits stretch with load


def test_hostile_answer_times_out_in_main_thread():
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct  # worker started and warm
    start = time.monotonic()
    result = grade(HOSTILE, "1", "math500", **NO_RETRY)
    assert time.monotonic() - start < WALL_BOUND
    assert result == Grade(False, "9^{9^{9^{9}}}", "timeout")
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct  # a replacement worker took over


def test_hostile_answer_times_out_in_a_thread():
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct
    results: list[Grade] = []
    worker = threading.Thread(target=lambda: results.append(grade(HOSTILE, "1", "math500", **NO_RETRY)))
    worker.start()
    worker.join(WALL_BOUND)
    assert results == [Grade(False, "9^{9^{9^{9}}}", "timeout")]


def normal_items(n: int) -> list[tuple[str, str, str]]:
    return [(f"so \\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"{i}/{i + 1}", "math500") for i in range(1, n + 1)]


def test_batch_with_hostile_item_finishes_and_grades_the_rest():
    items = normal_items(30) + [(HOSTILE, "1", "math500")] * 3 + normal_items(60)[30:]
    grades = grade_batch(items, workers=2, progress=False, **NO_RETRY)
    assert grades[30:33] == [Grade(False, "9^{9^{9^{9}}}", "timeout")] * 3
    assert all(g.correct and g.error is None for i, g in enumerate(grades) if not 30 <= i < 33)
    assert grades.report.timeouts == 3  # items, though the answer was verified (and killed) once
    assert grades.report.distinct_verified == 61


MARKER_WORKER = """
import os, sys
from workbench.grading import worker

real = worker.verify_all
memory_limit = int(sys.argv[sys.argv.index("--memory-limit") + 1])

def verify_with_markers(gold, preds):
    if preds == [["\\\\boxed{CRASH}"]]:
        os._exit(3)  # as the kernel's OOM killer would
    if preds == [["\\\\boxed{RAISE}"]]:
        raise RuntimeError("boom")
    if preds == [["\\\\boxed{ALLOC}"]]:
        return bytearray(2 * memory_limit), None
    return real(gold, preds)

worker.verify_all = verify_with_markers
worker.main(sys.argv[1:])
"""


@pytest.fixture
def fresh_pool():
    """The shared pool stopped before and after a test that changes how workers start."""
    grading.shutdown()
    yield
    grading.shutdown()


def test_crashing_items_cost_only_themselves(monkeypatch, tmp_path, fresh_pool):
    script = tmp_path / "marker_worker.py"
    script.write_text(MARKER_WORKER)
    monkeypatch.setattr(pool, "worker_command",
                        lambda memory: [sys.executable, str(script), "--memory-limit", str(memory)])
    monkeypatch.setattr(pool, "WORKER_MEMORY_LIMIT", 2**30)
    markers = [("\\boxed{" + marker + "}", "1", "math500") for marker in ("CRASH", "RAISE", "ALLOC")]
    items = normal_items(20) + markers + normal_items(40)[20:]
    grades = grade_batch(items, workers=1, progress=False)
    by_answer = {g.extracted: g for g in grades[20:23]}
    assert by_answer == {
        "CRASH": Grade(False, "CRASH", "worker_crashed: exit code 3"),
        "RAISE": Grade(False, "RAISE", "error: RuntimeError"),
        "ALLOC": Grade(False, "ALLOC", "error: MemoryError"),
    }
    assert all(g.correct for i, g in enumerate(grades) if not 20 <= i < 23)
    assert grades.report.crashes == 1


def test_workers_that_cannot_start_raise_one_clear_error(monkeypatch, fresh_pool):
    monkeypatch.setattr(pool, "worker_command",
                        lambda memory: [sys.executable, "-c", "raise SystemExit('no grader here')"])
    with pytest.raises(grading.GraderUnavailable, match="(?s)failed to start 3 times.*no grader here"):
        grade("\\boxed{\\frac{1}{2}}", "0.5", "math500")


# --------------------------------------------------------------------------- cache


@pytest.fixture
def isolated_calls(monkeypatch) -> list[int]:
    """Number of answers sent to math-verify workers, per batch."""
    calls: list[int] = []
    run = pool.WorkerPool.run

    def counting(self, tasks, **kwargs):
        calls.append(len(tasks))
        return run(self, tasks, **kwargs)

    monkeypatch.setattr(pool.WorkerPool, "run", counting)
    return calls


def cache_items() -> list[tuple[str, str, str]]:
    distinct = normal_items(12) + [
        ("\\boxed{\\sqrt{2}}", "\\frac{2}{\\sqrt{2}}", "math500"),
        ("\\boxed{25}", "025", "aime24"),
    ]
    return distinct * 3 + [("no box", "1", "math500")]


def test_cache_second_batch_does_no_verification(isolated_calls):
    cache = GradeCache()
    first = grade_batch(cache_items(), cache=cache, progress=False)
    assert isolated_calls == [13]  # 12 fractions + sqrt; the integer and the unboxed need no verify
    assert len(cache) == 13
    assert (first.report.verified_items, first.report.fast, first.report.no_answer) == (39, 3, 1)
    second = grade_batch(cache_items(), cache=cache, progress=False)
    assert isolated_calls == [13]
    assert second == first
    assert second.report.cache_hits == 39
    assert sum(g.correct for g in first) == 3 * 14


def test_spellings_that_normalise_alike_share_a_cache_entry(isolated_calls):
    cache = GradeCache()
    spellings = ("10000", "10\\,000", "10{,}000", "10 000")
    items = [("\\boxed{" + spelling + "}", "10^4", "math500") for spelling in spellings]
    assert all(g.correct for g in grade_batch(items, cache=cache, progress=False))
    assert isolated_calls == [1] and len(cache) == 1


def test_cache_persists_in_sqlite(tmp_path, isolated_calls):
    path = tmp_path / "verdicts.sqlite"
    first = grade_batch(cache_items(), cache=GradeCache(path), progress=False)
    reopened = GradeCache(path)
    assert len(reopened) == 13
    assert grade_batch(cache_items(), cache=reopened, progress=False) == first
    assert isolated_calls == [13]


def test_timeouts_are_not_cached(isolated_calls):
    cache = GradeCache()
    grade_batch([(HOSTILE, "1", "math500")], cache=cache, progress=False, **NO_RETRY)
    assert len(cache) == 0


def test_a_benchmarks_rules_version_invalidates_only_its_own_cached_verdicts(tmp_path, monkeypatch, isolated_calls):
    from dataclasses import replace

    from workbench import data
    from workbench.grading.cache import grader_version

    assert grader_version("math500").startswith("rules 2; math-verify ")  # the keys rows were written under
    path = tmp_path / "verdicts.sqlite"
    items = [("\\boxed{0.5}", "\\frac{1}{2}", "math500"), ("\\boxed{0.5}", "\\frac{1}{2}", "minerva")]
    first = grade_batch(items, cache=GradeCache(path), progress=False)
    assert len(GradeCache(path)) == 2 and isolated_calls == [2]
    monkeypatch.setitem(data.BENCHMARKS, "minerva", replace(data.BENCHMARKS["minerva"], rules_version="3"))
    reopened = GradeCache(path)
    assert len(reopened) == 1  # math500's verdict still counts, minerva's was written under rules 2
    assert grade_batch(items, cache=reopened, progress=False) == first
    assert isolated_calls == [2, 1]
