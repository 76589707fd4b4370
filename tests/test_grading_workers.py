"""The grader from every kind of caller, and verdicts that do not depend on machine load.

Callers: a top-level script without an ``if __name__ == "__main__":`` guard (also ``python -c``
and a script on stdin), a notebook kernel, threads, ``multiprocessing`` pool workers (daemonic, spawned or forked)
and a child forked after the grader had started its workers. Owned pools: closed ones refuse, two
share nothing, a forked child never uses (or keeps open) its parent's workers. Load: the same batch graded on one
CPU alone and shared with busy-loop processes gives the same verdicts, because time limits count
CPU seconds; a first overrun is retried once under the longer limit, and every timeout is counted.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from workbench import grading
from workbench.grading import Grade, GradingPool, PoolClosed, grade, grade_batch

REPO = Path(__file__).resolve().parents[1]
HALF = ("so \\boxed{\\frac{1}{2}}", "0.5", "math500")
# A legitimate equivalence that costs math-verify ~0.4 s of CPU (a reordered, rewritten sum).
SLOW = (
    "\\boxed{C_{4} \\sin t + C_{3} \\cos t + C_{2} e^{-t} + C_{1} e^{t} + \\frac{1}{15} e^{-2t}}",
    "\\frac{e^{-2 t}}{15}+C_{1} e^{t}+C_{2} e^{-t}+ C_{3} \\cos (t)+C_{4} \\sin (t)",
    "minerva",
)
HOSTILE = ("\\boxed{9^{9^{9^{9}}}}", "1", "math500")

SCRIPT = """
from workbench.grading import grade, grade_batch

