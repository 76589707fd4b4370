"""The project's one grader: does a model response's final answer match the gold answer?

``grade(response, answer, benchmark) -> Grade`` for one response, ``grade_batch(items)`` for many
(in parallel, deduplicated, optionally cached); both work from a plain script without an
``if __name__ == "__main__":`` guard, a notebook, a thread or a worker process. Every reported
number goes through here.

Which answer a response gives (:mod:`workbench.grading.answers`)
------------------------------------------------------------------
Only the last ``MAX_TAIL_CHARS`` characters are read. The answer is the **final run of boxes**:
the last ``\\boxed{}``/``\\fbox{}`` together with the boxes just before it that are linked by short
text (at most ``MAX_GAP_CHARS`` = 300 characters) that is neither a correction ("wait",
"actually", "mistake", "let me recheck", ...), a rejection ("extraneous", "invalid"), the end of
a ``</think>`` section nor a "Final Answer" heading. So ``x = \\boxed{3}, y = \\boxed{4}``,
``\\boxed{3} and \\boxed{4}`` and "for part (a) ... \\boxed{69}, and for part (b) ... \\boxed{84}"
are one run of two boxes, while "\\boxed{3}. Wait, that is wrong ... \\boxed{5}" or two boxes a
page apart are not, and the last box alone counts. Identical consecutive boxes count once; an
unclosed last box (a truncated generation) is no answer.

How a run is graded depends on what the gold asks for:

* **A gold with several values** (a top-level comma, as in ``3, 4`` or OlympiadBench's
  ``69$,$84``, or one bracketed tuple or set such as ``(3, 4)``): the boxes are joined into the
  list, tuple or set the gold is, in the order written (``(3, 4)`` inside the gold's brackets,
  ``3, 4`` otherwise; a label such as ``x =`` inside a box is dropped when the gold has no
  equations). math-verify then compares sets as sets and tuples in order, so a missing value, a
  wrong value or an extra candidate makes the answer wrong.
* **A gold with one value**: boxes are never joined. A run of several *different* boxes (a
  hedge such as ``\\boxed{3} or \\boxed{5}``) is correct only if every one of them equals the
  gold, i.e. only if they are the same answer written differently; otherwise it is wrong with
  error ``multiple_answers``, even when one of them is right.

Per-benchmark rules (:class:`workbench.data.AnswerRules`, one set per registered benchmark)
-----------------------------------------------------------------------------------------
Each benchmark's entry in :mod:`workbench.data` names the rewritings its answers get, applied to
the gold and to every boxed answer before math-verify compares them; an unregistered benchmark
name is an error. The six evaluation benchmarks take all of the following except scientific
notation, which only Minerva takes; the training set (DeepMath) takes none; the toy tiers take
``integers_only``.

* ``integers_only`` (``toy-N``): the gold is a small integer; every box of the run must be an
  integer literal equal to it.
* Whatever the rules, integer answers compare as numbers without sympy (``025`` = ``25`` = ``25.0``).
* ``copied_text``: artefacts of golds copied from running text go: OlympiadBench's ``$,$``
  separators, stray ``$``, trailing periods, ``x_{\\text{red}}`` subscripts.
* ``digit_groups``: thousands grouping by a space, a thin or no-break space (U+2009, U+202F, U+00A0),
  ``\\,``, ``\\;``, ``\\:``, ``\\ ``, ``~``, ``{,}`` or ``,\\!`` is removed when the first group has
  one to three digits and every later group exactly three, with one separator throughout
  (``1 000``, ``10\\,000``, ``1{,}000{,}000``); ``2 \\, 3`` or ``12\\,34`` are left alone. A plain
  comma groups only when the whole answer is that number (``58,500``, ``1,000.99 m^2``), since
  elsewhere it separates values (``(2,251,252)``).
* ``currency_percent``: currency symbols (``\\$``, ``€``, ``£``, ``¥``, ``\\euro``, ...) and percent
  signs (``\\%``, ``\\text{percent}``) are dropped on both sides, as the Qwen2.5-Math and MATH
  harnesses do (``62.5\\%`` = ``62.5``). ``units``: so are trailing units in
  ``\\text{}``/``\\mathrm{}``, and, when the gold is a plain number, bare unit words after a number
  (``6630 K``, ``1,000.99 m^2``; single letters that are usually mathematics, like ``x`` or ``i``,
  and function names are kept). ``choice_labels``: an answer-choice label before a value
  (``\\textbf{(C)}\\ 33``) is dropped.
* ``scientific_notation`` (Minerva): ``4.5e33`` and ``-1./3`` are rewritten as LaTeX on both sides.

Numerical tolerance is math-verify's default (6 significant decimals after rounding).

Time limits, load and failures (:mod:`workbench.grading.pool`)
---------------------------------------------------------------
math-verify runs in separate worker interpreters, each request under a **CPU-time** limit
(``timeout``, default 5 s) that the caller's process enforces by killing the worker, so hostile
answers (``9^{9^{9^{9}}}``) cannot hang or crash the caller, and a verdict does not depend on how
busy the machine is. A request that overruns is retried once, in a fresh worker, under
``retry_timeout`` (default ``2 * timeout``); only then is it wrong with error ``timeout``. Every
timeout is counted in the batch's :class:`BatchReport` and logged as a warning; timeouts and
crashes are never cached. A worker that dies costs only its current item (``worker_crashed``).

The workers are interpreters started on :mod:`workbench.grading.worker`, never ``multiprocessing``
children, so nothing re-imports the caller's ``__main__``. They are shared by the whole process
and kept between calls (calls from several threads take turns); :func:`start_workers` starts them
ahead of time, :func:`shutdown` stops them, and they exit by themselves when the caller does.
Cheap decisions never reach a worker: missing answers, integer comparisons and cached verdicts.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from workbench.data import UnknownBenchmark, get_spec
from workbench.grading.answers import (
    MAX_TAIL_CHARS,
    MULTIPLE_ANSWERS,
    Prepared,
    final_boxes,
    prepare,
    prepare_gold,
)
from workbench.grading.cache import CacheKey, GradeCache, Verdict
from workbench.grading.pool import GraderUnavailable, Outcome, PoolStats, Task, shared_pool, shutdown

__all__ = [
    "MAX_TAIL_CHARS",
    "MULTIPLE_ANSWERS",
    "BatchReport",
    "Grade",
    "GradeCache",
    "GradeList",
    "GraderUnavailable",
    "final_boxes",
    "grade",
    "grade_batch",
    "prepare",
    "prepare_gold",
    "shutdown",
    "start_workers",
]

logger = logging.getLogger(__name__)

RETRY_FACTOR = 2.0
"""Default ``retry_timeout`` as a multiple of ``timeout``."""


@dataclass(frozen=True)
class Grade:
    """One verdict.

    ``extracted`` is the final run of boxes joined with ``", "`` (usually one box's content), None
    when there is none. ``error`` is None for an ordinary right or wrong answer, otherwise why:
    ``no_boxed``, ``unclosed_boxed``, ``empty_boxed``, ``multiple_answers`` (different boxed
    answers to a single-value gold), ``timeout`` (over the CPU limit twice), ``too_complex: ...``
    (longer or more deeply nested than math-verify reads faithfully, never sent to it),
    ``invalid_text`` (a lone surrogate in the response), ``parse_error:
    answer``, ``parse_error: gold``, ``worker_crashed: ...`` or ``error: <ExceptionType>``.
    """

    correct: bool
    extracted: str | None
    error: str | None = None


@dataclass
class BatchReport:
    """What a :func:`grade_batch` call did and where its time went.

    ``timeouts`` counts items graded wrong with error ``timeout``; ``retried`` the distinct
    answers that overran their first limit and ``recovered`` those that then finished. Seconds:
    ``prepare`` is extraction, normalisation, the integer fast path and cache look-ups in this
    process; ``verify`` is time inside math-verify summed over workers (``verify_cpu`` its CPU
    time); ``startup`` is worker start-ups during this call; ``pool`` is the wall time of the
    math-verify phase, so ``pool * workers - verify - startup`` is IPC, scheduling and idle time.
    """

    items: int = 0
    no_answer: int = 0
    fast: int = 0
    cache_hits: int = 0
    verified_items: int = 0
    distinct_verified: int = 0
    retried: int = 0
    recovered: int = 0
    timeouts: int = 0
    crashes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    workers: int = 0
    started_workers: int = 0
    seconds: float = 0.0
    prepare_seconds: float = 0.0
    pool_seconds: float = 0.0
    verify_seconds: float = 0.0
    verify_cpu_seconds: float = 0.0
    startup_seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"graded {self.items} items in {self.seconds:.1f}s: {self.no_answer} without an answer, "
            f"{self.fast} decided directly, {self.cache_hits} from cache, {self.verified_items} by math-verify "
            f"({self.distinct_verified} distinct, {self.workers} workers); {self.timeouts} timed out, "
            f"{self.retried} retried ({self.recovered} recovered), {self.crashes} crashed; errors {self.errors}"
        )


class GradeList(list):
    """The grades of a batch, in input order, with the batch's :class:`BatchReport` as ``.report``."""

    report: BatchReport


def _check_item(response: object, answer: object, benchmark: object, where: str = "") -> None:
    for name, value in (("response", response), ("answer", answer), ("benchmark", benchmark)):
        if not isinstance(value, str):
            raise TypeError(f"{where}{name} must be str, not {type(value).__name__}")
    if not answer.strip():
        raise ValueError(f"{where}gold answer is empty")
    try:
        get_spec(benchmark)
    except UnknownBenchmark as exc:
        raise UnknownBenchmark(f"{where}{exc}") from None


def _check_seconds(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _progress_bar(total: int, show: bool):
    """tqdm's bar, imported only when shown (``tqdm.auto`` warns in notebooks without ipywidgets)."""
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="item")


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(usable or 1, 8))


