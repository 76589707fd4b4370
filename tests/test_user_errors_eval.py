"""Mistakes on the evaluation command line cost one line and exit 2, before any model loads; Ctrl-C
says what was kept and how to resume; a read-only or full disk stops the run before sampling; tables
are never left half-written."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from namespaces import needs_namespace

import eval.tables as tables_mod
from eval.reproduce import check_model
from eval.tables import metric_table, summarise_samples, write_tables
from workbench.data import DataError, load_benchmark
from workbench.errors import UserError
from workbench.records import ShardStore, read_records

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pandas", "pyarrow", "vllm")


def _cli(*args: str, module: str = "eval.reproduce", timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """``module`` is a module (run with -m) or a script of the repository (``scripts/demo.py``)."""
    start = time.perf_counter()
    command = [sys.executable, *((module,) if module.endswith(".py") else ("-m", module)), *args]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - start


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]




def _in_tmpfs(mount: Path, options: str, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with a fresh tmpfs (``options``, e.g. "ro" or "size=256k") mounted on ``mount``,
    inside a user and mount namespace: nothing outside the command sees the mount."""
    mount.mkdir(parents=True, exist_ok=True)
    script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && {command}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, needles", [
    (["--max-new-tokens", "0"], ["argument --max-new-tokens: must be at least 1, got 0"]),
    (["--n", "0"], ["argument --n: must be at least 1, got 0"]),
    (["--seed", "-2"], ["argument --seed: must be a whole number >= 0, got -2"]),
    (["--repetition-penalty", "0"], ["argument --repetition-penalty: must be > 0, got 0.0"]),
    (["--model", "org/name", "--limit", "0"], ["--limit must be a whole number >= 1", "got 0"]),
    (["--model", "org/name", "--limit", "-3"], ["--limit must be a whole number >= 1", "got -3"]),
    (["--toy-size", "0"], ["--toy-size must be a whole number >= 1"]),
    (["--unit-size", "0"], ["--unit-size", ">= 1 or 'all'"]),
    (["--n", "eight"], ["--n", "invalid int value: 'eight'"]),
    (["--model", "./nonexistent"], ["--model ./nonexistent: no such folder, and not a hub id of the form org/name"]),
    (["--model", "/tmp/no-such-model-dir"], ["--model /tmp/no-such-model-dir: no such folder"]),
    (["--model", "results/no-such-model"], ["--model results/no-such-model: no such folder"]),
    (["--from-samples", "/tmp/no-such-samples"], ["--from-samples /tmp/no-such-samples: no such folder"]),
    (["--limit", "2"], ["--limit applies to real benchmarks (with --model)"]),
])
def test_argument_mistakes_cost_one_line_and_under_two_seconds(args, needles):
    proc, seconds = _cli(*args)
    line = _one_error_line(proc)
    for needle in needles:
        assert needle in line
    assert seconds < 2.0, f"{seconds:.2f} s to refuse {args}"


