"""Faults a user meets, each with its exact outcome: the uninterrupted result after a resume, or one line.

Each case runs the small evaluation of ``tests/fault_worker.py`` (seeded fake samples of six toy
problems in six units, then tables) and compares what a fault leaves, and what the same command makes
of it, with an undisturbed run: the same table bytes, no temp files, no lock files, nothing lost.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import fault_worker
import pyarrow.parquet as pq
import pytest
from namespaces import needs_namespace

from workbench.errors import UserError, main_guard
from workbench.locking import (
    LOCK_FILE,
    PENDING,
    FolderLocked,
    folder_lock,
    holder,
    replace_set,
)
from workbench.records import CORRUPT_DIR, SAMPLE_SCHEMA, ShardStore, read_records
from workbench.runs import CorruptManifest, read_manifest, run_status, write_manifest

REPO = Path(__file__).resolve().parents[1]
WORKER = [sys.executable, str(REPO / "tests" / "fault_worker.py")]
UNITS = len(fault_worker.TIERS) * fault_worker.PER_TIER




def _outputs(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, hidden ones included, caches and manifests not
    (a manifest records times; its hashes are checked apart)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "grades.sqlite")}


def _tables(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in _outputs(folder).items() if not k.startswith("part-")}


def _leftovers(*folders: Path) -> list[str]:
    """Temp files, staging folders and lock files: what no finished command may leave."""
    return [str(p) for f in folders for p in f.rglob("*")
            if p.name.startswith((".tmp-", ".staging-", PENDING, LOCK_FILE)) or p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The tables of an undisturbed run."""
    root = tmp_path_factory.mktemp("reference")
    fault_worker.run(root / "samples", root / "tables")
    return _tables(root / "tables")


