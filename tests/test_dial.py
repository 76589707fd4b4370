"""The spread dial: trial-and-check and hunch solutions, the dose-response statistics against hand computations, the
committed tables against their committed counts, and the quick dose-response end to end."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import dial
from workbench.layout import REPO_ROOT, TOY_RESULTS
from workbench.toy import DIAL_DIR, DIAL_WORLDS, STUDENT_DIR, dial_student_dir
from workbench.grading import grade
from workbench.toy.task import hunch_solution, solution_steps, solve, toy_problems, trial_solution

TOY_RESULTS_SPREAD = TOY_RESULTS / "spread"


@pytest.mark.parametrize("trials", [0, 1, 5])
def test_trial_solution_rejects_wrong_candidates_then_writes_each_result(trials: int):
    rng = random.Random(3)
    for tier in ("toy-1", "toy-4", "toy-6"):
        for p in toy_problems(tier, 20):
            text = trial_solution(p["problem"], trials, rng)
            body, boxed = text.rsplit(";", 1)
            assert boxed == f"\\boxed{{{solve(p['problem'])}}}"
            steps = body.split(";")
            results = [r for *_, r in solution_steps(p["problem"])]
            assert len(steps) == len(results)
            for written, result in zip(steps, results):
                assert re.fullmatch(r"\d+", written) and len(written) == trials + 1
                assert written[-1] == str(result)
                assert str(result) not in written[:-1]  # a rejected candidate is never the right one


def test_written_trials_keep_each_operation():
    rng = random.Random(1)
    problem = "Q:3+5*2?A:"
    text = trial_solution(problem, 2, rng, written=True)
    first, second, boxed = text.split(";")
    assert first.startswith("3+5=") and len(first) == 4 + 3 and first[-1] == "8" and "8" not in first[4:-1]
    assert second.startswith("8*2=") and second[-1] == "6" and boxed == "\\boxed{6}"


def test_trial_solution_has_many_valid_forms():
    # With 5 candidates a step, from 9 wrong digits each, a 3-step problem has 9^15 right ways to be written.
    rng = random.Random(0)
    problem = toy_problems("toy-3", 1)[0]["problem"]
    assert len({trial_solution(problem, 5, rng) for _ in range(50)}) == 50
    with pytest.raises(ValueError):
        trial_solution(problem, -1, rng)


def test_hunch_solution_guesses_then_derives():
    rng = random.Random(3)
    problem = "Q:3+5*2?A:"
    text = hunch_solution(problem, 4, "full", rng)
    # "?" + four digits + "!" + the reference derivation of 3+5=8, 8*2=16 -> 6 (mod 10)
    assert re.fullmatch(r"\?\d{4}!3\+5=8;8\*2=6;\\boxed\{6\}", text), text
    assert grade(text, "6", "toy-2").correct and not grade(text, "8", "toy-2").correct
    # the guesses are any digit, the right one included: 10^12 ways to open a 12-guess response
    guesses = [hunch_solution(problem, 12, "terse", rng)[1:13] for _ in range(2000)]
    counts = np.bincount([int(d) for g in guesses for d in g], minlength=10)
    assert counts.min() > 0.9 * 2400 and counts.max() < 1.1 * 2400 and len(set(guesses)) == 2000
    with pytest.raises(ValueError):
        hunch_solution(problem, 0, "full", rng)


def _build_toy():
    """The build script as a module (it lives in scripts/, outside the packages)."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import build_toy
    finally:
        sys.path.pop(0)
    return build_toy


def test_dial_worlds_match_the_build_script():
    build_toy = _build_toy()
    assert tuple(build_toy.DIAL_WORLDS) == DIAL_WORLDS
    assert build_toy.DIAL_WORLDS["low"] is None and dial_student_dir("low") == STUDENT_DIR
    # every built world goes on from the committed student with the same schedule; only the trial knobs differ
    assert (REPO_ROOT / build_toy.DIAL_FINETUNE.init).resolve() == STUDENT_DIR.resolve()
    knobs = ("trial_fraction", "trials_per_step", "trials_written", "hunch_fraction", "hunches")
    for world, spec in build_toy.DIAL_WORLDS.items():
        if spec is None:
            continue
        # one way of wandering a world: trial and check, or guesses before the derivation
        assert (spec.trial_fraction > 0 and spec.trials_per_step > 0) != (spec.hunch_fraction > 0 and spec.hunches > 0)
        assert {k: v for k, v in vars(spec).items() if k not in knobs} == \
            {k: v for k, v in vars(build_toy.DIAL_FINETUNE).items() if k not in knobs}
        assert spec.style_weights == build_toy.STUDENT_TRAIN.style_weights
        assert dial_student_dir(world) == DIAL_DIR / world / "student"


