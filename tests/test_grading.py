"""The grader: extraction, per-benchmark equivalence on the real golds, hard time limits, crashes, cache.

Child processes are real here (no mocking of the isolation): hostile answers must time out in a
killed child, and a child that dies must cost only its own item.
"""

from __future__ import annotations

import json
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from workbench import grading
from workbench.grading import Grade, GradeCache, extract_boxed, grade, grade_batch

BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
HOSTILE = "Collecting powers, the value is \\boxed{9^{9^{9^{9}}}}"  # math-verify runs for minutes on it
LIMIT = 2.0


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


def test_extract_boxed_nested_braces():
    assert extract_boxed("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"


def test_extract_boxed_last_box_wins_and_variants():
    assert extract_boxed("\\boxed{3} no wait \\boxed {4}.") == "4"
    assert extract_boxed("\\boxed{3} then \\fbox{5}") == "5"
    assert extract_boxed("\\boxed 7 and \\boxed{8} then \\boxedtext") == "8"


def test_extract_boxed_missing_or_unbalanced_is_none():
    assert extract_boxed("the answer is 4") is None
    assert extract_boxed("\\boxed{3} and finally \\boxed{\\frac{1}{2}") is None
    assert extract_boxed("\\boxed{\\}") is None  # an escaped brace does not close the box


def test_extract_boxed_huge_inputs_are_fast():
    hostile = [
        "word " * 1_000_000 + "\\boxed{42}",
        "{" * 2_000_000 + "\\boxed{42}",
        "\\boxed{" * 300_000,
        "\\boxed{" + "{" * 2_000_000,
    ]
    start = time.perf_counter()
    results = [extract_boxed(text) for text in hostile]
    assert time.perf_counter() - start < 1.0
    assert results == ["42", "42", None, None]


def test_final_answer_of_hostile_text_is_fast():
    texts = ["\\boxed{" + "0" * 9_000 + "x}", "\\boxed{" + " " * 9_000 + "a}", "\\boxed{1}" + ", \\boxed{2}" * 2_000]
    start = time.perf_counter()
    for text in texts:
        grading.final_answer(text, "1$,$2", "olympiadbench")
        grading._fast_verdict(extract_boxed(text), "7", "aime24")
    assert time.perf_counter() - start < 0.5


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
    with pytest.raises(ValueError, match="toy gold answer must be an integer"):
        grade("\\boxed{7}", "x", "toy-1")


# --------------------------------------------------------------------------- the real golds


def test_every_gold_boxed_is_graded_correct(data_dir):
    golds = load_golds(data_dir)
    assert len(golds) == 1547
    items = [("... so the answer is \\boxed{" + gold + "}", gold, name) for name, gold in golds]
    grades = grade_batch(items, timeout=30.0, progress=False)
    failures = [(item[2], item[1], g) for item, g in zip(items, grades) if not g.correct]
    assert failures == []
    assert all(g.error is None for g in grades)


def wrong_answers(name: str, gold: str) -> list[str]:
    """Responses that must be graded wrong for this gold."""
    value = numeric(gold)
    if value is not None and value.denominator == 1:
        different = str(value + 1)
    elif value is not None:
        different = str(float(value) * 1.5)
    else:
        different = "x^{7919} + \\sqrt{7919}"
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
        ("\\boxed{x = 5}", "5", "some-other-benchmark", True),
        ("...\\boxed{7}", "7", "toy-3", True),
        ("...\\boxed{8}", "7", "toy-3", False),
        ("...\\boxed{\\frac{14}{2}}", "7", "toy-3", False),  # toy tiers take integer literals only
    ],
)
def test_per_benchmark_equivalence(response, gold, benchmark, correct):
    assert grade(response, gold, benchmark).correct is correct


def test_adjacent_boxes_join_only_for_multi_answer_golds():
    assert grade("\\boxed{3}, \\boxed{5}", "5", "math500") == Grade(True, "5")
    assert grade("\\boxed{69}, \\boxed{84}", "69$,$84", "olympiadbench").extracted == "69, 84"
    far_apart = "\\boxed{69}. Then a long discussion of something else entirely. \\boxed{84}"
    assert grade(far_apart, "69$,$84", "olympiadbench").extracted == "84"


def test_toy_tiers_never_start_math_verify(monkeypatch):
    monkeypatch.setattr(grading, "_run_isolated", None)  # any use would raise
    items = [("Q:3+5?A:3+5=8;\\boxed{8}", "8", "toy-1"), ("\\boxed{9^{9^{9}}}", "8", "toy-6")]
    assert grade_batch(items, progress=False) == [Grade(True, "8"), Grade(False, "9^{9^{9}}")]


