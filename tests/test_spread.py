"""analysis.spread: ESS/n per path and tau from per-rollout rows, against hand computations, and the committed
per-rollout files against the committed ESS tables they came from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import spread
from workbench.layout import TOY_RESULTS
from workbench.toy import DIAL_DIR, DIAL_WORLDS


def _rows(problem: str, student: list[float], teacher: list[float], correct: list[bool]) -> list[dict]:
    return [{"benchmark": "toy-1", "problem_id": problem, "sample_idx": i, "correct": c,
             "student_log_ppl": s, "teacher_log_ppl": np.nan if c else t}
            for i, (s, t, c) in enumerate(zip(student, teacher, correct))]


def _crafted() -> pd.DataFrame:
    # Group a: two correct rollouts, student PPL 1 and 3; two wrong ones, teacher PPL 1 and 4.
    rows = _rows("a", [0.0, math.log(3), 0.2, 0.2], [0.0, 0.0, 0.0, math.log(4)], [True, True, False, False])
    # Group b: one correct rollout (a subset of one: ESS/n = 1 whatever its weight) and three wrong ones
    # with equal teacher PPL (uniform: ESS/n = 1).
    rows += _rows("b", [0.5, 0.1, 0.1, 0.1], [0.0, 0.7, 0.7, 0.7], [True, False, False, False])
    return pd.DataFrame(rows)


def _ess_frac(w: list[float]) -> float:
    return sum(w) ** 2 / sum(x * x for x in w) / len(w)


def test_ess_table_matches_hand_computed_non_uniform_weights():
    table = spread.ess_table(_crafted(), taus=(0.5, 1.0)).set_index(["tau", "path"])
    # tau 1: MLE weights ∝ PPL_S = (1, 3): ESS = 16/10 = 1.6 of 2. OPD weights ∝ 1/PPL_T = (1, 1/4):
    # ESS = (5/4)^2 / (17/16) = 25/17 of 2.
    assert _ess_frac([1, 3]) == pytest.approx(0.8)
    assert _ess_frac([1, 0.25]) == pytest.approx(25 / 34)
    mle1, opd1 = table.loc[(1.0, "mle")], table.loc[(1.0, "opd")]
    assert mle1["ess_frac_mean_2plus"] == pytest.approx(0.8)
    assert mle1["ess_frac_mean"] == pytest.approx((0.8 + 1.0) / 2)  # group b's single correct rollout
    assert opd1["ess_frac_mean_2plus"] == pytest.approx((25 / 34 + 1.0) / 2)
    # tau 0.5 squares the ratios: MLE (1, 9): ESS/n = 100/82/2; OPD (1, 1/16): (17/16)^2/(257/256)/2.
    mle05, opd05 = table.loc[(0.5, "mle")], table.loc[(0.5, "opd")]
    assert mle05["ess_frac_mean_2plus"] == pytest.approx(100 / 82 / 2)
    assert opd05["ess_frac_mean_2plus"] == pytest.approx(((17 / 16) ** 2 / (257 / 256) / 2 + 1.0) / 2)
    assert table.loc[(1.0, "mle"), "n_subsets"] == 2 and table.loc[(1.0, "mle"), "n_subsets_2plus"] == 1


def test_sharper_tau_never_raises_ess():
    table = spread.ess_table(_crafted(), taus=(0.25, 0.5, 1.0, 2.0, 4.0))
    for _, part in table.groupby("path"):
        ess = part.sort_values("tau")["ess_frac_mean"].to_numpy()
        assert np.all(np.diff(ess) >= -1e-12)


def test_per_rollout_round_trip(tmp_path: Path):
    frame = _crafted()
    spread.write_per_rollout(frame, tmp_path / "p.parquet")
    back = spread.read_per_rollout(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(back, frame)
    # the same rows give the same bytes (a rerun does not churn the committed file)
    spread.write_per_rollout(frame, tmp_path / "q.parquet")
    assert (tmp_path / "p.parquet").read_bytes() == (tmp_path / "q.parquet").read_bytes()


def _committed_spreads() -> list[Path]:
    folders = [TOY_RESULTS / "spread", *(DIAL_DIR / w / "spread" for w in DIAL_WORLDS if w != "low")]
    return [f for f in folders if (f / "per_rollout.parquet").is_file()]


@pytest.mark.parametrize("folder", _committed_spreads(), ids=lambda f: str(f.relative_to(TOY_RESULTS)))
def test_committed_ess_recomputes_from_committed_rollouts(folder: Path):
    per_rollout = spread.read_per_rollout(folder / "per_rollout.parquet")
    committed = pd.read_csv(folder / "ess.csv")
    recomputed = spread.ess_table(per_rollout, taus=tuple(committed["tau"].unique())).round(4)
    columns = ["tau", "path", "ess_frac_mean", "ess_frac_mean_2plus", "n_subsets", "n_subsets_2plus"]
    pd.testing.assert_frame_equal(recomputed[columns].reset_index(drop=True),
                                  committed[columns].reset_index(drop=True), check_dtype=False)


def test_every_world_with_an_ess_table_commits_its_rollouts():
    folders = [TOY_RESULTS / "spread", *(DIAL_DIR / w / "spread" for w in DIAL_WORLDS if w != "low")]
    for folder in folders:
        if (folder / "ess.csv").is_file():
            assert (folder / "per_rollout.parquet").is_file(), f"{folder} has ess.csv but no per_rollout.parquet"