def test_every_dial_world_writes_within_the_token_budget():
    # the longest row a world teaches (toy-6, every step in the full style) must fit the sampling budget, or the
    # student would learn responses that sampling truncates and grades wrong
    build_toy = _build_toy()
    from workbench.data import TOY_MAX_NEW_TOKENS

    problem = toy_problems("toy-6", 1)[0]["problem"]
    rng = random.Random(0)
    for world, spec in build_toy.DIAL_WORLDS.items():
        if spec is None:
            continue
        longest = (hunch_solution(problem, spec.hunches, "full", rng) if spec.hunches
                   else trial_solution(problem, spec.trials_per_step, rng, spec.trials_written))
        assert len(longest) <= TOY_MAX_NEW_TOKENS, (world, len(longest))


def test_holm_matches_hand_computation():
    # p = (0.01, 0.04, 0.03, nan): sorted 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    adjusted = dial.holm([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
    assert dial.holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_trace_reads_heldout_ess_and_compute(tmp_path: Path):
    rows = [{"step": 0, "heldout/avg@4": 0.5},
            {"step": 1, "weights/ess_mle": 3.0, "weights/size_mle": 4.0, "weights/ess_opd": 1.5,
             "weights/size_opd": 2.0, "completions/mean_length": 20.0},
            {"step": 1, "heldout/avg@4": 0.75}, {"train_runtime": 3.0}]
    (tmp_path / "log_history.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"per_device_train_batch_size": 32}}))
    trace = dial.trace_of(tmp_path).set_index("step")
    assert trace.loc[0, "heldout"] == 50.0 and trace.loc[1, "heldout"] == 75.0
    assert trace.loc[1, "ess_frac_mle"] == 0.75 and trace.loc[1, "ess_frac_opd"] == 0.75
    assert trace.loc[1, "rollouts_per_update"] == 32 and trace.loc[1, "completion_tokens_per_update"] == 640.0


def _committed_worlds() -> list[str]:
    return [w for w in DIAL_WORLDS if (DIAL_DIR / w / "dose" / dial.COUNTS_FILE).is_file()]


@pytest.mark.parametrize("world", _committed_worlds())
def test_committed_dose_tables_recompute_from_committed_counts(world: str):
    folder = DIAL_DIR / world / "dose"
    result, cfg = dial.load(world)
    for name, frame in (("summary.csv", result.summary), ("paired.csv", result.paired),
                        ("compute.csv", result.compute)):
        committed = pd.read_csv(folder / name)
        digits = 4 if name == "paired.csv" else 3
        pd.testing.assert_frame_equal(frame.round(digits).reset_index(drop=True), committed, check_dtype=False)
    assert (folder / "table.md").read_text() == dial.markdown(result, cfg, dial.spread_ess_of(world))


def test_committed_dose_response_table_recomputes():
    path = DIAL_DIR / "report" / "dose_response.csv"
    if not _committed_worlds():
        assert not path.is_file(), "a dose-response report without any world's counts"
        return
    pd.testing.assert_frame_equal(dial.dose_response().round(4), pd.read_csv(path), check_dtype=False)


def test_committed_dial_figures_redraw_byte_for_byte_from_committed_data(tmp_path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_dial", REPO_ROOT / "scripts" / "toy_dial.py")
    toy_dial = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy_dial)
    worlds = _committed_worlds()
    toy_dial.draw_figures(DIAL_DIR, worlds, tmp_path)
    drawn = sorted(p.name for p in tmp_path.iterdir())
    assert drawn == sorted(f"{stem}.{ext}" for stem in ("dose_response", "spread", *(f"curves_{w}" for w in worlds))
                           for ext in ("pdf", "png"))
    for name in drawn:
        assert (tmp_path / name).read_bytes() == (DIAL_DIR / "report" / name).read_bytes(), name


@pytest.mark.slow
def test_quick_dose_response_end_to_end(tmp_path: Path):
    """The CI variant: every variant trained and sampled, base with its own sampling seeds, tables from counts."""
    done = subprocess.run([sys.executable, "scripts/toy_dial.py", "run", "--quick", "--workers", "1",
                           "--results", str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "low" / "dose"
    counts = pd.read_csv(out / dial.COUNTS_FILE, dtype={"problem_id": str})
    names = {v.name for v in dial.variants(dial.DoseConfig())}
    assert set(counts["variant"]) == names
    assert counts.groupby("variant")["seed"].nunique().eq(2).all()
    assert set(counts["benchmark"]) == {"toy-1", "toy-2"} and counts["n"].eq(2).all()
    # the base student was sampled with sampling seeds 0 and 1, the trained checkpoints with seed 0
    sample_root = tmp_path / "samples" / "low"
    base_dirs = sorted(sample_root.glob("*/base/seed*"))
    assert [d.name for d in base_dirs] == ["seed0", "seed1"]
    compute = pd.read_csv(out / "compute.csv").set_index("variant")
    assert compute.loc["scope", "rollouts_per_update"] == 32 and compute.loc["opd", "rollouts_per_update"] == 4
    assert compute.loc["opd-32x1", "rollouts_per_update"] == 32 and compute.loc["opd-8xsteps", "steps"] == 16
    # the same rollouts in total: SCOPE (2 x 32), OPD-32x1 (2 x 32) and OPD 8x steps (16 x 4)
    assert compute.loc[["scope", "opd-32x1", "opd-8xsteps"], "rollouts_total"].eq(64).all()
    assert compute.loc["scope-uniform", "train_ess_frac_mle"] == pytest.approx(1.0)
    traces = pd.read_csv(out / dial.TRACES_FILE)
    assert set(traces.dropna(subset=["heldout"])["step"]) >= {0, 1, 2}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and "toy_dial.py" in json.dumps(manifest["command"])
    assert {"training_runs_wall_s_sum", "sampling_jobs_wall_s_sum", "reporting_s"} <= set(manifest["wall_seconds"])
    assert manifest["git"] and manifest["versions"]
    # the tables recompute from what was written
    result, cfg = dial.load("low", tmp_path)
    pd.testing.assert_frame_equal(result.summary.round(3), pd.read_csv(out / "summary.csv"), check_dtype=False)
    assert (out / "table.md").read_text() == dial.markdown(result, cfg, dial.spread_ess_of("low"))
    assert "Pass@2 (unbiased, Chen et al.)" in (out / "table.md").read_text()


def _readme_dial_paragraph() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start, end = text.find("<!-- dial-numbers -->"), text.find("<!-- /dial-numbers -->")
    return text[start:end] if start >= 0 and end > start else ""


def test_readme_dial_numbers_are_the_committed_ones():
    """Every "x ± y" in the README's dose-response paragraph is a committed paired difference (Average, Avg@n) or
    a committed mean; every ESS/n it quotes is in a committed ess.csv."""
    paragraph = _readme_dial_paragraph()
    worlds = _committed_worlds()
    if not worlds:
        assert not paragraph, "the README quotes dose-response numbers that no committed run backs"
        return
    assert paragraph, "committed dose-response runs but no <!-- dial-numbers --> paragraph in the README"
    allowed: set[tuple[str, str]] = set()
    for world in worlds:
        folder = DIAL_DIR / world / "dose"
        paired = pd.read_csv(folder / "paired.csv")
        for d, c in zip(paired["difference"], paired["ci"]):
            allowed.add((f"{d:+.1f}", f"{c:.1f}"))
            allowed.add((f"{d:+.2f}", f"{c:.2f}"))
        summary = pd.read_csv(folder / "summary.csv")
        for m, c in zip(summary["avg"], summary["avg_ci"]):
            allowed.add((f"{m:.1f}", f"{c:.1f}"))
    for low in worlds:  # the report's contrasts of the SCOPE - uniform gap between two worlds
        for high in worlds:
            if low != high:
                contrast = dial.gap_contrast(DIAL_DIR, low=low, high=high)
                allowed.add((f"{contrast['difference']:+.2f}", f"{contrast['ci']:.2f}"))
    quoted = re.findall(r"([+−-]?\d+\.\d+) ± (\d+\.\d+)", paragraph)
    assert quoted, "the paragraph quotes no interval"
    for mean, half in quoted:
        assert (mean.replace("−", "-"), half) in allowed or (mean.replace("−", "-").lstrip("+"), half) in allowed, \
            f"README quotes {mean} ± {half}, not in any committed dose-response table"
    report = pd.read_csv(DIAL_DIR / "report" / "dose_response.csv")
    p_values = {f"{v:.3f}" for column in ("scope - scope-uniform p", "scope - scope-uniform p_holm_worlds")
                for v in report[column]}
    for value in re.findall(r"p = (\d\.\d{3})", paragraph):
        assert value in p_values, f"README quotes p = {value}, not in the committed dose-response report"
    ess = set()
    for folder in [TOY_RESULTS_SPREAD, *(DIAL_DIR / w / "spread" for w in DIAL_WORLDS if w != "low")]:
        table = pd.read_csv(folder / "ess.csv")
        ess |= {f"{v:.3f}" for v in table[["ess_frac_mean", "ess_frac_mean_2plus"]].to_numpy().ravel()}
    for value in re.findall(r"ESS/n (\d\.\d{3})", paragraph):
        assert value in ess, f"README quotes ESS/n {value}, not in any committed ess.csv"
