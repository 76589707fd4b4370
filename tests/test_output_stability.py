"""Rerunning a writer with nothing changed leaves its files byte for byte as they were, manifests
included; figure folders list exactly their files; training figures need only committed data."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import train.methods as train_methods
import workbench.runs as runs
from analysis.figures import regenerate
from eval.curves import pass_at_k_curves, plot_pass_at_k_curves
from fake_analysis import write_analysis_tables
from repo_scripts import load_script
from workbench.records import ROLLOUT_SCHEMA, SAMPLE_SCHEMA, ShardStore
from workbench.runs import MANIFEST, REPO_ROOT, read_manifest, run_folder, write_manifest

toy_suite = load_script("scripts/toy_suite.py")


# ----------------------------------------------------------------------------------- inputs
def _raw_run(folder, method, seed, steps=3, groups=2, size=4):
    """A finished training run folder as scripts/toy_suite.py leaves it (the model aside)."""
    rng = np.random.default_rng(seed)
    rows = []
    for step in range(steps):
        for g in range(groups):
            for i in range(size):
                n = int(rng.integers(14, 47))
                rows.append({"benchmark": "toy-3", "problem_id": f"toy-3/train/{step}{g}", "prompt": "Q:1+2?A:",
                             "sample_idx": (step * groups + g) * size + i, "response": "1+2=3;\\boxed{3}",
                             "n_tokens": n, "finish_reason": "stop", "correct": i < size // 2, "extracted": "3",
                             "grade_error": None, "group_id": step * groups + g,
                             "student_logps": rng.uniform(-1, 0, n).tolist(),
                             "teacher_logps": rng.uniform(-1, 0, n).tolist(), "weight": float(rng.uniform(0, 1)),
                             "path": "mle" if i < size // 2 else "opd", "step": step, "generation": step,
                             "student_log_ppl": float(rng.uniform(0.1, 0.5)),
                             "teacher_log_ppl": float(rng.uniform(0.1, 1.0))})
    history = [{"loss": 1.0 / (s + 1), "entropy": 0.5 - 0.1 * s, "frac_correct": 0.25 + 0.125 * s,
                "timing/teacher_scoring_s": 0.01 * (s + 1), "step_time": 0.3, "epoch": s / steps, "step": s + 1}
               for s in range(steps)]
    history.append({"train_runtime": 3.2, "train_samples_per_second": 9.1, "train_steps_per_second": 0.9,
                    "total_flos": 0.0, "train_loss": 0.5, "epoch": 1.0, "step": steps})
    with run_folder(folder, {"method": method, "seed": seed, "output_dir": str(folder)}, seed, method=method):
        store = ShardStore(folder / "snapshots", ROLLOUT_SCHEMA)
        store.append(rows[len(rows) // 2:])  # written out of step order, as buffered shards can be
        store.append(rows[:len(rows) // 2])
        (folder / "log_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        (folder / "log_history.csv").write_text("loss,step\n1.0,1\n")
    return rows


def _samples(folder, rng, p_correct):
    ShardStore(folder, SAMPLE_SCHEMA).append([
        {"benchmark": b, "problem_id": f"{b}-{i}", "sample_idx": j, "prompt": "Q", "response": "R", "n_tokens": 1,
         "finish_reason": "stop", "correct": bool(rng.random() < p_correct), "extracted": "1", "grade_error": None}
        for b in ("toy-1", "toy-2") for i in range(5) for j in range(8)])


def _analysis_tables(folder, rng):
    """What `python -m analysis.cli toy` writes, from made-up rollouts (through the real writers)."""
    write_analysis_tables(folder, rng, n=24, ratios=(0.2, 0.6), n_boot=100, groups=6, float_format="%.6g")


def _results(tmp_path, rng):
    """A results folder as a clone has it, plus git-ignored ``runs/`` folders a clone lacks."""
    results = tmp_path / "results"
    _analysis_tables(results / "toy" / "analysis", rng)
    for method, seed in (("scope", 0), ("scope", 1), ("grpo", 0)):
        raw = results / "toy" / "runs" / method / f"seed{seed}"
        _raw_run(raw, method, seed)
        toy_suite.export_logs(raw, results / "toy" / "training_logs" / method / f"seed{seed}")
    for method, p in (("base", 0.3), ("scope", 0.5)):
        _samples(results / "toy" / "samples" / method / "seed0", rng, p)
    _samples(results / "runs" / "demo" / "teacher", rng, 0.9)  # git-ignored raw samples
    return results


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------- committed training logs
def test_export_keeps_only_what_the_training_figures_read(tmp_path):
    raw, dest = tmp_path / "runs" / "scope" / "seed0", tmp_path / "training_logs" / "scope" / "seed0"
    rows = _raw_run(raw, "scope", 0)
    written = toy_suite.export_logs(raw, dest)
    assert sorted(p.name for p in written) == ["log_history.csv", "snapshots.parquet"]

    history = pd.read_csv(dest / "log_history.csv")
    assert list(history.columns) == ["loss", "entropy", "frac_correct", "epoch", "step", "total_flos", "train_loss"]
    assert history["step"].tolist() == [1, 2, 3, 3]
    assert history["frac_correct"].tolist()[:3] == [0.25, 0.375, 0.5]
    assert history["loss"].iloc[2] == pytest.approx(1 / 3, abs=1e-6)  # "%.6g": 0.333333

    snap = pq.read_table(dest / "snapshots.parquet")
    assert snap.column_names == list(toy_suite.SNAPSHOT_COLUMNS)
    assert snap.schema.metadata is None  # no pandas version inside
    frame = snap.to_pandas()
    assert frame["sample_idx"].tolist() == list(range(24))  # step order, though the shards were not
    expected = pd.DataFrame(rows).sort_values("sample_idx").reset_index(drop=True)
    for column in ("step", "group_id", "correct", "path", "student_log_ppl", "teacher_log_ppl"):
        assert frame[column].tolist() == expected[column].tolist(), column
    assert frame["weight"].tolist() == expected["weight"].astype(np.float32).tolist()  # the store's float32

    manifest = read_manifest(dest)
    assert manifest["method"] == "scope" and manifest["seed"] == 0
    assert manifest["files"] == {p.name: _sha256(p) for p in written}
    assert manifest["trained"]["finished_at"] == read_manifest(raw)["finished_at"]
    before = _tree(dest)
    toy_suite.export_logs(raw, dest)
    assert _tree(dest) == before


def test_a_real_toy_run_exports_what_draws_its_figures(tmp_path):
    """The trainer's own log and snapshot columns, not made-up ones: two scope steps on the toy models."""
    threads = toy_suite.torch.get_num_threads()
    toy_suite.torch.set_num_threads(1)
    try:
        toy_suite.run_one("scope", 0, tmp_path / "runs", [
            "--max_steps", "2", "--toy_tiers", "toy-1", "--toy_problems_per_tier", "8",
            "--max_completion_length", "16", "--heldout_every", "1", "--heldout_problems_per_tier", "2"])
    finally:
        toy_suite.torch.set_num_threads(threads)
    logs = tmp_path / "results" / "toy" / "training_logs" / "scope" / "seed0"
    toy_suite.export_logs(tmp_path / "runs" / "scope" / "seed0", logs)
    history = pd.read_csv(logs / "log_history.csv")
    assert {"entropy", "frac_correct", "heldout/avg@4", "step"} <= set(history.columns)
    assert not [c for c in history.columns if "time" in c or "per_second" in c]
    snap = pd.read_parquet(logs / "snapshots.parquet")
    assert list(snap.columns) == list(toy_suite.SNAPSHOT_COLUMNS)
    assert sorted(set(snap["step"])) == [0, 1] and len(snap) == 2 * 32  # 4 prompts x 8 rollouts a step
    written = regenerate(tmp_path / "results")
    assert sorted(p.name for p in written) == ["training_dynamics.png", "weights_over_steps.png"]


