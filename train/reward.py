"""The verifier as a TRL reward function: the shared grader's verdict, under the truncation rule, as a 0/1
reward.

SCOPE reads the reward only to route a rollout (1: correct path, 0: incorrect path); GRPO uses it
as its outcome reward. Both go through this one function so every method is graded exactly as
evaluation grades. A rollout that reached the length limit without EOS is decided by the run's
``truncated_rollouts`` rule: ``wrong`` applies evaluation's truncation rule
(:func:`workbench.sampling.final_verdict`: reward 0, ``grade_error`` "truncated"), ``grade`` keeps
the grader's verdict on the cut-off text. The last batch's verdicts stay on the object for the
trainer's snapshots and logs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, get_args

from train.scope import TruncatedRule
from workbench.grading import Grade, GradingPool, grade_batch
from workbench.sampling import final_verdict

TRUNCATED_RULES: tuple[str, ...] = get_args(TruncatedRule)


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or assistant messages when the prompts are conversations."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def rollout_verdict(grade: Grade, truncated: bool, rule: str) -> Grade:
    """A rollout's verdict: under rule ``wrong`` a truncated rollout goes through the truncation rule,
    under ``grade`` every rollout keeps the grader's verdict."""
    if rule not in TRUNCATED_RULES:
        raise ValueError(f"truncated_rollouts must be one of {TRUNCATED_RULES}, got {rule!r}")
    correct, error = final_verdict(grade.correct, "length" if truncated and rule == "wrong" else "stop", grade.error)
    return Grade(correct, grade.extracted, error)


class CorrectnessReward:
    """``reward(prompts, completions, answer, benchmark, completion_ids) -> [1.0 | 0.0]`` through
    workbench.grading and the truncation rule.

    A completion is truncated when its token ids do not end on one of ``eos_token_ids`` (the trainer
    sets them once its generation config is known). After each call: ``last_grades`` are the final
    verdicts, ``last_truncated`` which rollouts were cut off and ``last_graded_correct`` the grader's
    own verdicts, before the rule. ``pool``: the grading pool of the run that calls the reward (the
    trainer sets it for the length of ``train()``); without one the default pool grades.
    """

    __name__ = "correct"  # the name TRL logs the reward under: rewards/correct/mean

    def __init__(self, workers: int | None = None, timeout: float = 5.0, *, truncated_rollouts: str = "wrong",
                 eos_token_ids: Collection[int] = ()) -> None:
        if truncated_rollouts not in TRUNCATED_RULES:
            raise ValueError(f"truncated_rollouts must be one of {TRUNCATED_RULES}, got {truncated_rollouts!r}")
        self.workers = workers
        self.timeout = timeout
        self.truncated_rollouts = truncated_rollouts
        self.eos_token_ids = set(eos_token_ids)
        self.last_grades: list[Grade] = []
        self.last_truncated: list[bool] = []
        self.last_graded_correct: list[bool] = []
        self.pool: GradingPool | None = None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str],
                 benchmark: Sequence[str], completion_ids: Sequence[Sequence[int]] | None = None,
                 **_: Any) -> list[float]:
        if completion_ids is None:
            raise TypeError("the correctness reward needs completion_ids to tell truncated rollouts")
        if not self.eos_token_ids:
            raise RuntimeError("the correctness reward has no eos_token_ids to tell truncated rollouts")
        items = [(completion_text(c), str(a), str(b)) for c, a, b in zip(completions, answer, benchmark, strict=True)]
        if self.pool is not None:
            grades = self.pool.grade_batch(items, timeout=self.timeout, progress=False)
        else:
            grades = grade_batch(items, workers=self.workers, timeout=self.timeout, progress=False)
        self.last_truncated = [not ids or ids[-1] not in self.eos_token_ids
                               for ids in (list(i) for i in completion_ids)]
        if len(self.last_truncated) != len(grades):
            raise ValueError(f"{len(completion_ids)} completion_ids for {len(grades)} completions")
        self.last_graded_correct = [bool(g.correct) for g in grades]
        self.last_grades = [rollout_verdict(g, cut, self.truncated_rollouts)
                            for g, cut in zip(grades, self.last_truncated, strict=True)]
        return [1.0 if g.correct else 0.0 for g in self.last_grades]
