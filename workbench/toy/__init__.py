"""The toy world: a synthetic chained-arithmetic task with a tiny teacher and a tinier student.

It is the workbench's embedded default, so every pipeline (sampling, scoring, SCOPE training,
evaluation, analysis) runs end to end on a laptop CPU in minutes with the same code paths as the
real models. The checkpoints are committed; ``python scripts/build_toy.py`` rebuilds them.
"""

from pathlib import Path

from workbench.layout import TOY_ASSETS

TOKENIZER_DIR: Path = TOY_ASSETS / "tokenizer"
TEACHER_DIR: Path = TOY_ASSETS / "teacher"
STUDENT_DIR: Path = TOY_ASSETS / "student"

__all__ = ["STUDENT_DIR", "TEACHER_DIR", "TOKENIZER_DIR"]
