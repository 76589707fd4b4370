"""Worker interpreters that run math-verify, each request under a CPU-time limit the parent enforces.

Separate interpreters because math-verify's own SIGALRM limit works only in the main thread and cannot
interrupt C code; CPU time, not wall time, so a verdict does not depend on machine load. A
:class:`WorkerPool` belongs to one :class:`workbench.grading.GradingPool`; why and how in docs/grading.md.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_MEMORY_LIMIT = 4 * 2**30
"""Bytes of address space a worker may use; far above what grading needs."""

STARTUP_TIMEOUT = 120.0
"""Wall seconds a fresh worker may take to import math-verify and report ready (slow, loaded hosts)."""

WALL_BACKSTOP_FACTOR, WALL_BACKSTOP_SLACK = 3.0, 10.0
"""A request is also killed after ``factor * limit + slack`` wall seconds, whatever its CPU time."""

PIPELINE_BYTES = 32_768
"""A second request is queued behind a busy worker only when it is this small, so writing it can
never block on a full pipe while the first one runs."""

MAX_FAILED_STARTS = 3


class GraderUnavailable(RuntimeError):
    """Grading workers cannot start (the message carries what the last one printed)."""


class PoolClosed(RuntimeError):
    """A grading pool was used after it was closed."""


def worker_command(memory_limit: int) -> list[str]:
    """The command line of one worker interpreter."""
    if not sys.executable:
        raise GraderUnavailable("sys.executable is empty: cannot start grading workers from this interpreter")
    return [sys.executable, "-m", "workbench.grading.worker", "--memory-limit", str(memory_limit)]


def _worker_env() -> dict[str, str]:
    """The caller's environment, with this copy of ``workbench`` first on the path, so a worker
    imports the same code even when the caller found it through ``sys.path`` edits or its cwd."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
HAVE_PROC = Path("/proc/self/stat").exists()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, from ``/proc``; None where that is unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _readable(fds: list[int], timeout: float | None) -> set[int]:
    """The fds with output (or end of output) waiting; poll() where there is one, as select()
    refuses descriptors above 1023, which a long-running training process can reach."""
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLPRI)
        return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}
    return set(select.select(fds, [], [], timeout)[0])


@dataclass
class Task:
    """One request. ``uid`` identifies it to the caller; after an overrun it runs once more under
    ``retry_limit`` CPU seconds (``attempt`` 1), unless that is None or not above ``limit``."""

    uid: int
    gold: str
    preds: tuple[tuple[str, ...], ...]
    limit: float
    retry_limit: float | None
    attempt: int = 0

    @functools.cached_property
    def line(self) -> bytes:
        request = {"id": self.uid, "gold": self.gold, "preds": list(self.preds), "limit": self.limit}
        return (json.dumps(request) + "\n").encode()

    def retry(self) -> Task | None:
        """The second attempt, or None when there is none left."""
        if self.attempt or self.retry_limit is None or self.retry_limit <= self.limit:
            return None
        return Task(self.uid, self.gold, self.preds, self.retry_limit, None, attempt=1)


class TaskQueue:
    """Tasks waiting for a worker, grouped by gold in arrival order, so a worker keeps taking
    requests for the gold it last handled: it parsed that gold already, and math-verify's and
    sympy's caches hold its pieces. Requeued tasks go first."""

    def __init__(self, tasks: Sequence[Task] = ()) -> None:
        self._groups: OrderedDict[str, deque[Task]] = OrderedDict()
        self._size = 0
        for task in tasks:
            self._groups.setdefault(task.gold, deque()).append(task)
            self._size += 1

    def __len__(self) -> int:
        return self._size

    def peek(self, gold: str | None, taken: set[str | None]) -> Task:
        """The task a worker that last handled ``gold`` takes next: one for the same gold, else
        the first for a gold no other worker (``taken``) is on, else the first."""
        group = self._groups.get(gold) if gold is not None else None
        if group:
            return group[0]
        for other, group in self._groups.items():  # stops within len(taken) + 1 groups
            if other not in taken:
                return group[0]
        return next(iter(self._groups.values()))[0]

    def remove(self, task: Task) -> None:
        """Take out a task returned by :meth:`peek`."""
        group = self._groups[task.gold]
        group.popleft()
        if not group:
            del self._groups[task.gold]
        self._size -= 1

    def requeue(self, tasks: Sequence[Task]) -> None:
        """Put tasks back at the front, in order."""
        for task in reversed(tasks):
            group = self._groups.setdefault(task.gold, deque())
            group.appendleft(task)
            self._groups.move_to_end(task.gold, last=False)
            self._size += 1


