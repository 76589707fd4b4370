"""The toy world: a synthetic chained-arithmetic task with a tiny teacher and a tinier student.

It is the workbench's embedded default, so every pipeline (sampling, scoring, SCOPE training,
evaluation, analysis) runs end to end on a laptop CPU in minutes with the same code paths as the
real models. The checkpoints are committed; ``python scripts/build_toy.py`` rebuilds them.
"""

from pathlib import Path

from workbench.errors import UserError
from workbench.layout import TOY_ASSETS, TOY_RESULTS

TOKENIZER_DIR: Path = TOY_ASSETS / "tokenizer"
TEACHER_DIR: Path = TOY_ASSETS / "teacher"
STUDENT_DIR: Path = TOY_ASSETS / "student"

# The spread dial (docs/toy-dial.md): worlds that share the committed teacher and differ in their student,
# from the committed one ("low": correct rollouts barely differ in student perplexity) to students that
# often reach a right answer by trial and check ("mid", "high") or guess before they derive ("hunch12",
# "hunch36": 12 or 36 guesses). Built by ``make toy-dial-worlds``.
DIAL_WORLDS: tuple[str, ...] = ("low", "mid", "high", "hunch12", "hunch36")
DIAL_DIR: Path = TOY_RESULTS / "dial"


def dial_student_dir(world: str) -> Path:
    """The student checkpoint of a spread-dial world (the committed student for "low")."""
    if world not in DIAL_WORLDS:
        raise UserError(f"unknown dial world {world!r}; expected one of {', '.join(DIAL_WORLDS)}")
    return STUDENT_DIR if world == "low" else DIAL_DIR / world / "student"


__all__ = ["DIAL_DIR", "DIAL_WORLDS", "STUDENT_DIR", "TEACHER_DIR", "TOKENIZER_DIR", "dial_student_dir"]
