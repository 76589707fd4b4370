"""`regenerate` draws every figure its inputs support, skips the rest, and writes manifests."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.figures import find_eval_folders, regenerate
from fake_analysis import write_analysis_tables
from analysis.rollouts import ANALYSIS_KIND
from workbench.records import ROLLOUT_SCHEMA, SAMPLE_SCHEMA, ShardStore
from workbench.runs import write_manifest


def _analysis_tables(folder, rng):
    write_analysis_tables(folder, rng)


def _training_run(folder, rng, steps=(0, 1, 2)):
    rows = []
    for step in steps:
        for g in range(3):
            for i in range(4):
                rows.append({"benchmark": "toy-3", "problem_id": f"t{g}", "sample_idx": step * 12 + g * 4 + i,
                             "prompt": "Q:1+2*3?A:", "response": "x", "n_tokens": 1, "finish_reason": "stop",
                             "correct": i < 2, "extracted": "9", "grade_error": None, "group_id": step * 3 + g,
                             "student_logps": [], "teacher_logps": [], "weight": 0.5, "path": "mle" if i < 2 else "opd",
                             "step": step, "student_log_ppl": float(rng.uniform(0.1, 0.5)),
                             "teacher_log_ppl": float(rng.uniform(0.1, 1.0))})
    ShardStore(folder / "snapshots", ROLLOUT_SCHEMA).append(rows)
    history = [{"step": s + 1, "loss": 1.0 / (s + 1), "entropy": 0.5 - 0.1 * s, "frac_correct": 0.3 + 0.1 * s}
               for s in steps] + [{"step": len(steps), "train_runtime": 3.2}]
    (folder / "log_history.jsonl").write_text("\n".join(json.dumps(h) for h in history) + "\n")


def _samples(folder, rng, p_correct):
    ShardStore(folder, SAMPLE_SCHEMA).append([
        {"benchmark": b, "problem_id": f"{b}-{i}", "sample_idx": j, "prompt": "Q", "response": "R", "n_tokens": 1,
         "finish_reason": "stop", "correct": bool(rng.random() < p_correct), "extracted": "1", "grade_error": None}
        for b in ("toy-1", "toy-2") for i in range(5) for j in range(8)])


def test_regenerate_draws_what_the_results_support(tmp_path):
    rng = np.random.default_rng(0)
    results = tmp_path / "results"
    _analysis_tables(results / "toy" / "analysis", rng)
    for method, seed in (("scope", 0), ("scope", 1), ("opd", 0)):
        _training_run(results / "toy" / "training_logs" / method / f"seed{seed}", rng)
    _training_run(results / "toy" / "runs" / "kd" / "seed0", rng)  # git-ignored: not drawn
    for method, p in (("base", 0.3), ("scope", 0.5)):
        _samples(results / "toy" / "samples" / method / "seed0", rng, p)
    stage = results / "runs" / "toy-analysis"
    write_manifest(stage, {}, 0, kind=ANALYSIS_KIND)
    _samples(stage / "teacher_scratch", rng, 0.9)  # an analysis stage, not an evaluation

    assert [f.relative_to(results).as_posix() for f in find_eval_folders(results)] == [
        "toy/samples/base/seed0", "toy/samples/scope/seed0"]
    written = regenerate(results, tmp_path / "figures")
    names = sorted(p.relative_to(tmp_path / "figures").as_posix() for p in written)
    assert names == sorted([
        *(f"toy-analysis/{n}.png" for n in ("recovery_vs_ratio", "ppl_vs_recovery", "teacher_solve_by_bucket",
                                            "boundary_buckets", "boundary_scatter", "weights_by_path",
                                            "ess_vs_tau", "weight_vs_ppl")),
        "training/weights_over_steps.png", "training/training_dynamics.png", "eval/pass_at_k_toy.png",
    ])
    for path in written:
        assert path.stat().st_size > 5000 and path.with_suffix(".pdf").stat().st_size > 5000
    manifest = json.loads((tmp_path / "figures" / "eval" / "manifest.json").read_text())
    assert [f["name"] for f in manifest["figures"]] == ["pass_at_k_toy"]
    assert all("toy-analysis" not in s for s in manifest["config"]["sources"])
    training = json.loads((tmp_path / "figures" / "training" / "manifest.json").read_text())
    assert len(training["config"]["sources"]) == 3


def test_regenerate_skips_absent_inputs(tmp_path, caplog):
    (tmp_path / "results").mkdir()
    with caplog.at_level("INFO"):
        assert regenerate(tmp_path / "results") == []
    assert "skipping Pass@k curves" in caplog.text and "skipping training dynamics" in caplog.text
    with pytest.raises(FileNotFoundError):
        regenerate(tmp_path / "absent")