def _run(tmp_path: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*WORKER, str(tmp_path / "samples"), str(tmp_path / "tables"), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and " WARNING " not in line]
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------------------ stored results
@pytest.mark.parametrize("damage", ["flip a bit", "cut in half", "overwrite"])
def test_a_damaged_shard_is_resampled_alone_with_one_warning(tmp_path, reference, caplog, damage):
    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    shards = ShardStore(tmp_path / "samples").shards()
    victim = shards[2]
    data = bytearray(victim.read_bytes())
    if damage == "flip a bit":
        data[len(data) // 2] ^= 0x10
    elif damage == "cut in half":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not a parquet file")
    victim.write_bytes(bytes(data))

    calls = []
    original = fault_worker.SeededFake.generate
    fault_worker.SeededFake.generate = lambda self, prompts, s: calls.append(len(prompts)) or original(self, prompts, s)
    try:
        fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    finally:
        fault_worker.SeededFake.generate = original
    assert calls == [1]  # only the damaged unit was sampled again
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and victim.name in warnings[0] and "produced again" in warnings[0]
    assert (tmp_path / "samples" / CORRUPT_DIR / victim.name).is_file()  # set aside, not deleted
    assert _tables(tmp_path / "tables") == reference
    recorded = read_manifest(tmp_path / "samples")["files"]
    assert victim.name not in recorded and len([n for n in recorded if n.startswith("part-")]) == UNITS
    numbers = [s.name[5:11] for s in ShardStore(tmp_path / "samples").shards()]
    # one live shard per unit, each named by its unit (the replacement too); the bad one lies in .corrupt/
    assert sorted(numbers) == [f"{i:06d}" for i in range(UNITS)]
    assert not _leftovers(tmp_path)


def test_reading_a_damaged_folder_is_refused_in_one_line_naming_the_shard(tmp_path):
    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    victim = ShardStore(tmp_path / "samples").shards()[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{victim.name} is corrupt .*rerun the command that wrote this folder"):
        read_records(tmp_path / "samples")
    assert victim.is_file()  # a reader sets nothing aside


def test_a_shard_written_since_the_manifest_is_checked_against_the_schema(tmp_path):
    store = ShardStore(tmp_path)
    pq.write_table(pq.read_table(_some_shard(tmp_path)).drop_columns(["correct"]), tmp_path / "part-000009-x.parquet")
    assert [p.name for p in store.verify({})] == ["part-000009-x.parquet"]
    assert (tmp_path / CORRUPT_DIR / "part-000009-x.parquet").is_file()


def _some_shard(folder: Path) -> Path:
    store = ShardStore(folder / "src", SAMPLE_SCHEMA)
    return store.append([{"benchmark": "toy-1", "problem_id": "a", "sample_idx": 0, "prompt": "p", "response": "r",
                          "n_tokens": 1, "finish_reason": "stop", "correct": True, "extracted": "1",
                          "grade_error": None}])


def test_a_cut_short_manifest_is_one_line_naming_it(tmp_path):
    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    manifest = tmp_path / "samples" / "manifest.json"
    manifest.write_text(manifest.read_text()[:200])
    with pytest.raises(CorruptManifest, match=r"manifest.json is not a readable manifest"):
        read_manifest(tmp_path / "samples")
    proc = _run(tmp_path)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert line.startswith(f"error: {manifest} is not a readable manifest") and "delete its folder" in line


def test_table_bytes_do_not_depend_on_shard_names_or_order(tmp_path, reference):
    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    shards = ShardStore(tmp_path / "samples").shards()
    for i, shard in enumerate(reversed(shards)):  # the last unit now comes first, under other names
        shard.rename(shard.with_name(f"part-{i:06d}-renamed{i}.parquet"))
    manifest = read_manifest(tmp_path / "samples")
    write_manifest(tmp_path / "samples", manifest["config"], manifest["seed"], status="finished")
    (tmp_path / "tables2").mkdir()
    fault_worker.run(tmp_path / "samples", tmp_path / "tables2")
    assert _tables(tmp_path / "tables2") == reference


# ------------------------------------------------------------------------------ table sets
def test_a_failed_table_write_leaves_the_old_set_and_the_same_command_then_replaces_it(tmp_path, reference,
                                                                                         monkeypatch, capsys):
    import eval.table_sets as table_sets

    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    before = _outputs(tmp_path / "tables") | {"manifest": (tmp_path / "tables" / "manifest.json").read_bytes()}
    # other samples of the same run (another sampling seed), so that the new set differs from the old one
    monkeypatch.setattr(fault_worker, "SAMPLING", replace(fault_worker.SAMPLING, seed=5))
    real_write = table_sets.write_manifest

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tables" / "manifest.json"))

    monkeypatch.setattr(table_sets, "write_manifest", full_disk)  # the last file of the set fails
    assert main_guard(lambda argv: fault_worker.run(tmp_path / "samples5", tmp_path / "tables")) == 2
    assert "disk full" in _one_line(capsys.readouterr().err)
    after = _outputs(tmp_path / "tables") | {"manifest": (tmp_path / "tables" / "manifest.json").read_bytes()}
    assert after == before and not _leftovers(tmp_path / "tables")  # the old set, whole
    monkeypatch.setattr(table_sets, "write_manifest", real_write)
    fault_worker.run(tmp_path / "samples5", tmp_path / "tables")  # no --overwrite needed: same runs
    fault_worker.run(tmp_path / "samples5", tmp_path / "fresh")
    new = _tables(tmp_path / "tables")
    assert new == _tables(tmp_path / "fresh") and new != {k: v for k, v in before.items() if k != "manifest"}
    assert read_manifest(tmp_path / "tables")["files"] == {
        name: hashlib.sha256(data).hexdigest() for name, data in _tables(tmp_path / "tables").items()}


def test_a_set_killed_while_being_installed_is_finished_by_the_next_writer(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    for name in ("a.csv", "b.csv", "manifest.json"):
        (folder / name).write_text(f"old {name}")
    pending = folder / PENDING
    pending.mkdir()
    for name in ("a.csv", "b.csv", "manifest.json"):
        (pending / name).write_text(f"new {name}")
    os.replace(pending / "a.csv", folder / "a.csv")  # the kill came after the first file was moved
    with folder_lock(folder):
        pass
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        "a.csv": "new a.csv", "b.csv": "new b.csv", "manifest.json": "new manifest.json"}


def test_a_staged_set_replaces_the_old_one_only_when_its_body_finishes(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "x.md").write_text("old")
    with pytest.raises(RuntimeError), replace_set(folder) as staging:
        tmp = staging / ".x.md.tmp"
        tmp.write_text("new")
        os.replace(tmp, staging / "x.md")
        raise RuntimeError("killed mid-set")
    assert [p.name for p in folder.iterdir()] == ["x.md"] and (folder / "x.md").read_text() == "old"
    with replace_set(folder) as staging:
        (staging / "y.md").write_text("added")
    assert sorted(p.name for p in folder.iterdir()) == ["x.md", "y.md"] and (folder / "x.md").read_text() == "old"


# ------------------------------------------------------------------------------ one writer
def test_a_second_run_on_the_same_folder_is_refused_at_once_naming_the_holder(tmp_path, reference):
    ready, hold = tmp_path / "ready", tmp_path / "hold"
    hold.touch()  # the first run waits after its first shard until this is gone
    first = subprocess.Popen([*WORKER, str(tmp_path / "samples"), str(tmp_path / "tables"), "--ready", str(ready),
                              "--hold", str(hold)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        start = time.monotonic()
        second = _run(tmp_path)
        seconds = time.monotonic() - start
        line = _one_line(second.stderr)
        assert second.returncode == 2 and f"is being written by pid {first.pid} on " in line, second.stderr
        assert "fault_worker.py" in line and seconds < 60
    finally:
        hold.unlink()
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, reference):
    folder = tmp_path / "samples"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    info = {"pid": int(dead.stdout), "host": "h", "command": "python -m eval.reproduce", "since": "then"}
    (folder / LOCK_FILE).write_text(json.dumps(info))
    assert holder(folder) == info
    fault_worker.run(folder, tmp_path / "tables")
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)


def test_locks_are_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    with folder_lock(tmp_path), folder_lock(tmp_path):
        probe = subprocess.run([sys.executable, "-c", (
            "import sys; sys.path.insert(0, '.');"
            "from workbench.locking import folder_lock, FolderLocked\n"
            f"try:\n  folder_lock({str(tmp_path)!r}).__enter__()\nexcept FolderLocked as e: print(e)")],
            cwd=REPO, capture_output=True, text=True)
        assert f"pid {os.getpid()}" in probe.stdout
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_toy_run_another_process_is_writing_is_refused_not_wiped(tmp_path):
    # a second launch of the same experiment must not delete the run the first is training
    from train.methods import train_toy_run

    run = tmp_path / "run"
    ready, hold = tmp_path / "ready", tmp_path / "hold"
    hold.touch()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.')\n"
        "from pathlib import Path\n"
        "from workbench.runs import run_folder\n"
        f"with run_folder({str(run)!r}, {{'method': 'scope'}}, 0):\n"
        f"    (Path({str(run)!r}) / 'partial.bin').write_bytes(b'x')\n"
        f"    Path({str(ready)!r}).touch()\n"
        f"    while Path({str(hold)!r}).exists(): time.sleep(0.05)\n")], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.05)
        with pytest.raises(FolderLocked, match=f"pid {holder.pid}"):
            train_toy_run("scope", 0, run, ["--max_steps", "1"])
        assert (run / "partial.bin").read_bytes() == b"x" and read_manifest(run)["status"] == "running"
    finally:
        hold.unlink()
        holder.wait(timeout=60)
    assert holder.returncode == 0 and read_manifest(run)["status"] == "finished"