def test_export_refuses_an_unfinished_run(tmp_path):
    write_manifest(tmp_path / "run", {}, 0, status="running")
    with pytest.raises(ValueError, match="has not finished"):
        toy_suite.export_logs(tmp_path / "run", tmp_path / "logs")


def test_train_toy_copies_the_logs_of_its_runs(tmp_path, monkeypatch):
    root = tmp_path / "results" / "toy" / "runs"
    _raw_run(root / "scope" / "seed0", "scope", 0, steps=48, groups=4, size=8)  # a toy recipe's run
    _raw_run(root / "kd" / "seed0", "kd", 0)
    for path in (root / "kd" / "seed0" / "snapshots").iterdir():  # kd keeps no snapshots
        path.unlink()
    (root / "kd" / "seed0" / "snapshots").rmdir()
    monkeypatch.setattr(train_methods, "train_run", lambda cfg: pytest.fail("finished runs are not retrained"))
    torch_threads = toy_suite.torch.get_num_threads()
    try:
        assert toy_suite.main(["--methods", "scope", "kd", "--seeds", "0", "--root", str(root)]) == 0
    finally:
        toy_suite.torch.set_num_threads(torch_threads)
    logs = tmp_path / "results" / "toy" / "training_logs"
    assert sorted(p.relative_to(logs).as_posix() for p in logs.rglob("*") if p.is_file()) == [
        "kd/seed0/log_history.csv", "kd/seed0/manifest.json",
        "scope/seed0/log_history.csv", "scope/seed0/manifest.json", "scope/seed0/snapshots.parquet"]
    raw = sum(p.stat().st_size for p in (root / "scope" / "seed0" / "snapshots").iterdir())
    kept = (logs / "scope" / "seed0" / "snapshots.parquet").stat().st_size
    assert kept < 60_000 and kept < raw / 5  # 1536 rollouts; six runs keep snapshots, far under 2 MB


