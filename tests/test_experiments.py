"""The toy experiments' statistics against hand computations, and one tiny end-to-end run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import experiment_report
from analysis.experiments import (
    EXPERIMENTS, ExperimentConfig, analyse, change_from_base, detectable_effect, paired_difference, pass_at_k_curves,
    per_seed_scores, t_interval, variants_of,
)
from workbench.errors import UserError
from workbench.layout import REPO_ROOT


def _counts() -> pd.DataFrame:
    # Two tiers of two problems, n = 4; opd and scope with seeds 0 and 1.
    rows = []
    table = {
        ("opd", 0): {("toy-1", "a"): 4, ("toy-1", "b"): 0, ("toy-2", "a"): 2, ("toy-2", "b"): 1},
        ("opd", 1): {("toy-1", "a"): 3, ("toy-1", "b"): 1, ("toy-2", "a"): 2, ("toy-2", "b"): 0},
        ("scope", 0): {("toy-1", "a"): 4, ("toy-1", "b"): 2, ("toy-2", "a"): 3, ("toy-2", "b"): 1},
        ("scope", 1): {("toy-1", "a"): 4, ("toy-1", "b"): 1, ("toy-2", "a"): 4, ("toy-2", "b"): 0},
    }
    for (variant, seed), cells in table.items():
        for (tier, pid), c in cells.items():
            rows.append({"variant": variant, "seed": seed, "benchmark": tier, "problem_id": pid, "n": 4, "c": c})
    return pd.DataFrame(rows)


def test_per_seed_scores_by_hand():
    scores = per_seed_scores(_counts(), k=2).set_index(["variant", "seed", "benchmark"])
    # opd seed 0, toy-1: Avg = (4/4 + 0/4) / 2 = 50 %; Pass@2 = (1 + 0) / 2 = 50 %.
    assert scores.loc[("opd", 0, "toy-1"), "avg"] == pytest.approx(50.0)
    assert scores.loc[("opd", 0, "toy-1"), "pass"] == pytest.approx(50.0)
    # opd seed 0, toy-2: Avg = (2/4 + 1/4) / 2 = 37.5; Pass@2 = (1 - C(2,2)/C(4,2)) / 2 + (1 - C(3,2)/C(4,2)) / 2
    expected = 100 * ((1 - 1 / 6) + (1 - 3 / 6)) / 2
    assert scores.loc[("opd", 0, "toy-2"), "pass"] == pytest.approx(expected)
    # the Average is the unweighted mean of the two tiers
    assert scores.loc[("opd", 0, "Average"), "avg"] == pytest.approx((50.0 + 37.5) / 2)


def test_t_interval_and_detectable_effect_by_hand():
    half, sd = t_interval(np.array([1.0, 2.0, 3.0]))
    assert sd == pytest.approx(1.0)
    assert half == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, 2) = 4.3027
    # (t(0.975, 4) + t(0.80, 4)) * sd / sqrt(5) = (2.7764 + 0.9410) * 2 / 2.2361
    assert detectable_effect(2.0, 5) == pytest.approx((2.7764451 + 0.9409646) * 2 / math.sqrt(5), rel=1e-6)


def test_paired_difference_is_per_seed():
    scores = per_seed_scores(_counts(), k=4)
    paired = paired_difference(scores, "scope", "opd").set_index(["benchmark", "metric"])
    # toy-1 Avg: scope (75, 62.5) - opd (50, 50) = (25, 12.5): mean 18.75, sd 8.839, half = 12.706 * 8.839 / sqrt 2
    row = paired.loc[("toy-1", "avg")]
    assert row["difference"] == pytest.approx(18.75)
    assert row["ci"] == pytest.approx(12.706204736 * np.std([25, 12.5], ddof=1) / math.sqrt(2), rel=1e-6)
    assert row["seeds"] == 2


def test_pass_at_k_curve_at_k1_equals_avg():
    counts = _counts()
    curves = pass_at_k_curves(counts, [1, 4])
    scores = per_seed_scores(counts, k=4).query("benchmark == 'Average'").set_index(["variant", "seed"])
    at1 = curves[curves["k"] == 1].set_index(["method", "seed"])["value"]
    for key, value in at1.items():
        assert value == pytest.approx(scores.loc[key, "avg"])


def test_config_and_names_are_checked():
    with pytest.raises(UserError, match="at least 2 distinct seeds"):
        ExperimentConfig(seeds=(0,))
    with pytest.raises(UserError, match="unknown toy tiers"):
        ExperimentConfig(tiers=("toy-9",))
    with pytest.raises(UserError, match="unknown experiment"):
        variants_of("nope")
    names = {v.name for v in EXPERIMENTS["dpaw"]}
    assert {"scope", "scope-no_dpaw", "scope-no_student_weight", "scope-no_teacher_weight",
            "scope-opposite_student", "scope-opposite_teacher", "scope-authors_code", "opd-8"} == names


def test_change_from_base_is_paired_by_seed():
    # base sampled once per seed: 50 and 60 at k = 1; the method 70 and 90 -> changes 20 and 30, mean 25,
    # half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 7.071 / 1.414 = 63.53 (the base's noise is inside it)
    curves = pd.DataFrame({"method": ["base", "base", "scope", "scope"], "seed": [0, 1, 0, 1], "k": [1, 1, 1, 1],
                           "value": [50.0, 60.0, 70.0, 90.0]})
    change = change_from_base(curves)
    assert change[["method", "k"]].values.tolist() == [["scope", 1]]
    assert change["change"].iat[0] == pytest.approx(25.0)
    assert change["ci"].iat[0] == pytest.approx(63.53, abs=0.01)


def test_report_writes_tables_and_figures(tmp_path: Path):
    counts = _counts()
    counts = pd.concat([counts, counts[counts["variant"] == "opd"].assign(variant="base")])
    result = analyse("main", counts, n=4)
    written = experiment_report.write(result, 4, tmp_path, "note")
    names = {p.name for p in written}
    assert {"table.md", "summary.csv", "paired.csv", "toy_main.png", "toy_paradox.png", "pass_at_k.csv"} <= names
    text = (tmp_path / "table.md").read_text()
    assert "scope - opd" in text and "opd - base" in text


def test_a_redraw_keeps_the_provenance_of_the_run_that_made_the_counts(tmp_path: Path, monkeypatch):
    cfg = ExperimentConfig(seeds=(0, 1), n=4, tiers=("toy-1", "toy-2"), results=tmp_path)
    counts = _counts()
    result = analyse("main", pd.concat([counts, counts[counts["variant"] == "opd"].assign(variant="base")]), n=4)
    result.wall_seconds = {"training_runs_wall_s_sum": 120.0, "sampling_jobs_wall_s_sum": 30.0}
    experiment_report.save(result, cfg)
    made = json.loads((tmp_path / "main" / "manifest.json").read_text())
    assert made["wall_seconds"]["training_runs_wall_s_sum"] == 120.0 and made["wall_seconds"]["reporting_s"] > 0
    (tmp_path / "main" / "table.md").write_text("stale")  # a redraw must write the tables again
    experiment_report.redraw("main", tmp_path)
    # the same bytes again: the manifest of the run that made them stays as it was
    assert json.loads((tmp_path / "main" / "manifest.json").read_text()) == made
    # drawn differently (here: another note): a new manifest, which names the run that made the counts
    monkeypatch.setattr(experiment_report, "note", lambda cfg: "another note")
    experiment_report.redraw("main", tmp_path)
    again = json.loads((tmp_path / "main" / "manifest.json").read_text())
    assert again["files"] != made["files"]
    assert again["produced_by"]["command"] == made["command"]
    assert again["produced_by"]["started_at"] == made["started_at"]
    assert again["wall_seconds"]["training_runs_wall_s_sum"] == 120.0
    assert again["wall_seconds"]["sampling_jobs_wall_s_sum"] == 30.0
    assert "another note" in (tmp_path / "main" / "table.md").read_text()


def test_a_bad_setting_is_one_line_before_anything_loads():
    done = subprocess.run([sys.executable, "scripts/toy_experiments.py", "main", "--seeds", "1"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: experiments need at least 2 distinct seeds for an interval, got [0]"]
    done = subprocess.run([sys.executable, "scripts/toy_experiments.py", "mian"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: argument experiment: invalid choice: 'mian' (choose from 'main', 'dpaw', 'tau') "
        "(see python scripts/toy_experiments.py --help)"]


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tmp_path: Path):
    """Two seeds of two steps on two tiers: trains, samples, resumes without redoing anything."""
    code = f"""