def test_concurrent_manifest_writes_never_collide(tmp_path):
    errors = []

    def write(seed):
        try:
            for i in range(100):
                write_manifest(tmp_path, {"i": i}, seed, status="running")
        except Exception as exc:  # noqa: BLE001 - the test collects any failure
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and read_manifest(tmp_path)["status"] == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


# ------------------------------------------------------------------------------ interruptions
def _interrupt(tmp_path: Path, sig: int) -> subprocess.CompletedProcess:
    ready, hold = tmp_path / "ready", tmp_path / "hold"
    hold.touch()  # the run waits after its first shard: the signal certainly comes mid-run
    proc = subprocess.Popen([*WORKER, str(tmp_path / "samples"), str(tmp_path / "tables"), "--ready", str(ready),
                             "--hold", str(hold)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            # a shell without job control starts background jobs with SIGINT ignored, and a
                            # child inherits that; the run must see Ctrl-C as a terminal sends it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    hold.unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_ctrl_c_says_what_was_kept_and_how_to_resume_and_the_resume_is_exact(tmp_path, reference):
    proc = _interrupt(tmp_path, signal.SIGINT)
    assert proc.returncode == 130
    line = _one_line(proc.stderr)
    assert line.startswith("interrupted: stopped by Ctrl-C; finished work is kept; run the same command to "
                           "resume: python tests/fault_worker.py ")
    assert len(ShardStore(tmp_path / "samples").shards()) == 1
    assert read_manifest(tmp_path / "samples")["status"] == "interrupted"
    assert not _leftovers(tmp_path)
    assert _run(tmp_path).returncode == 0
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)


def test_sigterm_is_recorded_like_ctrl_c_and_the_resume_is_exact(tmp_path, reference):
    proc = _interrupt(tmp_path, signal.SIGTERM)
    assert proc.returncode == 143
    assert _one_line(proc.stderr).startswith("interrupted: stopped by SIGTERM; finished work is kept; run the same "
                                             "command to resume: python tests/fault_worker.py ")
    assert read_manifest(tmp_path / "samples")["status"] == "interrupted" and not _leftovers(tmp_path)
    assert _run(tmp_path).returncode == 0
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)


