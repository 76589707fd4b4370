"""The corrective and boundary experiments end to end on a scripted toy world, including a killed run,
and ``analysis.pipeline.run`` on the real toy models beside the command line.

The fake models follow fixed rules, so every number the pipeline produces can be recomputed here
independently: the student makes one slip in some rollouts (a wrong step result, then correct
arithmetic from the wrong value); the teacher continues any prefix faithfully from its last
written result, so a continuation recovers exactly when the prefix holds no slip (or the chain
happens to land on the right answer anyway).
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import cli, pipeline
from analysis.boundary import run_boundary
from analysis.configs import ANALYSIS_SAMPLING, BoundaryConfig, CorrectiveConfig, RolloutConfig
from analysis.corrective import run_corrective, truncation_point
from analysis.rollouts import sample_rollouts
from analysis.weights import compute_weights, effective_sample_size, prepare
from eval.generate import plan_units
from workbench.data import load_benchmark
from workbench.errors import UserError
from workbench.models import Completion, SamplingConfig
from workbench.stages import ResumeMismatch, derive_seed
from workbench.toy import STUDENT_DIR, TEACHER_DIR
from workbench.toy.task import solution_steps, solve

EOS = 0
SLIP_LOGP = -1.5  # teacher log-prob of a slipped digit (per unit of the slip's size)
PLAIN_LOGP = -0.1


class Killed(RuntimeError):
    """Stands in for a job killed part-way."""


def _apply(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op] % 10


def _render(steps: list[tuple[int, str, int, int]]) -> str:
    return "".join(f"{a}{op}{b}={c};" for a, op, b, c in steps) + f"\\boxed{{{steps[-1][3]}}}"


def _chain_from(problem: str, start_step: int, acc: int) -> list[tuple[int, str, int, int]]:
    steps = []
    for _, op, b, _ in solution_steps(problem)[start_step:]:
        result = _apply(acc, op, b)
        steps.append((acc, op, b, result))
        acc = result
    return steps


def student_response(problem: str, seed: int, j: int) -> str:
    """Correct with probability 1/2, else one slip of random size at a random step."""
    rng = random.Random(f"{seed}/{problem}/{j}")
    steps = solution_steps(problem)
    if rng.random() < 0.5:
        return _render(steps)
    k, delta = rng.randrange(len(steps)), rng.randrange(1, 10)
    a, op, b, c = steps[k]
    slipped = (a, op, b, (c + delta) % 10)
    return _render(steps[:k] + [slipped] + _chain_from(problem, k + 1, slipped[3]))


def teacher_continuation(prompt: str) -> str:
    """Continue faithfully from the last complete step written after the question."""
    head, _, written = prompt.partition("?A:")
    problem = head + "?A:"
    done = [s for s in written.split(";")[:-1] if s]
    acc = int(done[-1].split("=")[1]) if done else solution_steps(problem)[0][0]
    rest = _chain_from(problem, len(done), acc)
    return "".join(f"{a}{op}{b}={c};" for a, op, b, c in rest) + f"\\boxed{{{rest[-1][3] if rest else acc}}}"


class FakeToyModel:
    """A deterministic backend: ``generate`` follows the rules above, ``token_logprobs`` prices slips."""

    def __init__(self, name: str, role: str, fail_after: int | None = None) -> None:
        self.name, self.role, self.fail_after = name, role, fail_after
        self.tokenizer = None
        self.generate_calls = 0
        self.scored = 0

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def generate(self, prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        self.generate_calls += 1
        if self.fail_after is not None and self.generate_calls > self.fail_after:
            raise Killed("killed")
        out = []
        for prompt in prompts:
            group = []
            for j in range(sampling.n):
                if self.role == "student":
                    text = student_response(prompt, sampling.seed, j)
                else:
                    text = teacher_continuation(prompt)
                group.append(Completion(text, tuple(self.encode(text)) + (EOS,), "stop"))
            out.append(group)
        return out

    def token_logprobs(self, prompt_ids, completion_ids) -> list[torch.Tensor]:
        self.scored += len(completion_ids)
        result = []
        for ids in completion_ids:
            text = "".join(chr(i) for i in ids if i != EOS)
            values = [PLAIN_LOGP] * len(ids)
            if self.role == "teacher":
                pos = 0
                for part in text.split(";")[:-1]:
                    a, op, b, c = int(part[0]), part[1], int(part[2]), int(part[4])
                    if _apply(a, op, b) != c:
                        values[pos + 4] = SLIP_LOGP * ((c - _apply(a, op, b)) % 10)
                    pos += len(part) + 1
            result.append(torch.tensor(values, dtype=torch.float32))
        return result


ROLLOUTS = SamplingConfig.untruncated(n=4, max_new_tokens=64, seed=3)
CFG = CorrectiveConfig(sampling=replace(ANALYSIS_SAMPLING, max_new_tokens=64), separator=";", unit_sequences=40,
                       n_boot=200, scratch_samples=2)


def _run(folder: Path, student: FakeToyModel, teacher: FakeToyModel):
    problems = load_benchmark("toy-3", toy_size=12) + load_benchmark("toy-5", toy_size=12)
    rollouts = sample_rollouts(student, problems, ROLLOUTS, folder / "rollouts", unit_size=5, progress=False)
    analysis = run_corrective(student, teacher, rollouts, problems, CFG, folder, progress=False)
    return problems, rollouts, analysis


def _expected_recovery(per_rollout: pd.DataFrame, rollouts: pd.DataFrame) -> np.ndarray:
    """Recompute each (rollout, ratio)'s recovery from the rules, without the pipeline."""
    by_key = rollouts.set_index(["benchmark", "problem_id", "sample_idx"])
    out = []
    for row in per_rollout.itertuples(index=False):
        rollout = by_key.loc[(row.benchmark, row.problem_id, row.sample_idx)]
        cut = truncation_point(rollout["response"], row.ratio, ";")
        final = teacher_continuation(rollout["prompt"] + rollout["response"][: cut.prefix_chars])
        out.append(float(final.rsplit("{", 1)[1].rstrip("}") == solve(rollout["prompt"])))
    return np.array(out)


