"""Sample and grade: the one truncation rule, one generate call per batch, rows in problem order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pandas as pd
import pytest

from workbench.data import load_benchmark
from workbench.models import Completion, SamplingConfig
from workbench.records import SAMPLE_SCHEMA, Problem
from workbench.sampling import TRUNCATED, UNGRADED, accuracy, final_verdict, render_prompts, sample_and_grade

SAMPLING = SamplingConfig(n=3, max_new_tokens=16, seed=42)


@pytest.mark.parametrize(
    ("correct", "finish", "error", "verdict"),
    [
        (True, "stop", None, (True, None)),
        (False, "stop", None, (False, None)),
        (False, "stop", "no_boxed", (False, "no_boxed")),
        (True, "length", None, (False, TRUNCATED)),  # a right box in an unfinished response is not final
        (False, "length", None, (False, TRUNCATED)),
        (False, "length", "unclosed_boxed", (False, TRUNCATED)),  # the rule replaces the grader's error
    ],
)
def test_final_verdict(correct, finish, error, verdict):
    assert final_verdict(correct, finish, error) == verdict


def test_final_verdict_refuses_unknown_finish_reasons():
    with pytest.raises(ValueError, match="finish_reason"):
        final_verdict(True, "abort")


class Scripted:
    """Answers problem i's prompt with ``script[i]`` and records every generate call."""

    name = "scripted"
    tokenizer = None

    def __init__(self, script: Sequence[Sequence[Completion]]):
        self.script = script
        self.calls: list[tuple[list[str], SamplingConfig]] = []

    def generate(self, prompts, sampling):
        self.calls.append((list(prompts), sampling))
        return [list(self.script[i][: sampling.n]) for i in range(len(prompts))]


def _texts(column: pd.Series) -> list[str | None]:
    """A string column as Python values; pandas 3 reads missing strings as NaN."""
    return [None if pd.isna(v) else v for v in column]


def _problems() -> list[Problem]:
    return [*load_benchmark("toy-1", toy_size=1), *load_benchmark("toy-3", toy_size=1)]


def _script(problems: list[Problem]) -> list[list[Completion]]:
    first, second = (f"\\boxed{{{p.answer}}}" for p in problems)
    return [
        [Completion(first, (4, 5, 0), "stop"), Completion(first, (4, 5, 6, 7), "length"),
         Completion("\\boxed{x}", (9, 0), "stop")],
        [Completion("1+1=", (1, 2, 3, 4), "length"), Completion(second, (8, 0), "stop"),
         Completion("no box", (3, 0), "stop")],
    ]


def test_sample_and_grade_rows():
    problems = _problems()
    backend = Scripted(_script(problems))
    frame = sample_and_grade(backend, problems, SAMPLING)
    assert backend.calls == [([p.problem for p in problems], SAMPLING)]  # one call, the config's seed
    assert list(frame.columns) == [*SAMPLE_SCHEMA.names, "answer"]
    assert frame["problem_id"].tolist() == [problems[0].problem_id] * 3 + [problems[1].problem_id] * 3
    assert frame["sample_idx"].tolist() == [0, 1, 2, 0, 1, 2]
    assert frame["correct"].tolist() == [True, False, False, False, True, False]
    assert _texts(frame["grade_error"]) == [None, TRUNCATED, None, TRUNCATED, None, "no_boxed"]
    assert _texts(frame["extracted"]) == [problems[0].answer, problems[0].answer, "x", None, problems[1].answer,
                                           None]
    assert frame["n_tokens"].tolist() == [3, 4, 2, 4, 2, 2]
    assert frame["answer"].tolist() == [problems[0].answer] * 3 + [problems[1].answer] * 3
    assert accuracy(frame) == pytest.approx(2 / 6)

    with_ids = sample_and_grade(Scripted(_script(problems)), problems, SAMPLING, token_ids=True)
    assert with_ids["token_ids"].tolist() == [[4, 5, 0], [4, 5, 6, 7], [9, 0], [1, 2, 3, 4], [8, 0], [3, 0]]
    pd.testing.assert_frame_equal(with_ids.drop(columns="token_ids"), frame)


def test_sample_and_grade_prompts_and_ungraded():
    problems = _problems()
    assert render_prompts(Scripted([]), problems) == [p.problem for p in problems]  # toy style: as written
    backend = Scripted(_script(problems))
    frame = sample_and_grade(backend, problems, replace(SAMPLING, n=2), prompts=["A", "B"], grade=False)
    assert backend.calls[0][0] == ["A", "B"] and frame["prompt"].tolist() == ["A", "A", "B", "B"]
    assert frame["correct"].isna().all() and (frame["grade_error"] == UNGRADED).all()
    assert frame["extracted"].isna().all()
    with pytest.raises(ValueError, match="ungraded"):
        accuracy(frame)
    with pytest.raises(ValueError, match="1 prompts for 2 problems"):
        sample_and_grade(backend, problems, SAMPLING, prompts=["A"])


def test_a_backend_returning_the_wrong_shape_is_an_error():
    problems = _problems()
    short = Scripted([[Completion("a", (1,), "stop")]] * 2)  # one completion where three were asked for
    with pytest.raises(RuntimeError, match=r"\[1, 1\] completions for 2 prompts x n=3"):
        sample_and_grade(short, problems, SAMPLING)