print("single", grade("so \\\\boxed{\\\\frac{1}{2}}", "0.5", "math500"))
items = [("\\\\boxed{0.5}", "\\\\frac{1}{2}", "math500"), ("\\\\boxed{x^2}", "x^3", "math500")]
grades = grade_batch(items, progress=False)
print("batch", [g.correct for g in grades])
"""


@pytest.fixture
def fresh_pool():
    """The shared pool stopped before and after the test."""
    grading.shutdown()
    yield
    grading.shutdown()


@pytest.mark.parametrize("how", ["file", "-c", "stdin"])
def test_a_script_without_a_main_guard_grades_quietly(tmp_path, how):
    script = tmp_path / "grade_it.py"
    script.write_text(SCRIPT)
    command = {"file": [sys.executable, str(script)], "-c": [sys.executable, "-c", SCRIPT],
               "stdin": [sys.executable, "-"]}
    result = subprocess.run(command[how], input=SCRIPT if how == "stdin" else None, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "single Grade(correct=True, extracted='\\\\frac{1}{2}', error=None)",
        "batch [True, False]",
    ]
    assert "Traceback" not in result.stderr and "Error" not in result.stderr


def test_a_notebook_grades_quietly():
    cells = [SCRIPT, "import threading\nout = []\nt = threading.Thread(target=lambda: out.append(grade('\\\\boxed{1/2}', "
             "'0.5', 'math500')))\nt.start(); t.join()\nprint('thread', out[0].correct)"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for cell in notebook.cells for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    text = "".join(o.get("text", "") for o in outputs)
    assert text.splitlines() == [
        "single Grade(correct=True, extracted='\\\\frac{1}{2}', error=None)",
        "batch [True, False]",
        "thread True",
    ]


def test_threads_take_turns_on_the_shared_workers():
    items = [(f"\\boxed{{\\frac{{{i}}}{{{2 * i}}}}}", "0.5", "math500") for i in range(1, 9)]
    results: dict[int, Grade] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, grade(*items[i]))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(results) == list(range(8))
    assert all(g.correct and g.error is None for g in results.values())


def grade_in_a_process(item: tuple[str, str, str]) -> Grade:
    return grade(*item)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_multiprocessing_pool_workers_can_grade(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    assert grade(*HALF).correct  # the parent's workers exist when a fork copies it
    with multiprocessing.get_context(method).Pool(1) as processes:  # daemonic: no multiprocessing children
        results = processes.map(grade_in_a_process, [HALF, ("\\boxed{x^2}", "x^3", "math500")])
    assert [g.correct for g in results] == [True, False]
    assert grade(*HALF).correct  # and the parent's workers still answer


def test_a_forked_child_starts_its_own_workers():
    assert grade(*HALF).correct
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's workers are not its to use
        try:
            os.close(read)
            ok = grade(*HALF).correct and not grade("\\boxed{1/3}", "0.5", "math500").correct
            os.write(write, b"ok" if ok else b"wrong")
            grading.shutdown()
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        assert answer.read() == b"ok"
    os.waitpid(pid, 0)
    assert grade(*HALF).correct


def test_a_closed_pool_refuses_with_a_clear_error():
    with GradingPool(1) as pool:
        assert pool.grade(*HALF).correct
    assert pool.closed
    pool.close()  # a second close is harmless
    with pytest.raises(PoolClosed, match="closed.*create a new GradingPool"):
        pool.grade(*HALF)
    with pytest.raises(PoolClosed, match="closed"):  # even when no worker would be needed
        pool.grade_batch([("\\boxed{8}", "8", "toy-1")], progress=False)
    with pytest.raises(PoolClosed, match="closed"):
        pool.start()
    with pytest.raises(PoolClosed, match="closed"), pool:
        pass


def test_two_pools_share_no_workers():
    with GradingPool(1) as first, GradingPool(1) as second:
        assert first.grade_batch([HALF], progress=False).report.started_workers == 1
        assert second.grade_batch([HALF], progress=False).report.started_workers == 1  # not first's worker
        first.close()
        again = second.grade_batch([("\\boxed{x^2}", "x^3", "math500")], progress=False)
        assert [g.correct for g in again] == [False]
        assert again.report.started_workers == 0  # its own worker outlived the other pool


def test_the_default_pool_still_serves_module_calls():
    assert grade(*HALF).correct
    grading.shutdown()
    batch = grade_batch([HALF, ("\\boxed{x^2}", "x^3", "math500")], workers=1, progress=False)
    assert [g.correct for g in batch] == [True, False]
    assert batch.report.started_workers == 1  # after shutdown, a new default pool
    assert grading.default_pool() is grading.default_pool()


def test_a_forked_child_of_an_owned_pool_starts_its_own_workers_and_drops_the_parents():
    """A fork while another thread holds the pool (its lock) and its workers run: the child grades on
    workers of its own without waiting for that lock, and holds none of the parent's worker pipes, so
    closing the parent's pool lets its idle workers exit at once (a held pipe would keep them waiting
    until close() kills them after 5 s)."""
    with GradingPool(1) as owned:
        owned.start()
        read, write = os.pipe()
        release_read, release_write = os.pipe()
        owned._pool._lock.acquire()  # as another thread mid-call would hold it at the fork
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read)
                os.close(release_write)
                signal.alarm(120)  # a deadlock here fails the test instead of hanging it
                batch = owned.grade_batch([HALF, ("\\boxed{1/3}", "0.5", "math500")], progress=False)
                ok = [g.correct for g in batch] == [True, False] and batch.report.started_workers == 1
                os.write(write, b"ok" if ok else b"wrong")
                os.read(release_read, 1)  # alive, holding whatever it inherited, until the parent has closed
                owned.close()
            finally:
                os._exit(0)
        owned._pool._lock.release()
        os.close(write)
        os.close(release_read)
        try:
            with os.fdopen(read, "rb") as answer:
                assert answer.read(2) == b"ok"
            assert owned.grade_batch([HALF], progress=False).report.started_workers == 0  # the parent's survived
            began = time.monotonic()
            owned.close()
            assert time.monotonic() - began < 4.0
        finally:
            os.close(release_write)
            os.waitpid(pid, 0)


def _batch() -> list[tuple[str, str, str]]:
    fractions = [(f"\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"{i}/{i + 1}", "math500") for i in range(1, 6)]
    return [SLOW] + fractions + [("\\boxed{3}, \\boxed{5}", "5", "math500"), ("\\boxed{1 000}", "10^3", "math500")]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not Path("/proc/self/stat").exists(),
                    reason="needs Linux CPU affinity and /proc")
def test_verdicts_do_not_change_under_load(fresh_pool):
    """All on one CPU: graded alone, then with four busy loops on that CPU (the worker gets about a
    fifth of it). With limits in wall seconds the slow item would time out under load."""
    timeout = 1.2  # CPU seconds: 3x what SLOW needs, less than its wall time under the load
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})  # workers and busy loops inherit this
    hogs: list[subprocess.Popen] = []
    try:
        assert grade(*HALF).correct  # a warm worker, started on an idle CPU
        idle = grade_batch(_batch(), timeout=timeout, retry_timeout=timeout, progress=False)
        grading.shutdown()
        assert grade(*HALF).correct
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(4)]
        time.sleep(0.2)
        loaded = grade_batch(_batch(), timeout=timeout, retry_timeout=timeout, progress=False)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        os.sched_setaffinity(0, mask)
    assert loaded == idle
    assert [g.correct for g in idle] == [True] * 6 + [False, True]
    assert idle[6].error == "multiple_answers"
    assert idle.report.timeouts == loaded.report.timeouts == 0
    assert idle.report.retried == loaded.report.retried == 0
    assert loaded.report.verify_seconds > timeout  # wall time the load cost; CPU time stayed below


def test_an_overrun_is_retried_once_with_the_longer_limit(fresh_pool):
    grades = grade_batch([SLOW, HALF], timeout=0.05, retry_timeout=30.0, progress=False)
    assert [g.correct for g in grades] == [True, True]
    assert grades.report.retried == 1 and grades.report.recovered == 1 and grades.report.timeouts == 0


def test_timeouts_are_counted_after_the_retry(fresh_pool):
    items = [HOSTILE, HALF, HOSTILE]
    grades = grade_batch(items, timeout=0.3, retry_timeout=0.6, progress=False)
    assert grades == [Grade(False, "9^{9^{9^{9}}}", "timeout"), Grade(True, "\\frac{1}{2}"),
                      Grade(False, "9^{9^{9^{9}}}", "timeout")]
    report = grades.report
    assert (report.timeouts, report.retried, report.recovered, report.distinct_verified) == (2, 1, 0, 2)


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="retry_timeout must be a positive number"):
        grade_batch([HALF], retry_timeout=-1, progress=False)
    with pytest.raises(ValueError, match="workers must be a positive int"):
        grade_batch([HALF], workers=0, progress=False)