def test_corrective_pipeline_matches_the_rules(tmp_path):
    student, teacher = FakeToyModel("fake-student", "student"), FakeToyModel("fake-teacher", "teacher")
    problems, rollouts, analysis = _run(tmp_path, student, teacher)
    wrong = rollouts[~rollouts["correct"]]
    assert len(rollouts) == 24 * 4
    assert 20 < len(wrong) < 76  # about half slip; a slip can still land on the right answer
    per = analysis.per_rollout
    assert len(per) == len(wrong) * len(CFG.ratios)
    assert (per["n_continuations"] == CFG.n_continuations).all()
    np.testing.assert_array_equal(per["recovery_rate"].to_numpy(), _expected_recovery(per, rollouts))
    # Teacher log-PPL: PLAIN_LOGP per token (EOS included) except the slipped digit, priced by its size.
    by_key = rollouts.set_index(["benchmark", "problem_id", "sample_idx"])
    for row in per.drop_duplicates(["benchmark", "problem_id", "sample_idx"]).itertuples(index=False):
        response = by_key.loc[(row.benchmark, row.problem_id, row.sample_idx), "response"]
        slips = [(int(s[4]) - _apply(int(s[0]), s[1], int(s[2]))) % 10 for s in response.split(";")[:-1]]
        total = PLAIN_LOGP * (len(response) + 1) + sum(SLIP_LOGP * d - PLAIN_LOGP for d in slips if d)
        assert row.teacher_log_ppl == pytest.approx(-total / (len(response) + 1), rel=1e-5)
    # Table cells are bucket means of per-rollout recovery, in percent; the gap is Q1 - Q4.
    for r in CFG.ratios:
        part = per[per["ratio"] == r]
        for b in ("Q1", "Q4"):
            assert analysis.table.values.loc[r, b] == pytest.approx(100 * part.loc[part["bucket"] == b, "recovery_rate"].mean())
        assert analysis.table.values.loc[r, "Q1−Q4"] == pytest.approx(
            analysis.table.values.loc[r, "Q1"] - analysis.table.values.loc[r, "Q4"])
    assert analysis.table.paper.loc[0.2, "Q1"] == pytest.approx(64.9)
    # The scripted teacher solves every problem from scratch.
    assert analysis.buckets["teacher_solve_pct"].tolist() == [100.0] * 4
    assert analysis.statistics["n_wrong_rollouts"] == len(wrong)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    reference = _run(tmp_path / "whole", FakeToyModel("fake-student", "student"),
                     FakeToyModel("fake-teacher", "teacher"))[2]
    with pytest.raises(Killed):
        _run(tmp_path / "cut", FakeToyModel("fake-student", "student"),
             FakeToyModel("fake-teacher", "teacher", fail_after=3))
    partial = sorted((tmp_path / "cut" / "continuations").glob("part-*.parquet"))
    assert len(partial) == 3  # three continuation units landed before the kill
    teacher = FakeToyModel("fake-teacher", "teacher")
    resumed = _run(tmp_path / "cut", FakeToyModel("fake-student", "student"), teacher)[2]
    n_units = -(-len(reference.per_rollout) // CFG.items_per_unit(CFG.n_continuations))
    n_scratch_problems = reference.per_rollout[["benchmark", "problem_id"]].drop_duplicates().shape[0]
    scratch_units = -(-n_scratch_problems // CFG.items_per_unit(CFG.scratch_samples))
    assert teacher.generate_calls == (n_units - 3) + scratch_units
    assert teacher.scored == 0  # the teacher's scores were already on disk
    pd.testing.assert_frame_equal(resumed.per_rollout, reference.per_rollout)
    pd.testing.assert_frame_equal(resumed.table.values, reference.table.values)


def test_resume_refuses_other_settings(tmp_path):
    student, teacher = FakeToyModel("fake-student", "student"), FakeToyModel("fake-teacher", "teacher")
    problems, rollouts, _ = _run(tmp_path, student, teacher)
    with pytest.raises(ResumeMismatch, match="ratios"):
        run_corrective(student, teacher, rollouts, problems, replace(CFG, ratios=(0.5,)), tmp_path, progress=False)


def test_boundary_and_weights_on_the_same_rollouts(tmp_path):
    student = FakeToyModel("fake-student", "student")
    problems = load_benchmark("toy-4", toy_size=10)
    rollouts = sample_rollouts(student, problems, ROLLOUTS, tmp_path / "rollouts", unit_size=5, progress=False)
    cfg = BoundaryConfig(replace(ANALYSIS_SAMPLING, n=6, max_new_tokens=64), n_boot=200, unit_sequences=48)
    analysis, scores = run_boundary(student, rollouts, problems, cfg, tmp_path, progress=False)
    correct = rollouts[rollouts["correct"]]
    assert len(analysis.per_rollout) == len(correct)
    assert len(scores) == len(rollouts)
    # Student log-PPL is PLAIN_LOGP on every token, so it is exactly 0.1 for every rollout.
    np.testing.assert_allclose(analysis.per_rollout["student_log_ppl"], 0.1, rtol=1e-6)
    # Solve rates come from fresh samples drawn with the boundary's own seeds; recompute them.
    assert analysis.per_rollout["n_samples"].eq(6).all()
    seeds = {p.problem_id: u.seed for u in plan_units(problems, [p.problem for p in problems],
                                                  replace(cfg.sampling, seed=derive_seed(0, "boundary")), 8)
             for p, _ in u.items}
    for row in analysis.per_rollout.itertuples(index=False):
        prompt = next(p.problem for p in problems if p.problem_id == row.problem_id)
        expected = np.mean([student_response(prompt, seeds[row.problem_id], j).endswith(f"{{{solve(prompt)}}}")
                            for j in range(6)])
        assert row.solve_rate == pytest.approx(expected)
    assert set(analysis.buckets["bucket"]) == {"Q1", "Q2", "Q3", "Q4"}
    assert analysis.buckets["n_rollouts"].sum() == len(correct)
    # Weights on the scored rollouts: one softmax per (problem, path) summing to 1.
    frame = prepare(rollouts.merge(scores.rename(columns={"log_ppl": "student_log_ppl"})[
        ["benchmark", "problem_id", "sample_idx", "student_log_ppl"]]).assign(teacher_log_ppl=0.5))
    frame["weight"] = compute_weights(frame)
    sums = frame.groupby(["group", "path"])["weight"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=1e-6)
    ess = effective_sample_size(frame)
    np.testing.assert_allclose(ess["ess"], ess["n"], rtol=1e-6)  # equal PPLs: uniform weights, ESS = n


# ------------------------------------------------------------------------------ analysis.pipeline
class AlwaysRightStudent(FakeToyModel):
    """Every rollout correct: nothing for the corrective experiment to bucket."""

    def generate(self, prompts, sampling: SamplingConfig) -> list[list[Completion]]:
        out = []
        for prompt in prompts:
            text = _render(solution_steps(prompt))
            out.append([Completion(text, tuple(self.encode(text)) + (EOS,), "stop")] * sampling.n)
        return out


FAKE_ROLLOUTS = RolloutConfig(ROLLOUTS, unit_sequences=20)
FAKE_BOUNDARY = BoundaryConfig(replace(ANALYSIS_SAMPLING, n=6, max_new_tokens=64), n_boot=200, unit_sequences=48)


def test_pipeline_resumes_from_its_run_dir_without_sampling_again(tmp_path):
    problems = load_benchmark("toy-3", toy_size=12) + load_benchmark("toy-5", toy_size=12)
    student, teacher = FakeToyModel("fake-student", "student"), FakeToyModel("fake-teacher", "teacher")
    first = pipeline.run(student, teacher, problems, CFG, FAKE_BOUNDARY, tmp_path, rollouts=FAKE_ROLLOUTS,
                         taus=(0.5, 1.0), progress=False)
    assert first.skipped == {} and first.run_dir == tmp_path
    assert first.config["models"] == {"student": "fake-student", "teacher": "fake-teacher"}
    # Rerun on backends that die on their first generate call: every stage is read back from disk.
    again = pipeline.run(FakeToyModel("fake-student", "student", fail_after=0),
                         FakeToyModel("fake-teacher", "teacher", fail_after=0), problems, CFG, FAKE_BOUNDARY,
                         tmp_path, rollouts=FAKE_ROLLOUTS, taus=(0.5, 1.0), progress=False)
    pd.testing.assert_frame_equal(again.recovery.per_rollout, first.recovery.per_rollout)
    pd.testing.assert_frame_equal(again.boundary.per_rollout, first.boundary.per_rollout)
    pd.testing.assert_frame_equal(again.weights_summary, first.weights_summary)
    assert sorted(first.weights_summary["tau"].unique()) == [0.5, 1.0]
    # Weights: one row per rollout; the teacher scores only wrong ones.
    assert len(first.weights) == len(first.rollouts)
    assert first.weights["teacher_log_ppl"].isna().tolist() == first.weights["correct"].tolist()


def test_pipeline_skips_an_experiment_without_enough_rollouts(tmp_path):
    problems = load_benchmark("toy-4", toy_size=6)
    result = pipeline.run(AlwaysRightStudent("right-student", "student"), None, problems, CFG, FAKE_BOUNDARY,
                          None, rollouts=FAKE_ROLLOUTS, progress=False)
    assert result.skipped == {"corrective": "0 wrong rollouts, fewer than the 4 buckets"}
    assert result.recovery is None and result.teacher_solve_rates is None and result.weights is None
    assert result.boundary.per_rollout["solve_rate"].eq(1.0).all()
    assert result.config["models"] == {"student": "right-student", "teacher": "right-student"}
    written = pipeline.write_tables(result, tmp_path / "tables")
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        ["boundary_buckets.csv", "boundary_rollouts.csv", "boundary_statistics.json", "boundary_summary.md",
         "manifest.json"])
    assert written["manifest"].name == "manifest.json"


def test_pipeline_mistakes_are_one_line_before_any_model_loads():
    with pytest.raises(UserError, match="unknown benchmark 'toy-33'.*did you mean 'toy-3'"):
        pipeline.run(STUDENT_DIR, TEACHER_DIR, pipeline.ProblemSet("toy-33"), CFG, None, None)
    with pytest.raises(UserError, match="student: ./no-such-model does not exist"):
        pipeline.run("./no-such-model", None, pipeline.ProblemSet("toy-3", toy_size=2), CFG, None, None)
    with pytest.raises(UserError, match="server backend needs base_url"):
        pipeline.ModelConfig("server")
    with pytest.raises(UserError, match="n must be at least 1"):
        RolloutConfig(replace(ANALYSIS_SAMPLING, n=0))
    # tau's rule is WeightConfig's; it is met before the (missing) student is looked for
    for taus, message in (((1.0, -0.5), r"^tau must be a finite number > 0, got -0.5$"),
                          ((float("inf"),), r"^tau must be a finite number > 0, got inf$"),
                          ((), r"^taus must name at least one temperature")):
        with pytest.raises(UserError, match=message):
            pipeline.run("./no-such-model", None, pipeline.ProblemSet("toy-3", toy_size=2), CFG, None, None, taus=taus)


# The real toy models on a configuration small enough for seconds: 12 problems x 4 rollouts.
TOY_ARGS = ["--benchmark", "toy-3,toy-5", "--toy-size", "6", "--rollouts", "4", "--ratios", "0.4", "0.8",
            "--continuations", "2", "--scratch-samples", "2", "--boundary-samples", "4", "--n-boot", "200"]
TOY_SAMPLING = replace(ANALYSIS_SAMPLING, max_new_tokens=cli.TOY_MAX_NEW_TOKENS)
TOY_ANALYSIS = {"n_buckets": 4, "unit_sequences": 1024, "n_boot": 200}


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory):
    """``pipeline.run`` in memory (no run_dir) with the settings TOY_ARGS give the command line."""
    torch.set_num_threads(1)
    scratch = tmp_path_factory.mktemp("tempdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(scratch))
        result = pipeline.run(
            STUDENT_DIR, TEACHER_DIR, pipeline.ProblemSet("toy-3,toy-5", toy_size=6),
            CorrectiveConfig(ratios=(0.4, 0.8), sampling=replace(TOY_SAMPLING, n=2), separator=";", scratch_samples=2,
                             **TOY_ANALYSIS),
            BoundaryConfig(replace(TOY_SAMPLING, n=4), **TOY_ANALYSIS), None,
            rollouts=RolloutConfig(replace(TOY_SAMPLING, n=4), unit_sequences=1024),
            models=pipeline.ModelConfig(batch_sequences=1024), progress=False)
    assert list(scratch.glob("scope-analysis-*")) == []  # the in-memory run left no stage folder behind
    return result


def test_pipeline_run_on_the_toy_world(toy_result):
    result = toy_result
    assert result.run_dir is None and result.skipped == {}
    assert len(result.problems) == 12
    assert len(result.rollouts) == 12 * 4
    wrong, correct = int((~result.rollouts["correct"]).sum()), int(result.rollouts["correct"].sum())
    assert wrong >= 4 and correct >= 4
    recovery = result.recovery
    assert list(recovery.table.values.index) == [0.4, 0.8]
    assert list(recovery.table.values.columns) == ["Q1", "Q2", "Q3", "Q4", "Q1−Q4"]
    per = recovery.per_rollout
    assert len(per) == wrong * 2 and (per["n_continuations"] == 2).all()
    assert per["recovery_rate"].between(0, 1).all()
    np.testing.assert_array_equal(per["recovery_rate"], per["recovered"] / 2)
    # Buckets are teacher-PPL quartiles: every Q_k rollout sits at or below every Q_k+1 rollout.
    by_bucket = per.drop_duplicates(["benchmark", "problem_id", "sample_idx"]).groupby("bucket")["teacher_log_ppl"]
    lows, highs = by_bucket.min(), by_bucket.max()
    assert all(highs[f"Q{k}"] <= lows[f"Q{k + 1}"] for k in (1, 2, 3))
    assert recovery.buckets["teacher_ppl_mean"].is_monotonic_increasing
    assert recovery.buckets["n_rollouts"].sum() == wrong
    # Two from-scratch samples per problem: every solve rate is 0, 1/2 or 1.
    solve = result.teacher_solve_rates
    assert list(solve.columns) == ["benchmark", "problem_id", "teacher_solve_rate"]
    assert len(solve) == per[["benchmark", "problem_id"]].drop_duplicates().shape[0]
    assert set(solve["teacher_solve_rate"]) <= {0.0, 0.5, 1.0}
    edge = result.boundary
    assert len(edge.per_rollout) == correct and (edge.per_rollout["n_samples"] == 4).all()
    assert edge.buckets["student_ppl_mean"].is_monotonic_increasing
    assert list(edge.buckets["bucket"]) == ["Q1", "Q2", "Q3", "Q4"]
    assert len(result.weights) == len(result.rollouts)
    assert set(result.weights_summary["path"]) == {"mle", "opd"}
    assert sorted(result.weights_summary["tau"].unique()) == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert set(result.timings) == {"load_models_s", "rollouts_s", "corrective_s", "boundary_s", "total_s"}


def test_cli_writes_what_the_pipeline_returns(toy_result, tmp_path, capsys):
    """Same settings, same numbers: the command line's tables equal the in-memory run's, byte for byte."""
    assert cli.main(["toy", *TOY_ARGS, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "cli"),
                     "--no-figures", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"12 problems x 4 student rollouts: {int(toy_result.rollouts['correct'].sum())} correct")
    pipeline.write_tables(toy_result, tmp_path / "api")
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "api").iterdir())
    assert len(names) == 15  # recovery (7 files), boundary (4), weights (2 and the case study) and the manifest
    for name in names:
        if name != "manifest.json":
            assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes(), name
    cli_manifest, api_manifest = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("cli", "api"))
    assert cli_manifest["config"] == api_manifest["config"] and cli_manifest["files"] == api_manifest["files"]
    # The teacher solve rate is the share of its graded from-scratch samples that are correct.
    shards = sorted((tmp_path / "run" / "teacher_scratch").glob("part-*.parquet"))
    scratch = pd.concat(pd.read_parquet(f) for f in shards)
    counted = scratch.groupby(["benchmark", "problem_id"])["correct"].agg(["sum", "size"]).reset_index()
    solve = toy_result.teacher_solve_rates.merge(counted, on=["benchmark", "problem_id"], validate="one_to_one")
    assert len(solve) == len(counted) and (solve["size"] == 2).all()
    np.testing.assert_array_equal(solve["teacher_solve_rate"], solve["sum"] / solve["size"])
