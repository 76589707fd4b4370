"""The paper's reported numbers, read from ``results/reference``.

This module is the only place the workbench reads the paper's numbers, so a comparison can never
silently mix a reported value with a recomputed one: every frame returned here carries a
``source`` column (and ``attrs["source"]``) saying it is the paper's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from workbench.data import BENCHMARKS
from workbench.layout import REFERENCE

PAPER_SOURCE = "paper (arXiv 2604.10688)"
REFERENCE_ENV = "SCOPE_REFERENCE_DIR"
PAPER_K = 32
"""Table 1 reports Avg@32 and Pass@32 (32 samples a problem)."""
AVERAGE = "Average"
"""Table 1's column for the unweighted mean of its benchmarks; the workbench's tables use the same."""


def reference_dir() -> Path:
    """Folder holding the paper's CSVs: ``$SCOPE_REFERENCE_DIR`` if set, else the repository's copy.

    The override lets an installed (non-editable) package, or a test, point at another copy.
    """
    override = os.environ.get(REFERENCE_ENV)
    if override:
        return Path(override)
    return REFERENCE


def _read(name: str) -> pd.DataFrame:
    """Read one reference CSV and mark every row as the paper's number."""
    path = reference_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"paper reference file {path} not found; set {REFERENCE_ENV} to the folder holding {name}"
        )
    frame = pd.read_csv(path)
    frame["source"] = PAPER_SOURCE
    frame.attrs["source"] = PAPER_SOURCE
    return frame


def paper_table1() -> pd.DataFrame:
    """Table 1: both settings, every method and benchmark plus the reported ``Average``, in percent.

    Columns: student, teacher, method, benchmark, avg_at_32, pass_at_32, source.
    ``pass_at_32`` is the authors' with-replacement bootstrap form, not the unbiased estimator.
    ``benchmark`` holds the registry's display names (each entry's ``paper_key`` says which of the
    paper's columns it is), so the paper's rows meet the workbench's under the same names.
    """
    frame = _read("table1_math.csv")
    names = {spec.paper_key: spec.display for spec in BENCHMARKS.values() if spec.paper_key is not None}
    names[AVERAGE] = AVERAGE
    unknown = sorted(set(frame["benchmark"]) - set(names))
    if unknown:
        raise ValueError(f"{reference_dir() / 'table1_math.csv'}: benchmarks {unknown} are no registered "
                         "benchmark's paper_key (workbench/data.py)")
    frame["benchmark"] = frame["benchmark"].map(names)
    return frame


def paper_recovery() -> pd.DataFrame:
    """Recovery rate of teacher continuations by teacher-perplexity quartile and truncation ratio."""
    return _read("recovery_by_teacher_ppl.csv")

