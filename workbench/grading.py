"""The project's one grader: does a model response's final answer match the gold answer?

Model output is untrusted text. math-verify (sympy underneath) decides equivalence, but a hostile
answer such as ``9^{9^{9^{9}}}`` makes it run for as long as one lets it, and its own time limit
is a SIGALRM that only exists in the main thread of the main interpreter: off that thread, with a
limit set, ``parse``/``verify`` raise ``ValueError``; with the limit disabled they run unbounded.
A signal also cannot interrupt a long computation inside C code. So every math-verify call runs
in a child process and the parent enforces a hard wall-clock limit per item: a hung child is
killed and replaced, its item counts as wrong with error ``"timeout"``, and a child that dies
counts its item as wrong with error ``"worker_crashed: ..."``. Nothing a response contains can
hang or crash the caller.

Cheap decisions never reach a child: finding the boxed answer (a linear scan over the tail of the
response), comparing integer literals (AIME/AMC and the toy tiers) and cached verdicts.

Per-benchmark handling (keyed by the benchmark name; unknown names get plain math-verify):

* ``toy-N``: the gold is a small integer; the answer must be an integer literal equal to it.
* ``aime24``/``aime25``/``amc23``: integer literals compare as numbers (``025`` = ``25`` =
  ``25.0``, negatives allowed); anything else goes to math-verify.
* ``olympiadbench``: the source's ``$,$`` separators and stray ``$``/trailing periods are removed
  from the gold, so ``69$,$84`` is the set {69, 84}; the response may box it as ``\\boxed{69, 84}``
  (any order) or as adjacent boxes ``\\boxed{69}, \\boxed{84}`` (see :func:`final_answer`).
* ``minerva``: scientific notation (``4.5e33``, ``-1./3``) is rewritten as LaTeX on both sides,
  units written after the number (``\\,\\mathrm{m/s}``, ``\\text{ K}``, or bare ``eV`` when the
  gold is a plain number) are dropped.
* every named benchmark: percent signs are dropped on both sides (``62.5\\%`` = ``62.5``), as the
  Qwen2.5-Math and MATH harnesses do; degrees, ``\\!``-thousands separators, ``\\$`` and
  ``\\mbox{ units}`` are left to math-verify, which already handles them.

Numerical tolerance is math-verify's default (6 significant decimals after rounding).
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

logger = logging.getLogger(__name__)

MAX_TAIL_CHARS = 10_000
"""Only the last this-many characters of a response are searched for the final answer: final
answers sit at the end, and the cap keeps extraction cheap on runaway generations."""

TOY_BENCHMARK = re.compile(r"toy-\d+")
INTEGER_BENCHMARKS = frozenset({"aime24", "aime25", "amc23"})
NAMED_BENCHMARKS = INTEGER_BENCHMARKS | {"math500", "minerva", "olympiadbench"}

_RULES_VERSION = "1"
"""Bump when the handling below changes, so persisted cache verdicts from older rules are ignored."""


@dataclass(frozen=True)
class Grade:
    """One verdict.

    ``extracted`` is the content of the response's last ``\\boxed{}`` (or of a final run of
    adjacent boxes joined with ``", "`` when the gold lists several answers), None when there is
    none. ``error`` is None for an ordinary right or wrong answer, otherwise a short reason:
    ``no_boxed``, ``unclosed_boxed``, ``empty_boxed``, ``timeout``, ``parse_error: answer``,
    ``parse_error: gold``, ``worker_crashed: ...`` or ``error: <ExceptionType>``.
    """

    correct: bool
    extracted: str | None
    error: str | None = None


# --------------------------------------------------------------------------- extraction

_BOX_OPENER = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_UNCLOSED = -1


def _box_span(text: str, opener: re.Match[str]) -> tuple[int, int, int]:
    """(command start, content start, content end) of a box; content end is ``_UNCLOSED`` when
    its braces never balance. Backslash-escaped braces (``\\{``) do not count as grouping."""
    depth = 1
    for token in _BRACE_TOKEN.finditer(text, opener.end()):
        brace = token.group()
        if brace == "{":
            depth += 1
        elif brace == "}":
            depth -= 1
            if depth == 0:
                return opener.start(), opener.end(), token.start()
    return opener.start(), opener.end(), _UNCLOSED


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` with nested braces, else None.

    An unclosed last box (a truncated generation) yields None rather than an earlier box: the
    response did not finish its final answer. Only the last ``MAX_TAIL_CHARS`` characters count.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    tail = text[-MAX_TAIL_CHARS:]
    openers = list(_BOX_OPENER.finditer(tail))
    if not openers:
        return None
    _, content_start, content_end = _box_span(tail, openers[-1])
    return None if content_end == _UNCLOSED else tail[content_start:content_end].strip()


_BOX_GAP = re.compile(r"(?:\s|\$|,|;|\.|\\[,;: ]|\\q?quad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b)*")
_MAX_BOXES_JOINED = 16


def _adjacent_boxes(tail: str, openers: list[re.Match[str]]) -> list[str]:
    """Contents of the final run of boxes separated only by punctuation, "and" or "or".

    The last box is known to be closed; earlier ones are scanned only up to the run's start,
    so the work stays linear in the tail length.
    """
    start, content_start, content_end = _box_span(tail, openers[-1])
    contents = [tail[content_start:content_end].strip()]
    for opener in reversed(openers[-_MAX_BOXES_JOINED:-1]):
        _, content_start, content_end = _box_span(tail[:start], opener)
        if content_end == _UNCLOSED or not _BOX_GAP.fullmatch(tail, content_end + 1, start):
            break
        contents.append(tail[content_start:content_end].strip())
        start = opener.start()
    return contents[::-1]


def final_answer(response: str, answer: str, benchmark: str) -> tuple[str | None, str | None]:
    """The answer a response commits to, and the reason when there is none.

    When the gold lists several answers (a top-level comma, e.g. OlympiadBench ``69$,$84``), a
    final run of adjacent boxes such as ``\\boxed{69}, \\boxed{84}`` counts as one answer
    ``"69, 84"``; for single-answer golds only the last box counts, so hedging with several
    boxes is judged by the last one.
    """
    tail = response[-MAX_TAIL_CHARS:]
    openers = list(_BOX_OPENER.finditer(tail))
    if not openers:
        return None, "no_boxed"
    _, content_start, content_end = _box_span(tail, openers[-1])
    if content_end == _UNCLOSED:
        return None, "unclosed_boxed"
    if not TOY_BENCHMARK.fullmatch(benchmark) and _has_top_level_comma(_clean(answer)):
        extracted = ", ".join(_adjacent_boxes(tail, openers))
    else:
        extracted = tail[content_start:content_end].strip()
    if not extracted:
        return extracted, "empty_boxed"
    return extracted, None


# --------------------------------------------------------------------------- benchmark handling

_INTEGER_LITERAL = re.compile(r"\s*([+-]?)(\d+)(?:\.0*)?\s*")


def _integer_literal(text: str) -> str | None:
    """Canonical form ('-25') of an integer literal such as ' 025', '+25', '25.0'; else None."""
    match = _INTEGER_LITERAL.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.group(1), match.group(2).lstrip("0") or "0"
    return "-" + digits if sign == "-" and digits != "0" else digits


def _fast_verdict(extracted: str, answer: str, benchmark: str) -> bool | None:
    """Verdict without sympy where one is certain: integer literals, and everything on toy tiers.

    Two integer literals are equal exactly when math-verify would say so, so this only saves
    time; toy tiers accept integer literals only.
    """
    gold, pred = _integer_literal(answer), _integer_literal(extracted)
    if TOY_BENCHMARK.fullmatch(benchmark):
        if gold is None:
            raise ValueError(f"toy gold answer must be an integer, got {answer!r}")
        return pred == gold
    if gold is not None and pred is not None:
        return gold == pred
    return None


_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_TEXT_SUBSCRIPT = re.compile(r"_\{\s*\\(?:text|mathrm|rm)\s*\{([^{}]*)\}\s*\}")


def _clean(latex: str) -> str:
    """Drop artefacts of answers copied out of running text (OlympiadBench golds have them):
    ``$,$`` separators, stray ``$`` and a trailing sentence period. Also ``x_{\\text{red}}`` ->
    ``x_{red}``, which math-verify fails to parse."""
    latex = latex.replace("$,$", ",").replace("$, $", ", ")
    latex = _TEXT_SUBSCRIPT.sub(r"_{\1}", _UNESCAPED_DOLLAR.sub(" ", latex)).strip()
    return latex[:-1].rstrip() if latex.endswith(".") and latex[-2:-1] not in "0123456789" else latex


def _has_top_level_comma(latex: str) -> bool:
    """Whether a comma separates answers, i.e. sits outside every bracket pair."""
    depth = 0
    for char in re.sub(r",\\!|\{,\}|\\[{}]", "", latex):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            return True
    return False


_PERCENT = re.compile(r"\\text\{\s*(?:\\?%|percent)\s*\}|\\?%|\bpercent\b")
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
_DIGIT_DOT = re.compile(r"(\d)\.(?!\d)")
_SPACING_TOKENS = ("~", "\\,", "\\;", "\\:", "\\!", "\\quad", "\\qquad", "\\")  # "\ " is "\" once rstripped
_WRAPPED_UNIT = re.compile(
    r"(?:/\s*)?\\(?:text|mathrm|mbox|textrm|rm|operatorname)\s*\{(?:[^{}]|\{[^{}]*\})*\}"
    r"(?:\s*\^\s*(?:\{[^{}]*\}|-?\d))?$"
)
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:\s*(?:\\times|\\cdot)\s*10\s*\^\s*(?:\{\s*[+-]?\d+\s*\}|[+-]?\d))?"
_NUMBER_THEN_BARE_UNIT = re.compile(rf"\s*({_NUMBER})(?:\s|~|\\[,;: ])*([A-Za-z][A-Za-z\s/^{{}}()\-\d.]*)")
_PLAIN_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")
_NOT_UNITS = frozenset({"e", "i", "x", "n", "k"})


def _rstrip_spacing(latex: str) -> str:
    """Drop trailing whitespace and LaTeX spacing commands (a loop: a regex anchored at the end
    would rescan every run of spaces, quadratic on hostile input)."""
    while True:
        stripped = latex.rstrip()
        for token in _SPACING_TOKENS:
            if stripped.endswith(token):
                stripped = stripped[: -len(token)]
        if stripped == latex:
            return latex
        latex = stripped


def _strip_wrapped_units(latex: str) -> str:
    """Drop trailing ``\\text{...}``-style units when a number-like value remains before them."""
    while True:
        latex = _rstrip_spacing(latex)
        match = _WRAPPED_UNIT.search(latex)
        if match is None or not re.search(r"\d", latex[: match.start()]):
            return latex
        latex = latex[: match.start()]


def _strip_bare_unit(latex: str) -> str:
    """``6630 K`` -> ``6630``: used only when the gold is a plain number, so letters after the
    number can only be a unit (single letters that are usually mathematics are kept)."""
    match = _NUMBER_THEN_BARE_UNIT.fullmatch(latex)
    if match is None or match.group(2).strip() in _NOT_UNITS:
        return latex
    return match.group(1)


def _minerva_notation(latex: str) -> str:
    """``4.5e33`` -> ``4.5 \\times 10^{33}`` and ``-1./3`` -> ``-1/3``, as math-verify reads
    ``e`` as Euler's number and ``1.`` oddly."""
    return _DIGIT_DOT.sub(r"\1", _SCIENTIFIC.sub(r"\1 \\times 10^{\2}", latex))


def verify_inputs(extracted: str, answer: str, benchmark: str) -> tuple[str, str]:
    """The (gold, prediction) strings handed to ``math_verify.parse``, with per-benchmark handling.

    Both are wrapped in ``\\boxed{}`` so math-verify reads them as LaTeX and takes them whole.
    """
    gold, pred = answer, extracted
    if benchmark in NAMED_BENCHMARKS:
        gold, pred = _clean(gold), _clean(pred)
        gold, pred = _PERCENT.sub("", gold), _PERCENT.sub("", pred)
        gold, pred = _strip_wrapped_units(gold), _strip_wrapped_units(pred)
    if benchmark == "minerva":
        gold, pred = _minerva_notation(gold), _minerva_notation(pred)
        if _PLAIN_NUMBER.fullmatch(gold):
            pred = _strip_bare_unit(pred)
    return "\\boxed{" + gold + "}", "\\boxed{" + pred + "}"


# --------------------------------------------------------------------------- math-verify (children)


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold_latex: str) -> list:
    """Parsed gold, cached: a batch grades many responses against each gold."""
    from math_verify import parse

    return parse(gold_latex, parsing_timeout=None)