# ---------------------------------------------------------------------------------- figures
def test_figures_and_tables_are_byte_stable_and_read_only_committed_data(tmp_path):
    results = _results(tmp_path, np.random.default_rng(0))
    out = tmp_path / "figures"
    regenerate(results, out)
    first = _tree(out)
    assert sorted(first) == sorted([
        *(f"toy-analysis/{n}.{ext}" for n in ("recovery_vs_ratio", "ppl_vs_recovery", "teacher_solve_by_bucket",
                                              "boundary_buckets", "boundary_scatter", "weights_by_path",
                                              "ess_vs_tau", "weight_vs_ppl") for ext in ("pdf", "png")),
        *(f"training/{n}.{ext}" for n in ("weights_over_steps", "training_dynamics") for ext in ("pdf", "png")),
        "eval/pass_at_k_toy.pdf", "eval/pass_at_k_toy.png",
        "toy-analysis/manifest.json", "training/manifest.json", "eval/manifest.json"])
    training = read_manifest(out / "training")
    assert [s.split("/results/")[1] for s in training["config"]["sources"]] == [
        "toy/training_logs/grpo/seed0", "toy/training_logs/scope/seed0", "toy/training_logs/scope/seed1"]
    evals = read_manifest(out / "eval")
    assert [s.split("/results/")[1] for s in evals["config"]["sources"]] == [
        "toy/samples/base/seed0", "toy/samples/scope/seed0"]  # not runs/demo/teacher

    pdf = (out / "eval" / "pass_at_k_toy.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf
    assert b"Software" not in (out / "eval" / "pass_at_k_toy.png").read_bytes()

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    regenerate(results, out)
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())  # really redrawn
    assert _tree(out) == first  # ... to the same bytes, manifests included

    tables = [tmp_path / "tables_a", tmp_path / "tables_b"]
    for folder in tables:
        _analysis_tables(folder, np.random.default_rng(1))
        samples = pd.concat([read_samples.assign(method=m, seed=0) for m, read_samples in (
            ("base", ShardStore(results / "toy" / "samples" / "base" / "seed0", SAMPLE_SCHEMA).read()),
            ("scope", ShardStore(results / "toy" / "samples" / "scope" / "seed0", SAMPLE_SCHEMA).read()))])
        plot_pass_at_k_curves(pass_at_k_curves(samples), folder / "curves")
    assert _tree(tables[0]) == _tree(tables[1])
    assert len(_tree(tables[0])) == 14


def _check_figure_folder(folder):
    manifest = read_manifest(folder)
    assert "files" in manifest, f"{folder}/{MANIFEST} lists no files: redraw with `make figures`"
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(manifest["files"]) == on_disk, folder
    assert all(manifest["files"][name] == _sha256(folder / name) for name in on_disk), folder
    assert sorted(f for figure in manifest["figures"] for f in figure["files"]) == on_disk, folder
    return manifest


def test_a_figure_folder_manifest_lists_exactly_its_files(tmp_path):
    rng = np.random.default_rng(2)
    results = tmp_path / "results"
    analysis = results / "toy" / "analysis"
    analysis.mkdir(parents=True)
    pd.DataFrame({"benchmark": "toy-3", "problem_id": np.repeat([f"g{i}" for i in range(6)], 4),
                  "sample_idx": np.tile(np.arange(4), 6), "correct": np.tile([True, True, False, False], 6),
                  "student_log_ppl": rng.uniform(0.01, 0.3, 24), "teacher_log_ppl": rng.uniform(0.1, 1.0, 24)}
                 ).to_csv(analysis / "weights_rollouts.csv", index=False)
    raw = tmp_path / "runs" / "opd" / "seed0"
    _raw_run(raw, "opd", 0)
    toy_suite.export_logs(raw, results / "toy" / "training_logs" / "opd" / "seed0")
    out = results / "figures"
    (out / "toy-analysis").mkdir(parents=True)
    (out / "toy-analysis" / "recovery_vs_ratio.png").write_bytes(b"drawn from inputs since deleted")

    regenerate(results)
    manifest = _check_figure_folder(out / "toy-analysis")
    assert [f["name"] for f in manifest["figures"]] == ["weights_by_path", "ess_vs_tau", "weight_vs_ppl"]
    assert _check_figure_folder(out / "training")["files"].keys() == {
        "weights_over_steps.pdf", "weights_over_steps.png", "training_dynamics.pdf", "training_dynamics.png"}

    (results / "toy" / "training_logs" / "opd" / "seed0" / "snapshots.parquet").unlink()
    regenerate(results)
    assert [f["name"] for f in _check_figure_folder(out / "training")["figures"]] == ["training_dynamics"]
    for path in (results / "toy" / "training_logs").rglob("*"):
        if path.is_file():
            path.unlink()
    regenerate(results)
    assert not (out / "training").exists()  # nothing left to draw it from
    _check_figure_folder(out / "toy-analysis")


