"""The toy world: a synthetic chained-arithmetic task with a tiny teacher and a tinier student.

It is the workbench's embedded default, so every pipeline (sampling, scoring, SCOPE training,
evaluation, analysis) runs end to end on a laptop CPU in minutes with the same code paths as the
real models. The checkpoints are committed; ``python -m workbench.toy.build`` rebuilds them.
"""

from pathlib import Path

ASSETS_DIR: Path = Path(__file__).resolve().parent / "assets"
TOKENIZER_DIR: Path = ASSETS_DIR / "tokenizer"
TEACHER_DIR: Path = ASSETS_DIR / "teacher"
STUDENT_DIR: Path = ASSETS_DIR / "student"

__all__ = ["ASSETS_DIR", "STUDENT_DIR", "TEACHER_DIR", "TOKENIZER_DIR"]
