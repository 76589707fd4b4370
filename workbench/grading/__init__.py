"""The project's one grader: does a model response's final answer match the gold answer?

Every reported number goes through here, so evaluation, training rewards and analyses grade alike.
``with GradingPool(workers=4) as pool: pool.grade_batch(items)`` grades many items on worker
interpreters the caller owns; the module's :func:`grade`/:func:`grade_batch` use a default pool, a
convenience for one-off calls. The answer rules and the worker design are in docs/grading.md.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
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
from workbench.grading.pool import GraderUnavailable, Outcome, PoolClosed, PoolStats, Task, WorkerPool

__all__ = [
    "MAX_TAIL_CHARS",
    "MULTIPLE_ANSWERS",
    "BatchReport",
    "Grade",
    "GradeCache",
    "GradeList",
    "GraderUnavailable",
    "GradingPool",
    "PoolClosed",
    "default_pool",
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


def _check_workers(workers: object) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return workers


class GradingPool:
    """Grading worker interpreters owned by the caller: ``with GradingPool(workers=4) as pool: ...``.

    Workers start on first use (or :meth:`start`, e.g. while a model loads) and stay up between calls,
    so a loop that grades every step pays for interpreter start-ups once. Leaving the ``with`` block
    (or :meth:`close`) stops them; a closed pool raises :class:`PoolClosed`. Pools share nothing, and
    a forked child starts workers of its own. Calls from several threads take turns.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = _check_workers(default_workers() if workers is None else workers)
        self._pool = WorkerPool()
        # workers stop when the pool is closed, garbage-collected or the interpreter exits
        self._close = weakref.finalize(self, self._pool.close)

    def __enter__(self) -> GradingPool:
        self._pool._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    def start(self) -> GradingPool:
        """Start all workers now and wait until they are ready, so the first batch does not wait."""
        self._pool.start(self.workers)
        return self

    def close(self) -> None:
        """Stop the workers; later calls raise :class:`PoolClosed`. Closing twice is harmless."""
        self._close()

    def grade(self, response: str, answer: str, benchmark: str, timeout: float = 5.0,
              retry_timeout: float | None = None) -> Grade:
        """Grade one response against its gold answer (rules: docs/grading.md).

        ``timeout`` is CPU seconds of math-verify; an overrun is retried once under ``retry_timeout``
        (default ``2 * timeout``; a value not above ``timeout`` disables the retry).
        """
        return _grade_batch(self._pool, 1, [(response, answer, benchmark)], timeout, retry_timeout, None, False)[0]

    def grade_batch(self, items: Sequence[tuple[str, str, str]], *, timeout: float = 5.0,
                    retry_timeout: float | None = None, cache: GradeCache | None = None,
                    progress: bool = True) -> GradeList:
        """Grade many (response, answer, benchmark) items; grades in input order, with ``.report``.

        Each distinct comparison is verified once, on at most ``workers`` workers, each under
        ``timeout`` CPU seconds and, after an overrun, once more under ``retry_timeout`` (default
        ``2 * timeout``; not above ``timeout`` disables the retry). A timed-out or crashed item counts
        as wrong with its error, is counted in the report and never stops the batch.
        """
        return _grade_batch(self._pool, self.workers, items, timeout, retry_timeout, cache, progress)


_default: GradingPool | None = None
_default_lock = threading.Lock()


def default_pool() -> GradingPool:
    """The module's pool behind :func:`grade`, :func:`grade_batch` and :func:`start_workers`: a
    convenience for one-off calls and notebooks. Code that grades many batches owns a :class:`GradingPool`."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            _default = GradingPool()
        return _default


def _reset_default_lock_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()  # another thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_default_lock_in_child)


def shutdown() -> None:
    """Stop the default pool's workers; the next module-level call starts a new default pool."""
    with _default_lock:
        if _default is not None:
            _default.close()


def start_workers(workers: int | None = None) -> None:
    """Start the default pool's workers now (e.g. while a model loads) and wait until they are ready;
    ``workers`` defaults as in :func:`grade_batch`."""
    default_pool()._pool.start(_check_workers(default_workers() if workers is None else workers))


def grade(response: str, answer: str, benchmark: str, timeout: float = 5.0,
          retry_timeout: float | None = None) -> Grade:
    """:meth:`GradingPool.grade` on the default pool."""
    return default_pool().grade(response, answer, benchmark, timeout, retry_timeout)


def grade_batch(
    items: Sequence[tuple[str, str, str]],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    retry_timeout: float | None = None,
    cache: GradeCache | None = None,
    progress: bool = True,
) -> GradeList:
    """:meth:`GradingPool.grade_batch` on the default pool, with at most ``workers`` of its workers
    (default: usable CPUs, at most 8)."""
    workers = _check_workers(default_workers() if workers is None else workers)
    return _grade_batch(default_pool()._pool, workers, items, timeout, retry_timeout, cache, progress)


def _grade_batch(
    worker_pool: WorkerPool,
    workers: int,
    items: Sequence[tuple[str, str, str]],
    timeout: float,
    retry_timeout: float | None,
    cache: GradeCache | None,
    progress: bool,
) -> GradeList:
    """:meth:`GradingPool.grade_batch` on ``worker_pool``, using at most ``workers`` of its workers."""
    started = time.monotonic()
    worker_pool._check_open()
    _check_seconds("timeout", timeout)
    if retry_timeout is None:
        retry_timeout = RETRY_FACTOR * timeout
    _check_seconds("retry_timeout", retry_timeout)
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
            worker_pool.run(tasks, workers=report.workers, on_outcome=record, stats=stats)
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
