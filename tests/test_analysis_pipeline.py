"""The corrective and boundary experiments end to end on a scripted toy world, including a killed run.

The fake models follow fixed rules, so every number the pipeline produces can be recomputed here
independently: the student makes one slip in some rollouts (a wrong step result, then correct
arithmetic from the wrong value); the teacher continues any prefix faithfully from its last
written result, so a continuation recovers exactly when the prefix holds no slip (or the chain
happens to land on the right answer anyway).
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.boundary import BoundaryConfig, run_boundary
from analysis.corrective import CorrectiveConfig, run_corrective, truncation_point
from analysis.rollouts import sample_rollouts
from analysis.weights import compute_weights, effective_sample_size, prepare
from eval.generate import ResumeMismatch, plan_units
from workbench.data import load_benchmark
from workbench.models import Completion, SamplingConfig
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


ROLLOUTS = SamplingConfig(n=4, temperature=0.6, top_p=1.0, top_k=0, max_new_tokens=64, seed=3)
CFG = CorrectiveConfig(separator=";", max_new_tokens=64, unit_sequences=40, n_boot=200, scratch_samples=2)


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
    cfg = BoundaryConfig(n_samples=6, max_new_tokens=64, n_boot=200, unit_sequences=48)
    analysis, scores = run_boundary(student, rollouts, problems, cfg, tmp_path, progress=False)
    correct = rollouts[rollouts["correct"]]
    assert len(analysis.per_rollout) == len(correct)
    assert len(scores) == len(rollouts)
    # Student log-PPL is PLAIN_LOGP on every token, so it is exactly 0.1 for every rollout.
    np.testing.assert_allclose(analysis.per_rollout["student_log_ppl"], 0.1, rtol=1e-6)
    # Solve rates come from fresh samples drawn with the boundary's own seeds; recompute them.
    assert analysis.per_rollout["n_samples"].eq(6).all()
    seeds = {p.problem_id: u.seed for u in plan_units(problems, [p.problem for p in problems], cfg.sampling(), 8)
             for p in u.problems}
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