def _verify_unit(extracted: str, answer: str, benchmark: str) -> tuple[bool, str | None]:
    """math-verify's verdict with no time limit of its own; run only where a parent can kill it."""
    from math_verify import parse, verify

    gold_latex, pred_latex = verify_inputs(extracted, answer, benchmark)
    gold = _parse_gold(gold_latex)
    if not gold:
        return False, "parse_error: gold"
    pred = parse(pred_latex, parsing_timeout=None)
    if not pred:
        return False, "parse_error: answer"
    return bool(verify(gold, pred, timeout_seconds=None)), None


_READY = "ready"


def _worker_main(conn: Connection, memory_limit: int) -> None:
    """Child loop: grade each unit of each chunk, answering per unit so the parent can time each.

    The address-space cap turns a runaway allocation into a MemoryError (the unit's verdict)
    instead of the kernel's OOM killer picking some process on the host.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notices
    _verify_unit("1/2", "\\frac{1}{2}", "math500")  # warm up parsers before taking timed work
    conn.send(_READY)
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for uid, extracted, answer, benchmark in chunk:
            try:
                verdict = _verify_unit(extracted, answer, benchmark)
            except Exception as exc:  # any failure of one item is that item's verdict
                verdict = (False, f"error: {type(exc).__name__}")
            conn.send((uid, verdict))


# --------------------------------------------------------------------------- the process pool

_Unit = tuple[int, str, str, str]  # (uid, extracted, answer, benchmark)
_Verdict = tuple[bool, "str | None"]

WORKER_MEMORY_LIMIT = 4 * 2**30
"""Bytes of address space a grading child may use; far above what grading needs."""

STARTUP_TIMEOUT = 120.0
"""Seconds a fresh child may take to import math-verify and report ready (slow, loaded hosts)."""


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver where available: safe to start from any thread, and cheap per child because the
    server has math-verify imported once."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["math_verify", "workbench.grading"])
        return context
    return multiprocessing.get_context("spawn")


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    chunk: deque[_Unit] = field(default_factory=deque)
    item_started: float = 0.0


class _Pool:
    """Child processes that grade units, each unit under a wall-clock limit the parent enforces.

    concurrent.futures cannot kill one hung worker without breaking the whole pool, hence this.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._context = _mp_context()
        self._workers: list[_Worker] = []

    def _spawn(self) -> None:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child_end, WORKER_MEMORY_LIMIT), name=self.name, daemon=True
        )
        process.start()
        child_end.close()
        self._workers.append(_Worker(process, parent_end, time.monotonic()))

    def _retire(self, worker: _Worker) -> str:
        """Kill a worker, returning how it ended, for error messages."""
        self._workers.remove(worker)
        worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        return f"exit code {worker.process.exitcode}"

    def run(
        self, units: Sequence[_Unit], timeout: float, chunk_size: int, on_verdict: Callable[[int, _Verdict], None]
    ) -> None:
        """Grade all units; call ``on_verdict(uid, (correct, error))`` once per unit."""
        queue = deque(list(units[i : i + chunk_size]) for i in range(0, len(units), chunk_size))
        failed_starts = 0
        while queue or any(w.chunk for w in self._workers):
            self._dispatch(queue)
            deadlines = [self._deadline(w, timeout) for w in self._workers if not w.ready or w.chunk]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for conn in multiprocessing.connection.wait([w.conn for w in self._workers], wait):
                worker = next(w for w in self._workers if w.conn is conn)
                try:
                    while conn.poll():
                        message = conn.recv()
                        if message == _READY:
                            worker.ready, failed_starts = True, 0
                        else:
                            worker.chunk.popleft()
                            worker.item_started = time.monotonic()
                            on_verdict(*message)
                except (EOFError, OSError):
                    failed_starts += self._lose(worker, queue, on_verdict, "worker_crashed")
            now = time.monotonic()
            overdue = [w for w in self._workers if (not w.ready or w.chunk) and now > self._deadline(w, timeout)]
            for worker in overdue:
                failed_starts += self._lose(worker, queue, on_verdict, "timeout")
            if failed_starts >= 3:
                raise RuntimeError(
                    f"grading workers failed to start {failed_starts} times in a row; a script that grades "
                    'must guard its entry point with `if __name__ == "__main__":` (children import it)'
                )

    def _dispatch(self, queue: deque[list[_Unit]]) -> None:
        """Give queued chunks to idle workers and start workers for the chunks left over."""
        for worker in list(self._workers):
            if worker.ready and not worker.chunk and queue:
                chunk = queue.popleft()
                try:
                    worker.conn.send(chunk)
                except OSError:  # died while idle: the chunk never started
                    queue.appendleft(chunk)
                    self._retire(worker)
                    continue
                worker.chunk = deque(chunk)
                worker.item_started = time.monotonic()
        starting = sum(not w.ready for w in self._workers)
        for _ in range(min(self.size - len(self._workers), len(queue) - starting)):
            self._spawn()

    @staticmethod
    def _deadline(worker: _Worker, timeout: float) -> float:
        return worker.started + STARTUP_TIMEOUT if not worker.ready else worker.item_started + timeout

    def _lose(
        self, worker: _Worker, queue: deque[list[_Unit]], on_verdict: Callable[[int, _Verdict], None], reason: str
    ) -> int:
        """Replace a dead or overdue worker: its current unit fails with ``reason``, the rest of its
        chunk is requeued. Returns 1 when it died before becoming ready (a start failure), else 0."""
        how = self._retire(worker)
        if not worker.ready:
            logger.warning("grading worker failed to start (%s)", how)
            return 1
        if worker.chunk:
            uid, extracted = worker.chunk.popleft()[:2]
            error = reason if reason == "timeout" else f"{reason}: {how}"
            logger.warning("grading unit %d: %s (answer %.80r)", uid, error, extracted)
            on_verdict(uid, (False, error))
            if worker.chunk:
                queue.appendleft(list(worker.chunk))
        return 0

    def close(self) -> None:
        """Stop all workers (politely, then by force)."""
        for worker in list(self._workers):
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in list(self._workers):
            worker.process.join(1)
            self._retire(worker)