@dataclass
class Outcome:
    """A request's verdict: ``error`` is None, ``timeout``, ``worker_crashed: ...``, ``parse_error:
    ...`` or ``error: <type>``; ``seconds``/``cpu`` are what the worker measured (0 when it did not
    answer); ``retried`` says the first attempt overran."""

    ok: bool
    error: str | None
    seconds: float = 0.0
    cpu: float = 0.0
    retried: bool = False


@dataclass
class PoolStats:
    """What one :meth:`WorkerPool.run` spent, for the batch report."""

    started_workers: int = 0
    startup_seconds: float = 0.0
    retried: int = 0


class _Worker:
    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
            start_new_session=True,  # the terminal's Ctrl-C goes to the caller, not to workers
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.started = time.monotonic()
        self.ready = False
        self.buffer = b""
        self.inflight: deque[Task] = deque()
        self.head_wall = 0.0  # when the request at the head of inflight started (parent clock)
        self.cpu = 0.0  # the worker's CPU seconds when it last answered
        self.head_cpu = 0.0  # the worker's CPU seconds when the head request started
        self.last_gold: str | None = None

    def send(self, task: Task) -> None:
        if not self.inflight:
            self.head_wall, self.head_cpu = time.monotonic(), self.cpu
        self.proc.stdin.write(task.line)
        self.proc.stdin.flush()
        self.inflight.append(task)
        self.last_gold = task.gold

    def read(self) -> list[dict] | None:
        """Complete messages waiting on the pipe; None once the worker has gone."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                if not chunks:
                    return None
                break
            chunks.append(chunk)
        self.buffer += b"".join(chunks)
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def cpu_used(self) -> float | None:
        """CPU seconds the head request has used so far (None without ``/proc``)."""
        now = process_cpu_seconds(self.proc.pid)
        return None if now is None else max(0.0, now - self.head_cpu)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self.stderr.seek(0, os.SEEK_END)
            size = self.stderr.tell()
            self.stderr.seek(max(0, size - limit))
            return self.stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def close(self, kill: bool) -> str:
        """Stop the worker (closing its input lets an idle one exit by itself); returns how it ended."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.stderr.close()
        return f"exit code {code}"