def test_checking_arguments_imports_no_heavy_library():
    code = ("import sys\nfrom eval.reproduce import parse_args\nfrom workbench.errors import UserError\n"
            "try:\n    parse_args(['--n', '0'])\nexcept UserError:\n    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_model_argument_shapes(tmp_path, tiny_lm):
    check_model("smollm2")
    check_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    check_model(str(tiny_lm))
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    check_model(str(tmp_path), "weights.gguf")
    with pytest.raises(UserError, match="has no config.json"):
        check_model(str(tmp_path))
    with pytest.raises(UserError, match="is a file"):
        check_model(str(tmp_path / "weights.gguf"))
    for bad in ("nonexistent", "a/b/c", "org/../name", "org//name"):
        with pytest.raises(UserError, match="no such folder"):
            check_model(bad)


def test_an_empty_benchmark_file_is_named_before_any_model_loads(tmp_path, fixture_data_dir):
    data = tmp_path / "data"
    shutil.copytree(fixture_data_dir, data)
    (data / "amc23.jsonl").write_text("")
    with pytest.raises(DataError, match=r"amc23\.jsonl: the file holds no problems"):
        load_benchmark("amc23", data)
    (data / "amc23.jsonl").write_text("\n  \n")
    # the model is a hub id that exists nowhere: had it loaded first, the error would be about the hub
    proc, seconds = _cli("--model", "no-such-org/no-such-model", "--data-dir", str(data), "--n", "2",
                         "--samples-dir", str(tmp_path / "samples"), "--tables-dir", str(tmp_path / "tables"), "--quiet")
    line = _one_error_line(proc)
    assert f"{data / 'amc23.jsonl'}: the file holds no problems" in line
    assert not (tmp_path / "samples").exists() and not (tmp_path / "tables").exists()


@needs_namespace
@pytest.mark.parametrize("options, where, reason", [
    ("ro", "samples", "read-only (Read-only file system); make it writable"),
    ("ro", "tables", "read-only (Read-only file system); make it writable"),
    ("size=256k", "tables", "disk full (No space left on device); free some space"),
])
def test_an_unwritable_output_folder_stops_the_run_before_sampling(tmp_path, options, where, reason):
    mount = tmp_path / "mnt"
    dirs = {"samples": tmp_path / "samples", "tables": tmp_path / "tables", where: mount / where}
    command = shlex.join([sys.executable, "-m", "eval.reproduce", "--runs-root", str(tmp_path / "none"),
                          "--toy-size", "1", "--n", "2", "--samples-dir", str(dirs["samples"]),
                          "--tables-dir", str(dirs["tables"]), "--quiet"])
    start = time.perf_counter()
    proc = _in_tmpfs(mount, options, command)
    line = _one_error_line(proc)
    assert line.startswith(f"error: --{where}-dir {dirs[where]}: {reason}")
    assert not list(tmp_path.rglob("part-*.parquet")) and not list(tmp_path.rglob(".write-probe-*"))
    assert time.perf_counter() - start < 30  # no model was loaded, nothing was sampled


def _table(correct: list[bool]):
    frame = pd.DataFrame({"method": "base", "benchmark": "Toy-1", "problem_id": [f"p{i // 2}" for i in range(len(correct))],
                          "sample_idx": [i % 2 for i in range(len(correct))], "correct": correct})
    return metric_table(summarise_samples(frame, 2, n_boot=50), "avg@2")


def test_a_failed_table_write_leaves_the_previous_files_whole(tmp_path, monkeypatch):
    paths = write_tables(_table([True, False, True, True]), tmp_path, "t")
    before = {p.name: p.read_bytes() for p in paths.values()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tables_mod, "numeric_frame", broken)  # the third file fails after two were written
    with pytest.raises(OSError, match="No space"):
        write_tables(_table([False, False, True, True]), tmp_path, "t")
    assert {p.name: p.read_bytes() for p in paths.values()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md", "t.tex"]


@needs_namespace
def test_tables_on_a_full_disk_stay_whole(tmp_path):
    mount = tmp_path / "mnt"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_user_errors_eval import _table\n"
        "from eval.tables import write_tables\n"
        f"out = Path({str(mount)!r})\n"
        "paths = write_tables(_table([True, False, True, True]), out, 't')\n"
        "before = {p: p.read_bytes() for p in paths.values()}\n"
        "with open(out / 'filler', 'wb', buffering=0) as fh:\n"
        "    try:\n"
        "        while True:\n"
        "            fh.write(bytes(4096))\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        "    write_tables(_table([False, False, False, True]), out, 't')\n"
        "    print('written')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.strerror)\n"
        "print(all(p.read_bytes() == b for p, b in before.items()), sorted(os.listdir(out)))\n"
    )
    proc = _in_tmpfs(mount, "size=128k", shlex.join([sys.executable, "-c", code]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["refused No space left on device",
                                        "True ['filler', 't.csv', 't.md', 't.tex']"]


def test_ctrl_c_says_what_was_kept_and_the_command_that_resumes(tmp_path):
    samples = tmp_path / "samples"
    args = ["--runs-root", str(tmp_path / "none"), "--toy-size", "1", "--n", "2", "--unit-size", "1",
            "--samples-dir", str(samples), "--tables-dir", str(tmp_path / "tables"), "--quiet", "--no-figure"]
    run = samples / "base" / "seed0"
    proc = subprocess.Popen([sys.executable, "-m", "eval.reproduce", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            # a shell without job control starts background jobs with SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(run.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    kept = ShardStore(run)
    n_shards, n_samples = len(kept.shards()), len(kept.keys())
    assert 1 <= n_shards < 6 and n_samples == 2 * n_shards
    plural = "" if n_shards == 1 else "s"
    prefix = f"interrupted: kept {n_samples} samples in {n_shards} shard{plural} under {samples}; rerun to resume: "
    assert line.startswith(prefix), line
    command = shlex.split(line[len(prefix):])
    assert command == [sys.executable, "-m", "eval.reproduce", *args]

    before = {p.name: p.read_bytes() for p in kept.shards()}
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert {p.name: p.read_bytes() for p in ShardStore(run).shards() if p.name in before} == before
    frame = read_records(run)
    assert len(frame) == 6 * 1 * 2 and not frame.duplicated(["benchmark", "problem_id", "sample_idx"]).any()


def test_demo_mistakes_cost_one_line():
    for args, needle in ((["--n", "0"], "argument --n: must be at least 1, got 0"),
                         (["--seed", "-1"], "argument --seed: must be a whole number >= 0, got -1"),
                         (["--toy-size", "-1"], "--toy-size must be a whole number >= 1, got -1")):
        proc, _ = _cli(*args, module="scripts/demo.py")
        assert needle in _one_error_line(proc)


def test_a_folder_of_other_samples_is_one_line_naming_what_differs(tmp_path):
    common = ["--runs-root", str(tmp_path / "none"), "--toy-size", "1", "--max-new-tokens", "20",
              "--samples-dir", str(tmp_path / "samples"), "--quiet", "--no-figure"]
    first, _ = _cli(*common, "--n", "2", "--tables-dir", str(tmp_path / "t2"))
    assert first.returncode == 0, first.stderr
    proc, _ = _cli(*common, "--n", "3", "--tables-dir", str(tmp_path / "t3"))
    line = _one_error_line(proc)
    assert line.startswith(f"error: {tmp_path / 'samples' / 'base' / 'seed0'} was made with other settings; "
                           "use the same settings, another folder, or delete it to start afresh. "
                           "sampling: on disk {'n': 2,")
    assert not (tmp_path / "t3").exists() or not list((tmp_path / "t3").glob("*.md"))


def test_demo_says_which_engine_samples(tmp_path):
    from repo_scripts import load_script

    demo = load_script("scripts/demo.py")
    engine_line, pick_engine = demo.engine_line, demo.pick_engine

    proc, _ = _cli("--toy-size", "1", "--n", "2", "--skip-analysis", "--quiet",
                   "--out-dir", str(tmp_path / "demo"), "--samples-dir", str(tmp_path / "samples"),
                   module="scripts/demo.py")
    assert proc.returncode == 0, proc.stderr
    engines = [line for line in proc.stdout.splitlines() if line.startswith("sampling engine:")]
    # by default, with or without vLLM installed: transformers, with the reason and how to get vLLM
    assert engines == [engine_line("hf")]
    assert engines[0] == ("sampling engine: transformers (HF), the faster one on the toy models, start-up "
                          "included (make bench compares them); make demo BACKEND=vllm samples with vLLM")
    for role in ("teacher", "student"):  # evaluate_toy's folders, sampled with the toy tiers' registered protocol
        manifest = json.loads((tmp_path / "samples" / "n2_tok96_size1" / role / "seed0" / "manifest.json").read_text())
        assert manifest["config"]["sampling"] == {"n": 2, "temperature": 0.6, "top_p": 0.95, "top_k": 20,
                                                  "max_new_tokens": 96, "repetition_penalty": 1.0, "seed": 0}
    assert pick_engine() == "hf"
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(UserError, match="--backend vllm needs vLLM"):
            pick_engine("vllm")
    else:
        assert pick_engine("vllm") == "vllm"
