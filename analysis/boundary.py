"""Student perplexity versus the capability boundary, on correct rollouts.

SCOPE gives correct rollouts MORE weight when the student's own perplexity on them is high, on the
claim that an unsure-but-correct rollout marks a problem at the edge of what the student can do,
where reinforcement teaches most. The paper argues this but measures nothing; this experiment
does. Correct rollouts are bucketed by student PPL (quantiles, Q1 lowest), and each is set
against its problem's empirical solve rate, estimated from fresh student samples of the same
problem (not the rollout itself, which would bias the rate upwards). If the claim holds, high-PPL
buckets sit on lower solve rates and on more problems that are solved only sometimes
(0 < rate < 1).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.configs import BoundaryConfig
from analysis.corrective import bucket_labels, bucket_summary, quantile_buckets
from analysis.rollouts import score_rollouts
from analysis.stats import attempt, jonckheere_terpstra, logistic_regression, monotonicity, spearman
from eval.generate import generate_samples
from eval.tables import to_markdown
from workbench.models import Backend
from workbench.records import SAMPLE_KEY, Problem
from workbench.stages import derive_seed, model_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoundaryAnalysis:
    """per_rollout: one row per correct rollout (key, bucket, student_log_ppl, n_samples, n_solved,
    solve_rate); buckets: per-bucket summary in percent with intervals; statistics: JSON-ready tests."""

    per_rollout: pd.DataFrame
    buckets: pd.DataFrame
    statistics: dict[str, Any] = field(default_factory=dict)


def solve_counts(samples: pd.DataFrame) -> pd.DataFrame:
    """Per problem: ``n_samples``, ``n_solved`` and ``solve_rate`` from graded samples."""
    return (samples.assign(correct=samples["correct"].astype(int))
            .groupby(["benchmark", "problem_id"], sort=False)["correct"]
            .agg(n_samples="size", n_solved="sum").reset_index()
            .assign(solve_rate=lambda f: f["n_solved"] / f["n_samples"]))


def boundary_statistics(per_rollout: pd.DataFrame, n_buckets: int, *, level: float = 0.95) -> dict[str, Any]:
    """Tests of "higher student PPL on a correct rollout, lower solve rate of its problem".

    Per correct rollout: Spearman's rho of student log-PPL with the solve rate, and the logistic
    slope of the fresh samples' success on log-PPL (each rollout's problem contributes its
    n_solved of n_samples; rollouts of one problem share those trials, so this interval is
    optimistic). Per problem (independent units): rho of the mean log-PPL of its correct rollouts
    with its solve rate. Across buckets: Jonckheere-Terpstra for solve rates falling from Q1 to
    Qn, and the sign pattern of bucket means.
    """
    labels = bucket_labels(n_buckets)
    groups = [per_rollout.loc[per_rollout["bucket"] == b, "solve_rate"].to_numpy() for b in labels]
    per_problem = per_rollout.groupby(["benchmark", "problem_id"], sort=False).agg(
        student_log_ppl=("student_log_ppl", "mean"), solve_rate=("solve_rate", "first"))
    return {
        "unit": "correct student rollout (problem-level where named)",
        "spearman_per_rollout": attempt(spearman, per_rollout["student_log_ppl"], per_rollout["solve_rate"]),
        "spearman_per_problem": attempt(spearman, per_problem["student_log_ppl"], per_problem["solve_rate"]),
        "logistic": attempt(logistic_regression, per_rollout["student_log_ppl"].to_numpy(),
                            per_rollout["n_solved"].to_numpy(), per_rollout["n_samples"].to_numpy(),
                            names=["student_log_ppl"], level=level),
        "trend": attempt(jonckheere_terpstra, [g for g in groups if g.size], "decreasing"),
        "monotonicity": attempt(monotonicity, [g.mean() for g in groups if g.size], "decreasing"),
        "n_correct_rollouts": len(per_rollout),
        "n_problems": len(per_problem),
    }


def analyse_boundary(correct: pd.DataFrame, solve: pd.DataFrame, cfg: BoundaryConfig) -> BoundaryAnalysis:
    """Bucket correct rollouts by student log-PPL and join their problems' solve rates; pure."""
    missing = [c for c in (*SAMPLE_KEY, "student_log_ppl") if c not in correct.columns]
    if missing:
        raise ValueError(f"correct rollouts lack columns {missing}")
    base = correct[[*SAMPLE_KEY, "student_log_ppl"]].drop_duplicates(list(SAMPLE_KEY)).copy()
    base["bucket"] = quantile_buckets(base["student_log_ppl"].to_numpy(), cfg.n_buckets)
    per_rollout = base.merge(solve, on=["benchmark", "problem_id"], how="left", validate="many_to_one")
    unmatched = per_rollout["solve_rate"].isna()
    if unmatched.any():
        first = per_rollout.loc[unmatched].iloc[0]
        raise ValueError(f"{int(unmatched.sum())} correct rollouts have no fresh samples of their problem, "
                         f"e.g. {first['benchmark']}/{first['problem_id']}")
    per_rollout = per_rollout.sort_values(["bucket", *SAMPLE_KEY]).reset_index(drop=True)
    rate = per_rollout["solve_rate"]
    shares = per_rollout.assign(sometimes=(rate > 0) & (rate < 1), always=rate == 1)  # boundary, always-solved
    buckets = bucket_summary(shares, cfg.n_buckets, "student",
                             {"solve": "solve_rate", "sometimes": "sometimes", "always": "always"},
                             level=cfg.level, n_boot=cfg.n_boot, seed=cfg.seed)
    return BoundaryAnalysis(per_rollout, buckets, boundary_statistics(per_rollout, cfg.n_buckets, level=cfg.level))


