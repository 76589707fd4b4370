"""Analysis tables written from made-up rollouts through the real writers, for the figure tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.boundary import BoundaryConfig, analyse_boundary, solve_counts, write_boundary
from analysis.corrective import CorrectiveConfig, analyse_recovery, write_recovery


def write_analysis_tables(folder, rng, n=40, ratios=(0.2, 0.4, 0.6, 0.8), n_boot=200, groups=10,
                          float_format=None):
    """What `python -m analysis.cli toy` writes: recovery, boundary and the weights' rollouts."""
    wrong = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"p{i}" for i in range(n)], "sample_idx": 0,
                          "teacher_log_ppl": rng.uniform(0.05, 0.8, n)})
    rows = [{"benchmark": "toy-3", "problem_id": f"p{i}", "sample_idx": 0, "ratio": ratio, "cont_idx": j,
             "correct": bool(rng.random() < max(0.0, 0.9 - ratio - 0.5 * lp)), "prefix_chars": 6,
             "response_chars": 21, "at_separator": True}
            for ratio in ratios for i, lp in enumerate(wrong["teacher_log_ppl"]) for j in range(4)]
    solve = pd.DataFrame({"benchmark": "toy-3", "problem_id": wrong["problem_id"],
                          "teacher_solve_rate": rng.choice([0.5, 0.75, 1.0], n)})
    write_recovery(analyse_recovery(wrong, pd.DataFrame(rows), CorrectiveConfig(n_boot=n_boot), solve), folder)
    correct = pd.DataFrame({"benchmark": "toy-3", "problem_id": [f"q{i}" for i in range(n)], "sample_idx": 1,
                            "student_log_ppl": rng.uniform(0.01, 0.3, n)})
    samples = pd.DataFrame([{"benchmark": "toy-3", "problem_id": f"q{i}", "sample_idx": j,
                             "correct": bool(rng.random() < 0.9 - 2 * lp)}
                            for i, lp in enumerate(correct["student_log_ppl"]) for j in range(8)])
    write_boundary(analyse_boundary(correct, solve_counts(samples), BoundaryConfig(n_boot=n_boot)), folder)
    size = 4 * groups
    pd.DataFrame({"benchmark": "toy-3", "problem_id": np.repeat([f"g{i}" for i in range(groups)], 4),
                  "sample_idx": np.tile(np.arange(4), groups), "correct": np.tile([True, True, False, False], groups),
                  "student_log_ppl": rng.uniform(0.01, 0.3, size), "teacher_log_ppl": rng.uniform(0.1, 1.0, size)}
                 ).to_csv(folder / "weights_rollouts.csv", index=False, float_format=float_format)