def test_kill_9_leaves_a_run_that_reads_as_interrupted_and_resumes_exactly(tmp_path, reference):
    proc = _interrupt(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(tmp_path / "samples")["status"] == "running"  # nothing could be written...
    assert run_status(tmp_path / "samples") == "interrupted"  # ...but nobody holds the folder
    assert _run(tmp_path).returncode == 0
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)
    assert read_manifest(tmp_path / "samples")["status"] == "finished"


def test_a_full_disk_mid_run_is_one_line_and_the_rerun_is_exact(tmp_path, reference, monkeypatch, capsys):
    import workbench.records as records

    real_write, writes = records.pq.write_table, []

    def fill_up(table, where, *args, **kwargs):
        writes.append(where)
        if len(writes) == 3:
            Path(where).write_bytes(b"half")  # the disk filled while writing this shard
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(records.pq, "write_table", fill_up)
    assert main_guard(lambda argv: fault_worker.run(tmp_path / "samples", tmp_path / "tables") and 0) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: disk full writing {writes[2]} (No space left on device); free some space")
    assert read_manifest(tmp_path / "samples")["status"] == "interrupted"
    assert len(ShardStore(tmp_path / "samples").shards()) == 2 and not _leftovers(tmp_path)
    monkeypatch.setattr(records.pq, "write_table", real_write)
    fault_worker.run(tmp_path / "samples", tmp_path / "tables")
    assert _tables(tmp_path / "tables") == reference and not _leftovers(tmp_path)