def test_committed_figures_are_listed_and_drawn_from_committed_data():
    figures = REPO_ROOT / "results" / "figures"
    folders = sorted(p for p in figures.iterdir() if p.is_dir())
    assert folders, "no committed figure folders"
    for folder in folders:
        manifest = _check_figure_folder(folder)
        for figure in manifest["figures"]:
            for source in figure["inputs"]:
                assert "runs" not in source.split("/"), f"{folder.name}/{figure['name']} is drawn from {source}"
                assert (REPO_ROOT / source).exists(), f"{folder.name}/{figure['name']}: {source} is not committed"


# -------------------------------------------------------------------------------- manifests
def test_a_manifest_is_kept_while_its_outputs_and_config_stay_the_same(tmp_path, monkeypatch):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "grades.sqlite").write_bytes(b"cache")  # a cache beside the outputs: not listed
    write_manifest(tmp_path, {"n": 8}, 0, seconds=5.8)
    first = (tmp_path / MANIFEST).read_text()
    assert json.loads(first)["files"] == {"table.csv": hashlib.sha256(b"a,b\n1,2\n").hexdigest()}

    monkeypatch.setattr(runs, "_now", lambda: "2031-01-01T00:00:00+00:00")
    monkeypatch.setattr(runs, "git_state", lambda: {"commit": "f" * 40, "dirty": False})
    (tmp_path / "grades.sqlite").write_bytes(b"more cache")
    write_manifest(tmp_path, {"n": 8}, 0, seconds=7.5)  # a later run, same bytes
    assert (tmp_path / MANIFEST).read_text() == first

    (tmp_path / "table.csv").write_text("a,b\n1,3\n")
    write_manifest(tmp_path, {"n": 8}, 0, seconds=7.5)
    changed = read_manifest(tmp_path)
    assert changed["started_at"] == "2031-01-01T00:00:00+00:00" and changed["git"]["commit"] == "f" * 40
    assert changed["seconds"] == 7.5
    assert changed["files"]["table.csv"] == hashlib.sha256(b"a,b\n1,3\n").hexdigest()

    write_manifest(tmp_path, {"n": 16}, 0, seconds=7.5)
    assert read_manifest(tmp_path)["config"] == {"n": 16}


def test_a_run_rerun_that_changes_nothing_keeps_its_manifest(tmp_path, monkeypatch):
    folder = tmp_path / "samples"
    with run_folder(folder, {"n": 4}, 0):
        (folder / "part-0.parquet").write_bytes(b"rows")
    first = (folder / MANIFEST).read_text()
    assert json.loads(first)["status"] == "finished"

    monkeypatch.setattr(runs, "_now", lambda: "2031-01-01T00:00:00+00:00")
    with run_folder(folder, {"n": 4}, 0):
        assert read_manifest(folder)["status"] == "running"  # a crash now would show
    assert (folder / MANIFEST).read_text() == first

    with run_folder(folder, {"n": 4}, 0):
        (folder / "part-1.parquet").write_bytes(b"more rows")
    rerun = read_manifest(folder)
    assert rerun["status"] == "finished" and rerun["started_at"] == rerun["finished_at"] == "2031-01-01T00:00:00+00:00"
    assert sorted(rerun["files"]) == ["part-0.parquet", "part-1.parquet"]


def test_paths_in_the_repository_are_recorded_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", [str(REPO_ROOT / "scripts" / "demo.py"), "--out",
                                           str(REPO_ROOT / "results" / "x"), "--data", str(tmp_path)])
    write_manifest(tmp_path, {"model": str(REPO_ROOT / "workbench" / "toy" / "assets" / "student"),
                              "root": REPO_ROOT, "elsewhere": str(tmp_path)}, None, source=REPO_ROOT / "results")
    manifest = read_manifest(tmp_path)
    assert manifest["config"] == {"model": "workbench/toy/assets/student", "root": ".", "elsewhere": str(tmp_path)}
    assert manifest["source"] == "results"
    assert manifest["command"].endswith(f" --out results/x --data {tmp_path}")
    assert str(REPO_ROOT) not in json.dumps(manifest)