def start_workers(workers: int | None = None) -> None:
    """Start the worker interpreters now (e.g. while a model loads) and wait until they are ready,
    so the first batch does not wait for them; ``workers`` defaults as in :func:`grade_batch`."""
    shared_pool().start(_check_workers(default_workers() if workers is None else workers))


def _check_workers(workers: object) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


def grade(response: str, answer: str, benchmark: str, timeout: float = 5.0,
          retry_timeout: float | None = None) -> Grade:
    """Grade one response against its gold answer (see the module docstring for the rules).

    ``timeout`` is CPU seconds of math-verify; an overrun is retried once under ``retry_timeout``
    (default ``2 * timeout``; a value not above ``timeout`` disables the retry). Safe from any
    thread or process; concurrent calls take turns on the shared workers.
    """
    return grade_batch([(response, answer, benchmark)], workers=1, timeout=timeout,
                       retry_timeout=retry_timeout, progress=False)[0]


def grade_batch(
    items: Sequence[tuple[str, str, str]],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    retry_timeout: float | None = None,
    cache: GradeCache | None = None,
    progress: bool = True,
) -> GradeList:
    """Grade many (response, answer, benchmark) items; grades in input order, with ``.report``.

    Each distinct comparison is verified once, on at most ``workers`` worker interpreters
    (default: usable CPUs, at most 8), each under ``timeout`` CPU seconds and, after an overrun,
    once more under ``retry_timeout`` (default ``2 * timeout``; not above ``timeout`` disables the
    retry). A timed-out or crashed item counts as wrong with its error, is counted in the report
    and never stops the batch.
    """
    started = time.monotonic()
    _check_seconds("timeout", timeout)
    if retry_timeout is None:
        retry_timeout = RETRY_FACTOR * timeout
    _check_seconds("retry_timeout", retry_timeout)
    workers = _check_workers(default_workers() if workers is None else workers)
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"items[{index}] must be a (response, answer, benchmark) tuple")
        _check_item(*item, where=f"items[{index}]: ")

    report = BatchReport(items=len(items))
    grades: list[Grade | None] = [None] * len(items)
    extracted: dict[int, str | None] = {}  # items sharing a comparison may spell it differently
    pending: dict[CacheKey, list[int]] = {}
    prepared: dict[CacheKey, Prepared] = {}
    for index, (response, answer, benchmark) in enumerate(items):
        item = prepare(response, answer, benchmark)
        if item.verdict is not None:
            grades[index] = Grade(item.verdict, item.extracted, item.error)
            report.no_answer += item.extracted is None or item.error == "empty_boxed"
            continue
        key = (benchmark, item.gold, item.key)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            grades[index] = Grade(cached[0], item.extracted, cached[1] or item.failed(cached[0]))
            report.cache_hits += 1
            continue
        pending.setdefault(key, []).append(index)
        prepared.setdefault(key, item)
        extracted[index] = item.extracted
    report.fast = len(items) - report.no_answer - report.cache_hits - sum(map(len, pending.values()))
    report.prepare_seconds = time.monotonic() - started

    keys = sorted(pending, key=lambda k: (k[1], k[2]))  # neighbours share a gold, parsed once per worker
    report.verified_items, report.distinct_verified = sum(map(len, pending.values())), len(keys)
    fresh: dict[CacheKey, Verdict] = {}
    bar = _progress_bar(len(items), progress)
    bar.update(len(items) - report.verified_items)

    def record(uid: int, outcome: Outcome) -> None:
        key = keys[uid]
        fresh[key] = (outcome.ok, outcome.error)
        report.verify_seconds += outcome.seconds
        report.verify_cpu_seconds += outcome.cpu
        report.recovered += outcome.retried and outcome.error != "timeout"
        error = outcome.error or prepared[key].failed(outcome.ok)
        for index in pending[key]:
            grades[index] = Grade(outcome.ok, extracted[index], error)
        bar.update(len(pending[key]))

    pool_started = time.monotonic()
    try:
        if keys:
            stats = PoolStats()
            tasks = [Task(uid, prepared[key].gold, prepared[key].preds, timeout, retry_timeout)
                     for uid, key in enumerate(keys)]
            report.workers = min(workers, len(keys))
            shared_pool().run(tasks, workers=report.workers, on_outcome=record, stats=stats)
            report.retried, report.started_workers = stats.retried, stats.started_workers
            report.startup_seconds = stats.startup_seconds
    finally:
        bar.close()
    report.pool_seconds = time.monotonic() - pool_started
    if cache is not None:
        cache.put_many(fresh)

    errors = Counter(g.error.split(":")[0] for g in grades if g is not None and g.error)
    report.errors = dict(errors)
    report.timeouts = errors.get("timeout", 0)
    report.crashes = errors.get("worker_crashed", 0)
    report.seconds = time.monotonic() - started
    # a routine batch is counted in its stage's progress bar; a log line per batch would break the bar up
    level = logging.WARNING if report.timeouts or report.crashes else logging.DEBUG
    logger.log(level, "%s", report.summary())
    result = GradeList(grades)
    result.report = report
    return result
