"""The verifier as a TRL reward function: the shared grader's verdict as a 0/1 reward.

SCOPE reads the reward only to route a rollout (1: correct path, 0: incorrect path); GRPO uses it
as its outcome reward. Both go through this one function so every method is graded exactly as
evaluation grades. The last batch's verdicts stay on the object for the trainer's snapshots
(extracted answer and grading error per rollout).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from workbench.grading import Grade, grade_batch


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or assistant messages when the prompts are conversations."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


class CorrectnessReward:
    """``reward(prompts, completions, answer, benchmark) -> [1.0 | 0.0]`` through workbench.grading."""

    __name__ = "correct"  # the name TRL logs the reward under: rewards/correct/mean

    def __init__(self, workers: int | None = None, timeout: float = 5.0) -> None:
        self.workers = workers
        self.timeout = timeout
        self.last_grades: list[Grade] = []

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str],
                 benchmark: Sequence[str], **_: Any) -> list[float]:
        items = [(completion_text(c), str(a), str(b)) for c, a, b in zip(completions, answer, benchmark, strict=True)]
        self.last_grades = grade_batch(items, workers=self.workers, timeout=self.timeout, progress=False)
        return [1.0 if g.correct else 0.0 for g in self.last_grades]