import sys
from pathlib import Path
from analysis.experiments import ExperimentConfig, run
root = Path({str(tmp_path)!r})
cfg = ExperimentConfig(seeds=(0, 1), max_steps=1, problems_per_tier=2, n=2, workers=1, tiers=("toy-2",),
                       runs=root / "runs", samples=root / "samples", results=root / "results")
if __name__ == "__main__":
    first = run("tau", cfg)
    again = run("tau", cfg)
    assert again.timings.empty, again.timings
    pd_equal = first.counts.equals(again.counts)
    print("trained", len(first.timings), "equal", pd_equal)
"""
    script = tmp_path / "tiny.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 10 equal True" in done.stdout


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS
                                  if (experiment_report.EXPERIMENT_RESULTS / n / "counts.csv.gz").is_file()])
def test_committed_tables_recompute_from_committed_counts(name: str):
    """Every committed summary, paired table, Pass@k curve and table.md is what the committed counts give."""
    folder = experiment_report.EXPERIMENT_RESULTS / name
    result, cfg = experiment_report.load(name)
    pd.testing.assert_frame_equal(result.summary.round(3), pd.read_csv(folder / "summary.csv"), check_dtype=False)
    pd.testing.assert_frame_equal(result.paired.round(4), pd.read_csv(folder / "paired.csv"), check_dtype=False)
    if result.curves is not None:
        pd.testing.assert_frame_equal(result.curves.round(4), pd.read_csv(folder / "pass_at_k.csv"),
                                      check_dtype=False)
    assert (folder / "table.md").read_text() == experiment_report.markdown(result, cfg.n, experiment_report.note(cfg))