# --------------------------------------------------------------------------- hostile input


def test_hostile_answer_times_out_in_main_thread():
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct  # child started and warm
    start = time.monotonic()
    result = grade(HOSTILE, "1", "math500", timeout=LIMIT)
    assert time.monotonic() - start < LIMIT + 2.0
    assert result == Grade(False, "9^{9^{9^{9}}}", "timeout")
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct  # a replacement child took over


def test_hostile_answer_times_out_in_a_thread():
    assert grade("\\boxed{\\frac{1}{2}}", "0.5", "math500").correct
    results: list[Grade] = []
    worker = threading.Thread(target=lambda: results.append(grade(HOSTILE, "1", "math500", timeout=LIMIT)))
    start = time.monotonic()
    worker.start()
    worker.join(LIMIT + 10.0)
    assert time.monotonic() - start < LIMIT + 2.0
    assert results == [Grade(False, "9^{9^{9^{9}}}", "timeout")]


def normal_items(n: int) -> list[tuple[str, str, str]]:
    return [(f"so \\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"{i}/{i + 1}", "math500") for i in range(1, n + 1)]


def test_batch_with_hostile_item_finishes_and_grades_the_rest():
    items = normal_items(30) + [(HOSTILE, "1", "math500")] + normal_items(60)[30:]
    start = time.monotonic()
    grades = grade_batch(items, workers=2, timeout=LIMIT, progress=False)
    assert time.monotonic() - start < LIMIT + 20.0
    assert grades[30] == Grade(False, "9^{9^{9^{9}}}", "timeout")
    assert all(g.correct and g.error is None for i, g in enumerate(grades) if i != 30)


def _worker_with_markers(conn, memory_limit: int) -> None:
    """The real worker loop, except for three marker answers: CRASH kills the process outright
    (as the kernel's OOM killer would), RAISE raises, ALLOC asks for twice the memory cap.
    Runs in the child, so the patch lives only there."""
    real = grading._verify_unit

    def verify_with_markers(extracted: str, answer: str, benchmark: str):
        if extracted == "CRASH":
            os._exit(3)
        if extracted == "RAISE":
            raise RuntimeError("boom")
        if extracted == "ALLOC":
            return bytearray(2 * memory_limit), None
        return real(extracted, answer, benchmark)

    grading._verify_unit = verify_with_markers
    grading._worker_main(conn, memory_limit)


def test_crashing_items_cost_only_themselves(monkeypatch):
    monkeypatch.setattr(grading, "_worker_main", _worker_with_markers)
    monkeypatch.setattr(grading, "WORKER_MEMORY_LIMIT", 2**30)
    markers = [("\\boxed{" + marker + "}", "1", "math500") for marker in ("CRASH", "RAISE", "ALLOC")]
    items = normal_items(20) + markers + normal_items(40)[20:]
    grades = grade_batch(items, workers=1, progress=False)
    assert grades[20:23] == [
        Grade(False, "CRASH", "worker_crashed: exit code 3"),
        Grade(False, "RAISE", "error: RuntimeError"),
        Grade(False, "ALLOC", "error: MemoryError"),
    ]
    assert all(g.correct for i, g in enumerate(grades) if not 20 <= i < 23)


# --------------------------------------------------------------------------- cache


@pytest.fixture
def isolated_calls(monkeypatch) -> list[int]:
    """Number of answers sent to math-verify children, per batch."""
    calls: list[int] = []
    real = grading._run_isolated

    def counting(units, **kwargs):
        calls.append(len(units))
        return real(units, **kwargs)

    monkeypatch.setattr(grading, "_run_isolated", counting)
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
    second = grade_batch(cache_items(), cache=cache, progress=False)
    assert isolated_calls == [13]
    assert second == first
    assert sum(g.correct for g in first) == 3 * 14


def test_cache_persists_in_sqlite(tmp_path, isolated_calls):
    path = tmp_path / "verdicts.sqlite"
    first = grade_batch(cache_items(), cache=GradeCache(path), progress=False)
    reopened = GradeCache(path)
    assert len(reopened) == 13
    assert grade_batch(cache_items(), cache=reopened, progress=False) == first
    assert isolated_calls == [13]


def test_timeouts_are_not_cached(isolated_calls):
    cache = GradeCache()
    grade_batch([(HOSTILE, "1", "math500")], timeout=LIMIT, cache=cache, progress=False)
    assert len(cache) == 0