class WorkerPool:
    """One set of worker interpreters, started on demand and kept between calls; :meth:`run` grades a
    list of tasks (calls from several threads take turns). After :meth:`close` every call raises
    :class:`PoolClosed`. A forked child drops the copy of its parent's workers (see :func:`_after_fork_in_child`)."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._last_stderr = ""
        self.closed = False
        _LIVE_POOLS.add(self)

    def _check_open(self) -> None:
        if self.closed:
            raise PoolClosed("this grading pool is closed: grade inside its `with GradingPool(...)` block, "
                             "or create a new GradingPool")

    def run(
        self,
        tasks: Sequence[Task],
        *,
        workers: int,
        on_outcome: Callable[[int, Outcome], None],
        stats: PoolStats,
    ) -> None:
        """Grade all tasks on at most ``workers`` workers; ``on_outcome(uid, outcome)`` once per task."""
        with self._lock:
            self._check_open()
            try:
                self._run(TaskQueue(tasks), workers, on_outcome, stats, start_all=False)
            except BaseException:  # e.g. Ctrl-C mid-batch: never leave a half-answered worker behind
                self._close_all(kill=True)
                raise

    def start(self, workers: int) -> None:
        """Start ``workers`` workers now and wait until they are ready."""
        with self._lock:
            self._check_open()
            self._run(TaskQueue(), workers, lambda uid, outcome: None, PoolStats(), start_all=True)

    def _run(self, queue: TaskQueue, workers: int, on_outcome: Callable[[int, Outcome], None],
             stats: PoolStats, start_all: bool) -> None:
        failed_starts = 0
        began = time.monotonic()
        while (queue or any(w.inflight for w in self._workers)
               or (start_all and (len(self._workers) < workers or not all(w.ready for w in self._workers[:workers])))):
            self._dispatch(queue, workers, stats, start_all)
            busy = [w for w in self._workers[:workers] if w.inflight or not w.ready]
            if not busy:
                continue
            readable = _readable([w.fd for w in busy], self._wait(busy))
            for worker in [w for w in busy if w.fd in readable]:
                messages = worker.read()
                if messages is None:
                    failed_starts += self._lose(worker, queue, on_outcome, "worker_crashed")
                    continue
                for message in messages:
                    if message.get("ready"):
                        worker.ready, worker.cpu, failed_starts = True, message["cpu"], 0
                        stats.startup_seconds += time.monotonic() - max(worker.started, began)
                        continue
                    task = worker.inflight.popleft()
                    worker.cpu = worker.head_cpu = message["cpu"]
                    worker.head_wall = time.monotonic()
                    on_outcome(task.uid, Outcome(message["ok"], message["error"], message["seconds"],
                                                 message["item_cpu"], task.attempt > 0))
            for worker in [w for w in busy if w in self._workers and self._overdue(w)]:
                if not worker.ready:
                    failed_starts += self._lose(worker, queue, on_outcome, "startup")
                    continue
                task = worker.inflight[0]
                retry = task.retry()
                if retry is not None:
                    logger.info("grading request %d overran %.1fs of CPU; retrying with %.1fs",
                                task.uid, task.limit, retry.limit)
                    worker.inflight[0] = retry
                    stats.retried += 1
                    self._lose(worker, queue, on_outcome, None)
                else:
                    self._lose(worker, queue, on_outcome, "timeout")
            if failed_starts >= MAX_FAILED_STARTS:
                raise GraderUnavailable(
                    f"grading workers failed to start {failed_starts} times in a row; the last one said:\n"
                    + (self._last_stderr or "(nothing)")
                )

    def _dispatch(self, queue: TaskQueue, workers: int, stats: PoolStats, start_all: bool) -> None:
        """Hand queued tasks to ready workers (a second one only when small) and start workers
        for the tasks left over (or up to ``workers`` with ``start_all``)."""
        for worker in self._workers[:workers]:
            while worker.ready and queue and len(worker.inflight) < 2:
                taken = {w.last_gold for w in self._workers[:workers] if w is not worker}
                task = queue.peek(worker.last_gold, taken)
                if worker.inflight and len(task.line) > PIPELINE_BYTES:
                    break
                try:
                    worker.send(task)
                except OSError:  # it died: if idle, drop it now (the task never started); if
                    if not worker.inflight:  # busy, reading its end of output reports the crash
                        self._drop(worker, kill=True)
                    break
                queue.remove(task)
        starting = sum(not w.ready for w in self._workers[:workers])
        wanted = workers - len(self._workers) if start_all else min(workers - len(self._workers), len(queue) - starting)
        for _ in range(max(0, wanted)):
            self._workers.append(_Worker(worker_command(WORKER_MEMORY_LIMIT), _worker_env()))
            stats.started_workers += 1

    @staticmethod
    def _deadlines(worker: _Worker) -> tuple[float, float | None]:
        """(wall-clock deadline, CPU limit) of what the worker is doing now."""
        if not worker.ready:
            return worker.started + STARTUP_TIMEOUT, None
        limit = worker.inflight[0].limit
        if not HAVE_PROC:
            return worker.head_wall + limit, None
        return worker.head_wall + WALL_BACKSTOP_FACTOR * limit + WALL_BACKSTOP_SLACK, limit

    def _overdue(self, worker: _Worker) -> bool:
        if not (worker.inflight or not worker.ready):
            return False
        wall_deadline, cpu_limit = self._deadlines(worker)
        if time.monotonic() > wall_deadline:
            return True
        used = worker.cpu_used() if cpu_limit is not None else None
        return used is not None and used > cpu_limit

    def _wait(self, busy: list[_Worker]) -> float | None:
        """Seconds until some worker could next be overdue: CPU time cannot grow faster than wall
        time for a single-threaded worker, so waiting out the remaining CPU allowance is safe."""
        waits = []
        now = time.monotonic()
        for worker in busy:
            wall_deadline, cpu_limit = self._deadlines(worker)
            wait = wall_deadline - now
            used = worker.cpu_used() if cpu_limit is not None else None
            if used is not None:
                wait = min(wait, cpu_limit - used)
            waits.append(wait)
        return max(0.01, min(waits)) if waits else None

    def _lose(self, worker: _Worker, queue: TaskQueue, on_outcome: Callable[[int, Outcome], None],
              reason: str | None) -> int:
        """Kill a dead, overdue or failed worker. Its head request fails with ``reason`` (or is
        requeued first when ``reason`` is None); the rest are requeued. Returns 1 for a start failure."""
        tail = worker.stderr_tail()
        how = self._drop(worker, kill=True)
        if not worker.ready:
            self._last_stderr = tail
            logger.warning("grading worker failed to start (%s): %s", how, tail[-300:])
            queue.requeue(list(worker.inflight))
            return 1
        inflight = list(worker.inflight)
        if reason is None:
            queue.requeue(inflight)
            return 0
        head, rest = inflight[0], inflight[1:]
        queue.requeue(rest)
        error = reason if reason == "timeout" else f"{reason}: {how}"
        logger.warning("grading request %d: %s (answer %.80r)%s", head.uid, error, head.preds[0][0],
                       f"; worker said: {tail[-300:]}" if tail and reason != "timeout" else "")
        on_outcome(head.uid, Outcome(False, error, retried=head.attempt > 0))
        return 0

    def _drop(self, worker: _Worker, kill: bool) -> str:
        self._workers.remove(worker)
        return worker.close(kill)

    def _close_all(self, kill: bool) -> None:
        for worker in list(self._workers):
            self._drop(worker, kill)

    def close(self) -> None:
        """Stop every worker (end of input lets idle ones exit; any still busy are killed) and refuse
        further calls. Closing twice is harmless."""
        with self._lock:
            self.closed = True
            self._close_all(kill=False)

    def forget(self) -> None:
        """In a forked child: drop the parent's workers without touching them; the child starts its own."""
        for worker in self._workers:
            for stream in (worker.proc.stdin, worker.proc.stdout, worker.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
            worker.proc.returncode = 0  # not ours to wait for
        self._workers = []
        self._lock = threading.Lock()


_LIVE_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
"""Every open pool of this process, so a forked child can drop the workers it copied."""


def _after_fork_in_child() -> None:
    """A forked child copies every pool with its parent's worker pipes. Writing to them would mix the
    child's requests into the parent's, waiting on or killing them at exit would touch processes that
    are not the child's, a lock held by another parent thread would never be released, and holding the
    pipes open would keep the parent's workers alive past the parent. So the child closes its copies
    of the pipes, takes a fresh lock and starts workers of its own on first use."""
    for pool in list(_LIVE_POOLS):
        pool.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