_solo_pool: _Pool | None = None
_solo_lock = threading.Lock()


def _close_solo_pool() -> None:
    global _solo_pool
    with _solo_lock:
        if _solo_pool is not None:
            _solo_pool.close()
            _solo_pool = None


atexit.register(_close_solo_pool)


def _run_isolated(
    units: Sequence[_Unit], *, workers: int, timeout: float, on_verdict: Callable[[int, _Verdict], None]
) -> None:
    """Grade units in a fresh pool of child processes that is torn down afterwards."""
    chunk_size = max(1, min(64, math.ceil(len(units) / (4 * workers))))
    pool = _Pool(min(workers, math.ceil(len(units) / chunk_size)), "grading-worker")
    try:
        pool.run(units, timeout, chunk_size, on_verdict)
    finally:
        pool.close()


# --------------------------------------------------------------------------- cache


def _grader_version() -> str:
    versions = (importlib.metadata.version(p) for p in ("math-verify", "latex2sympy2_extended"))
    return f"rules {_RULES_VERSION}; math-verify {'; '.join(versions)}"


_CacheKey = tuple[str, str, str]  # (benchmark, gold answer, extracted answer)


class GradeCache:
    """Verdicts keyed by (benchmark, gold, extracted answer), so a repeated answer is graded once.

    Samples repeat final answers a lot (32 samples of a problem share a handful of answers).
    With ``path``, verdicts persist in a sqlite file across runs; rows written under other
    grading rules or library versions are ignored. Timeouts and crashes are never cached: they
    may depend on machine load.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.version = _grader_version()
        self._verdicts: dict[_CacheKey, _Verdict] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            with sqlite3.connect(self.path) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS verdicts (version TEXT, benchmark TEXT, gold TEXT, "
                    "extracted TEXT, correct INTEGER, error TEXT, "
                    "PRIMARY KEY (version, benchmark, gold, extracted))"
                )
                rows = db.execute(
                    "SELECT benchmark, gold, extracted, correct, error FROM verdicts WHERE version = ?",
                    (self.version,),
                )
                for benchmark, gold, extracted, correct, error in rows:
                    self._verdicts[(benchmark, gold, extracted)] = (bool(correct), error)
            logger.info("grade cache %s: %d verdicts loaded", self.path, len(self._verdicts))

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: _CacheKey) -> _Verdict | None:
        """The cached (correct, error) for a key, or None."""
        with self._lock:
            return self._verdicts.get(key)

    def put_many(self, verdicts: dict[_CacheKey, _Verdict]) -> None:
        """Store verdicts (and write them to the sqlite file, if any) in one transaction."""
        with self._lock:
            self._verdicts.update(verdicts)
            if self.path is not None and verdicts:
                with sqlite3.connect(self.path) as db:
                    db.executemany(
                        "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                        [(self.version, *key, int(c), e) for key, (c, e) in verdicts.items()],
                    )


def _cacheable(verdict: _Verdict) -> bool:
    error = verdict[1]
    return error is None or error.startswith("parse_error")


# --------------------------------------------------------------------------- public entry points


def _check_item(response: object, answer: object, benchmark: object, where: str = "") -> None:
    for name, value in (("response", response), ("answer", answer), ("benchmark", benchmark)):
        if not isinstance(value, str):
            raise TypeError(f"{where}{name} must be str, not {type(value).__name__}")
    if not answer.strip():
        raise ValueError(f"{where}gold answer is empty")


def _check_timeout(timeout: float) -> None:
    if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def grade(response: str, answer: str, benchmark: str, timeout: float = 5.0) -> Grade:
    """Grade one response against its gold answer, within ``timeout`` seconds of math-verify.

    Safe from any thread: math-verify runs in a persistent child process (started on first
    use, replaced if it has to be killed). Concurrent calls take turns; use :func:`grade_batch`
    for many items.
    """
    global _solo_pool
    _check_item(response, answer, benchmark)
    _check_timeout(timeout)
    extracted, error = final_answer(response, answer, benchmark)
    if error is not None:
        return Grade(False, extracted, error)
    fast = _fast_verdict(extracted, answer, benchmark)
    if fast is not None:
        return Grade(fast, extracted)
    verdicts: dict[int, _Verdict] = {}
    with _solo_lock:
        if _solo_pool is None:
            _solo_pool = _Pool(1, "grading-worker-solo")
        try:
            _solo_pool.run([(0, extracted, answer, benchmark)], timeout, 1, verdicts.__setitem__)
        except BaseException:  # e.g. Ctrl-C mid-item: never hand a stale verdict to the next call
            _solo_pool.close()
            _solo_pool = None
            raise
    return Grade(verdicts[0][0], extracted, verdicts[0][1])


def grade_batch(
    items: Sequence[tuple[str, str, str]],
    *,
    workers: int | None = None,
    timeout: float = 5.0,
    cache: GradeCache | None = None,
    progress: bool = True,
) -> list[Grade]:
    """Grade many (response, answer, benchmark) items in parallel; verdicts in input order.

    Each distinct (benchmark, gold, extracted answer) is verified once, in a pool of
    ``workers`` child processes (default ``min(cpu_count, 8)``), each under a hard limit of
    ``timeout`` seconds; a hung or crashed item counts as wrong and never stops the batch.
    """
    _check_timeout(timeout)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    grades: list[Grade | None] = [None] * len(items)
    pending: dict[_CacheKey, list[int]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"items[{index}] must be a (response, answer, benchmark) tuple")
        response, answer, benchmark = item
        _check_item(response, answer, benchmark, where=f"items[{index}]: ")
        extracted, error = final_answer(response, answer, benchmark)
        if error is not None:
            grades[index] = Grade(False, extracted, error)
            continue
        fast = _fast_verdict(extracted, answer, benchmark)
        if fast is not None:
            grades[index] = Grade(fast, extracted)
            continue
        key = (benchmark, answer, extracted)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            grades[index] = Grade(cached[0], extracted, cached[1])
        else:
            pending.setdefault(key, []).append(index)

    started = time.monotonic()
    bar = tqdm(total=len(items), desc="grading", unit="item", disable=not progress)
    bar.update(len(items) - sum(len(indices) for indices in pending.values()))
    keys = sorted(pending)  # neighbours share a gold, which each worker parses once
    fresh: dict[_CacheKey, _Verdict] = {}

    def record(uid: int, verdict: _Verdict) -> None:
        key = keys[uid]
        fresh[key] = verdict
        for index in pending[key]:
            grades[index] = Grade(verdict[0], key[2], verdict[1])
        bar.update(len(pending[key]))

    try:
        if keys:
            units = [(uid, key[2], key[1], key[0]) for uid, key in enumerate(keys)]
            _run_isolated(units, workers=workers, timeout=timeout, on_verdict=record)
    finally:
        bar.close()
    if cache is not None:
        cache.put_many({key: verdict for key, verdict in fresh.items() if _cacheable(verdict)})
    errors = Counter(g.error.split(":")[0] for g in grades if g is not None and g.error)
    logger.info(
        "graded %d items (%d sent to math-verify as %d distinct answers) in %.1fs; errors: %s",
        len(items),
        sum(len(v) for v in pending.values()),
        len(keys),
        time.monotonic() - started,
        dict(errors),
    )
    return grades  # type: ignore[return-value]