def run_boundary(student: Backend, rollouts: pd.DataFrame, problems: Sequence[Problem], cfg: BoundaryConfig,
                 run_dir: str | os.PathLike, *, grade_workers: int | None = None,
                 progress: bool = True) -> tuple[BoundaryAnalysis, pd.DataFrame]:
    """Score every rollout with the student, sample fresh solves of problems with a correct rollout,
    analyse. Returns the analysis and the student scores of all rollouts (the weights need them)."""
    run = Path(run_dir)
    scores = score_rollouts(student, student.encode, rollouts, run / "student_scores", model=model_name(student),
                            progress=progress)
    scored = rollouts.merge(scores[[*SAMPLE_KEY, "log_ppl"]].rename(columns={"log_ppl": "student_log_ppl"}),
                            on=list(SAMPLE_KEY), validate="one_to_one")
    correct = scored[scored["correct"].astype(bool)]
    if len(correct) < cfg.n_buckets:
        raise ValueError(f"only {len(correct)} correct rollouts: too few for {cfg.n_buckets} buckets")
    with_correct = set(zip(correct["benchmark"], correct["problem_id"]))
    chosen = [p for p in problems if (p.benchmark, p.problem_id) in with_correct]
    log.info("boundary: %d correct rollouts on %d problems; %d fresh samples each", len(correct), len(chosen),
             cfg.n_samples)
    # Not the rollout stage's seed: the same seed and unit layout would redraw the rollouts themselves.
    sampling = replace(cfg.sampling, seed=derive_seed(cfg.seed, "boundary"))
    samples = generate_samples(student, chosen, sampling, run / "student_extra",
                               unit_size=cfg.items_per_unit(),
                               grade_workers=grade_workers, progress=progress)
    return analyse_boundary(correct, solve_counts(samples), cfg), scores


def boundary_markdown(analysis: BoundaryAnalysis, decimals: int = 1) -> str:
    """The bucket table as printed: solve rate and boundary share, each with its interval."""
    b = analysis.buckets

    def cell(name: str) -> list[str]:
        if f"{name}_pct" not in b.columns:
            return ["n/a"] * len(b)
        return [f"{v:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]" if np.isfinite(v) else "n/a"
                for v, lo, hi in zip(b[f"{name}_pct"], b[f"{name}_ci_lo"], b[f"{name}_ci_hi"])]

    table = pd.DataFrame({
        "rollouts": b["n_rollouts"].to_numpy(), "problems": b["n_problems"].to_numpy(),
        "student PPL": [f"{v:.3f}" for v in b["student_ppl_mean"]],
        "solve rate %": cell("solve"), "solved sometimes %": cell("sometimes"), "always solved %": cell("always"),
    }, index=pd.Index(b["bucket"], name="student-PPL bucket"))
    return (f"Correct rollouts by student-PPL bucket (Q1 lowest PPL, {b['bucket'].iloc[-1]} highest) vs their "
            "problems' solve rate in fresh student samples, this run (no paper counterpart); "
            "[lo, hi] = 95% bootstrap interval over rollouts:\n" + to_markdown(table))


def write_boundary(analysis: BoundaryAnalysis, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``boundary_buckets.csv``, ``boundary_rollouts.csv``, ``boundary_statistics.json``, ``boundary_summary.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"buckets": out / "boundary_buckets.csv", "per_rollout": out / "boundary_rollouts.csv",
             "statistics": out / "boundary_statistics.json", "summary": out / "boundary_summary.md"}
    analysis.buckets.to_csv(paths["buckets"], index=False)
    analysis.per_rollout.to_csv(paths["per_rollout"], index=False, float_format="%.6g")
    paths["statistics"].write_text(json.dumps(analysis.statistics, indent=2, default=float) + "\n")
    paths["summary"].write_text(boundary_markdown(analysis))
    return paths
