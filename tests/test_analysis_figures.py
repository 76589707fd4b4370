"""`regenerate` draws every figure its inputs support, skips the rest, and writes manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.boundary import BoundaryConfig, analyse_boundary, solve_counts, write_boundary
from analysis.corrective import CorrectiveConfig, analyse_recovery, write_recovery
from analysis.figures import find_eval_folders, regenerate
from analysis.rollouts import ANALYSIS_KIND
from workbench.records import ROLLOUT_SCHEMA, SAMPLE_SCHEMA, ShardStore
from workbench.runs import write_manifest


def _analysis_tables(folder, rng):
    n = 40
    wrong = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"p{i}" for i in range(n)], "sample_idx": 0,
                          "teacher_log_ppl": rng.uniform(0.05, 0.8, n)})
    rows = []
    for ratio in (0.2, 0.4, 0.6, 0.8):
        for i, lp in enumerate(wrong["teacher_log_ppl"]):
            p = max(0.0, 0.9 - ratio - 0.5 * lp)
            for j in range(4):
                rows.append({"benchmark": "toy-3", "problem_id": f"p{i}", "sample_idx": 0, "ratio": ratio,
                             "cont_idx": j, "correct": bool(rng.random() < p), "prefix_chars": 6,
                             "response_chars": 21, "at_separator": True})
    solve = pd.DataFrame({"benchmark": "toy-3", "problem_id": wrong["problem_id"],
                          "teacher_solve_rate": rng.choice([0.5, 0.75, 1.0], n)})
    write_recovery(analyse_recovery(wrong, pd.DataFrame(rows), CorrectiveConfig(n_boot=200), solve), folder)
    correct = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"q{i}" for i in range(n)], "sample_idx": 1,
                            "student_log_ppl": rng.uniform(0.01, 0.3, n)})
    samples = pd.DataFrame([{"benchmark": "toy-3", "problem_id": f"q{i}", "sample_idx": j,
                             "correct": bool(rng.random() < 0.9 - 2 * lp)}
                            for i, lp in enumerate(correct["student_log_ppl"]) for j in range(8)])
    write_boundary(analyse_boundary(correct, solve_counts(samples), BoundaryConfig(n_boot=200)), folder)
    pd.DataFrame({"benchmark": "toy-3", "problem_id": np.repeat([f"g{i}" for i in range(10)], 4),
                  "sample_idx": np.tile(np.arange(4), 10), "correct": np.tile([True, True, False, False], 10),
                  "student_log_ppl": rng.uniform(0.01, 0.3, 40), "teacher_log_ppl": rng.uniform(0.1, 1.0, 40)}
                 ).to_csv(folder / "weights_rollouts.csv", index=False)


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