@needs_namespace
def test_a_real_disk_that_fills_mid_run_is_one_line_and_the_rerun_on_more_space_is_exact(tmp_path, reference):
    """Samples on a 28 kB tmpfs: the third shard finds no room; after a remount with room, the rerun."""
    mount, samples = tmp_path / "mnt", tmp_path / "mnt" / "samples"
    mount.mkdir()
    worker = shlex.join([*WORKER, str(samples), str(tmp_path / "tables")])
    script = (f"mount -t tmpfs -o size=28k tmpfs {mount} && {worker} 2>{tmp_path / 'err'}; echo rc=$?; "
              f"ls -A {samples}; grep '\"status\"' {samples}/manifest.json; "
              f"mount -o remount,size=1m {mount} && {worker} >/dev/null && ls -A {samples}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout.split()
    line = _one_line((tmp_path / "err").read_text())
    assert line.startswith(f"error: disk full writing {samples}/part-000002-") and "(No space left on device)" in line
    first = out[: out.index('"status":') + 2]
    assert first[0] == "rc=2" and first[-1] == '"interrupted",'  # recorded in place: no room for a temp file
    assert sorted(first[1:-2]) == ["grades.sqlite", "manifest.json", *sorted(n for n in first if n.startswith("part-"))]
    assert len([n for n in first if n.startswith("part-")]) == 2  # whole shards only, no temp files
    assert len([n for n in out[len(first):] if n.startswith("part-")]) == UNITS
    assert _tables(tmp_path / "tables") == reference


@pytest.mark.parametrize("code, says", [(errno.EROFS, "read-only"), (errno.EACCES, "read-only"),
                                        (errno.ENOSPC, "disk full")])
def test_a_disk_error_anywhere_is_one_line_naming_the_file(capsys, code, says):
    def main(argv):
        raise OSError(code, os.strerror(code), "/somewhere/figure.pdf")

    assert main_guard(main) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {says} writing /somewhere/figure.pdf ({os.strerror(code)})")


def test_an_empty_keyboard_interrupt_still_says_how_to_resume(capsys):
    def main(argv):
        raise KeyboardInterrupt

    assert main_guard(main) == 130
    assert "run the same command to resume: " in _one_line(capsys.readouterr().err)


def test_a_lock_refusal_is_a_user_error():
    assert issubclass(FolderLocked, UserError)


# ------------------------------------------------------------------------------ inputs
def _jsonl(folder: Path, lines: list[bytes], name: str = "amc23.jsonl") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(b"\n".join(lines) + b"\n")
    return folder / name


GOOD = b'{"id": "p1", "problem": "What is 1+1?", "answer": "2"}'


@pytest.mark.parametrize("content, says", [
    ([GOOD, '{"id": "p2", "problem": "caf\u00e9 costs?", "answer": "3"}'.encode("latin-1")],
     "line 2: not UTF-8 (byte 0xe9 at byte 29 of the line); save the file as UTF-8"),
    ([GOOD.decode().encode("utf-16")], "the file is UTF-16; save it as UTF-8"),
    ([GOOD, b'{"id": "p2", "problem": "x \\ud800 y", "answer": "3"}'],
     "line 2 (id 'p2'): field 'problem' holds invalid Unicode (surrogates not allowed: U+D800 at character 2)"),
    ([GOOD, b'{"id": "p3", "problem": "' + b"9" * 20_001 + b'", "answer": "3"}'],
     "line 2 (id 'p3'): field 'problem' has 20,001 characters, over the 20,000 a problem may have"),
])
def test_bad_text_in_a_data_file_is_refused_at_load_naming_file_line_and_problem(tmp_path, content, says):
    from workbench.data import DataError, load_benchmark

    path = _jsonl(tmp_path / "data", content)
    with pytest.raises(DataError) as err:
        load_benchmark("amc23", tmp_path / "data")
    assert str(err.value).startswith(str(path)) and says in str(err.value)


def test_a_problem_made_in_code_with_a_lone_surrogate_is_refused_before_sampling(tmp_path):
    from eval.generate import generate_samples
    from workbench.data import DataError
    from workbench.records import Problem

    bad = Problem("toy-1", "x", "1+\ud800", "2")
    with pytest.raises(DataError, match=r"problem toy-1/x: field 'problem' holds invalid Unicode"):
        generate_samples(fault_worker.SeededFake({}), [bad], fault_worker.SAMPLING, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("values, position", [([-1.0, float("nan")], 1), ([float("inf")], 0), ([-0.5, 0.0, 0.3], 2)])
def test_the_trainer_refuses_impossible_teacher_logprobs_naming_teacher_and_position(values, position):
    import torch

    from workbench.checks import ImpossibleLogprob, check_logprobs

    with pytest.raises(ImpossibleLogprob, match=rf"^teacher t, batch row 4: position {position}: log-prob"):
        check_logprobs(torch.tensor(values), "teacher t, batch row 4")
    assert check_logprobs([-0.0, -3.5, 5e-5], "t").tolist() == pytest.approx([0.0, -3.5, 5e-5])


TOY_RECIPE = REPO / "train" / "recipes" / "toy_scope.yaml"


@pytest.mark.parametrize("flags, says", [
    (["--learning_rate", "nan"], "learning_rate (the optimizer's step size) must be a finite number in (0, ∞), got nan"),
    (["--learning_rate", "-1e-5"], "learning_rate (the optimizer's step size) must be a finite number in (0, ∞), got -1e-5"),
    (["--learning_rate", "inf"], "learning_rate (the optimizer's step size) must be a finite number in (0, ∞), got inf"),
    (["--adam_beta2", "1.0"], "adam_beta2 (Adam's second-moment decay) must be a finite number in [0, 1), got 1.0"),
    (["--max_grad_norm", "-1"], "max_grad_norm (gradient clipping; 0 turns it off) must be a finite number in [0, ∞)"),
    (["--weight_decay", "nan"], "weight_decay (AdamW's decay) must be a finite number in [0, ∞), got nan"),
    (["--top_p", "0"], "top_p must be in (0, 1], got 0.0 (--top_p)"),  # the sampling type's rule
    (["--repetition_penalty", "nan"], "repetition_penalty must be > 0, got nan (--repetition_penalty)"),
    (["--num_generations", "1"], "method scope weighs the rollouts of a prompt against each other, so it needs "
                                 "num_generations >= 2, got 1 (--num_generations); use method opd"),
    (["--num_generations", "1", "--ablation", "no_teacher_weight"], "method scope weighs the rollouts of a prompt"),
])
def test_training_values_no_run_can_use_are_one_line_before_any_model_loads(tmp_path, flags, says):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "train.cli", "--config", str(TOY_RECIPE), *flags, "--output_dir",
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith(f"error: {says}"), line
    assert not (tmp_path / "out").exists() and time.monotonic() - start < 30


def test_a_learning_rate_of_inf_in_a_recipe_is_refused_too(tmp_path):
    from train.config import parse_config

    text = TOY_RECIPE.read_text().replace("learning_rate:", "learning_rate: .inf\n#", 1)
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(UserError, match=r"learning_rate .* must be a finite number in \(0, ∞\), got inf"):
        parse_config(["--config", str(tmp_path / "r.yaml"), "--output_dir", str(tmp_path / "out")])


# ------------------------------------------------------------------------------ grader
def _nested_frac(depth: int, inner: str = "5") -> str:
    for _ in range(depth):
        inner = "\\frac{" + inner + "}{2}"
    return inner


def test_answers_nested_beyond_what_math_verify_reads_are_wrong_by_name_not_by_a_guess(tmp_path):
    from workbench.grading import Grade, GradeCache, grade_batch

    deep, long = _nested_frac(60), "1+" * 600 + "1"
    items = [(f"\\boxed{{{deep}}}", "\\frac{5}{2}", "math500"),  # 5 / 2^60, deeper than math-verify reads faithfully
             (f"\\boxed{{{_nested_frac(3)}}}", "\\frac{5}{8}", "math500"),  # ordinary nesting is still read
             (f"\\boxed{{{long}}}", "601", "math500")]
    grades = grade_batch(items, workers=1, progress=False, cache=GradeCache(tmp_path / "g.sqlite"))
    assert grades == [Grade(False, deep, "too_complex: nesting depth 60 > 10"), Grade(True, _nested_frac(3)),
                      Grade(False, long, "too_complex: 1,201 characters > 1,000")]


def test_a_lone_surrogate_makes_its_answer_wrong_not_the_batch(tmp_path):
    from workbench.grading import Grade, GradeCache, grade_batch

    cache = GradeCache(tmp_path / "g.sqlite")
    items = [("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "math500"), ("\\boxed{\ud800 7}", "7", "math500"),
             ("\\boxed{0.5}", "\\frac{1}{2}", "math500")]
    assert grade_batch(items, workers=1, progress=False, cache=cache) == [
        Grade(True, "\\frac{1}{2}"), Grade(False, None, "invalid_text"), Grade(True, "0.5")]
    assert grade_batch(items, workers=1, progress=False, cache=cache)[1] == Grade(False, None, "invalid_text")


# ------------------------------------------------------------------------------ engine fixtures
def test_the_served_teacher_health_check_passes_long_after_the_servers_start(tmp_path):
    """A session on a loaded machine reaches its served tests more than the start deadline after the
    server started; a healthy server must still pass (it failed with "not healthy after 420 s")."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("engines_conftest", REPO / "tests" / "engines" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    server = conftest.LiveServer(REPO, "key")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        server.port = s.getsockname()[1]
    (tmp_path / "health").write_text("ok")  # http.server answers /health with this file
    server.process = subprocess.Popen([sys.executable, "-m", "http.server", str(server.port), "--bind", "127.0.0.1",
                                       "--directory", str(tmp_path)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env={**os.environ, "no_proxy": "127.0.0.1"})
    try:
        server._started_at = time.perf_counter() - 2 * conftest.SERVER_START_DEADLINE_S  # booted long ago
        server.wait_healthy()
        assert server.alive()
    finally:
        server.process.kill()
        server.process.wait()


# ------------------------------------------------------------------------------ read-only results
@needs_namespace
@pytest.mark.parametrize("command, where", [
    ("-m analysis.cli figures", "results/figures/"),
    ("scripts/demo.py --toy-size 1 --n 2 --backend hf --skip-analysis --quiet", "results/"),
])
def test_a_read_only_results_folder_is_one_line_saying_read_only(command, where):
    """`make figures` and `make demo` with results/ mounted read-only (only inside this command)."""
    script = ("mount --bind results results && mount -o remount,bind,ro results && "
              f"exec {shlex.quote(sys.executable)} {command}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]  # model loading may draw bars
    assert len(errors) == 1 and errors == proc.stderr.strip().splitlines()[-1:], proc.stderr[-2000:]
    line = errors[0]
    assert line.startswith(f"error: read-only writing {where}") and "(Read-only file system)" in line, line


# ------------------------------------------------------------------------------ dead teacher
def test_a_dead_teacher_server_is_one_line_saying_what_to_do(capsys):
    from workbench.models.server import ServerScorer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    dead = ServerScorer(f"http://127.0.0.1:{port}", "teacher", max_retries=1, backoff_s=0.0, progress=False)
    assert main_guard(lambda argv: dead.token_logprobs([[2]], [[3]])) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: could not reach http://127.0.0.1:{port}/v1/completions after 2 tries: ")
    assert line.endswith("; start the server (or fix its URL) and run the command again")


def test_damaged_committed_counts_are_refused_in_one_line(tmp_path):
    from analysis.experiments import COUNTS_FILE, read_counts

    shutil.copytree(REPO / "results" / "toy" / "experiments" / "main", tmp_path / "main")
    counts, _ = read_counts("main", tmp_path)  # intact: read as committed
    assert len(counts) > 0
    path = tmp_path / "main" / COUNTS_FILE
    data = bytearray(path.read_bytes())
    data[-9] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"counts.csv.gz is not the file its manifest recorded .*make toy-main"):
        read_counts("main", tmp_path)


def test_a_lock_whose_setup_fails_is_released(tmp_path, monkeypatch):
    import workbench.locking as locking

    def broken(folder):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(locking, "install_pending", broken)
    with pytest.raises(OSError), folder_lock(tmp_path):
        pass
    monkeypatch.undo()
    assert not (tmp_path / LOCK_FILE).exists()
    with folder_lock(tmp_path):  # nothing held over from the failed attempt
        assert holder(tmp_path)["pid"] == os.getpid()
