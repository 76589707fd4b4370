"""How much SCOPE's weights have to weigh: ESS/n per path and tau on one student's graded rollouts.

A softmax over perplexities only changes training when the perplexities inside a group differ. This
measures that on the student's own rollouts: every rollout is scored by the student and by the teacher
(each path reads its own scorer: student PPL on correct rollouts, teacher PPL on wrong ones), the weights
are ``train.scope.scope_weights`` over a tau sweep, and the effective sample size is the objective's own.
ESS/n near 1 means the weighting changes nothing. A subset of one rollout has ESS/n = 1 whatever the
weights, so the table gives the mean over every (group, path) subset and over subsets of two or more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.configs import RolloutConfig
from analysis.rollouts import sample_rollouts, score_rollouts
from analysis.weights import DEFAULT_TAUS, case_study, prepare, summarise, tau_sweep
from eval.generate import generate_samples
from workbench.models import Backend
from workbench.records import SAMPLE_KEY, Problem


@dataclass
class Spread:
    """per_rollout: key, tier, correct, response, both log-PPLs; tiers: accuracy and within-group spread
    per tier; table: the weight summary by tau and path; case: the case study at tau 1."""

    per_rollout: pd.DataFrame
    tiers: pd.DataFrame
    table: pd.DataFrame
    case: pd.DataFrame


def _within_group_sd(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean over subsets of two or more rollouts of the sd of each path's own log-PPL, per tier."""
    prepared = prepare(frame)
    prepared["own"] = prepared["student_log_ppl"].where(prepared["path"] == "mle", prepared["teacher_log_ppl"])
    sd = prepared.groupby(["benchmark", "group", "path"])["own"].agg(["std", "size"]).reset_index()
    sd = sd[sd["size"] >= 2]
    return sd.pivot_table(index="benchmark", columns="path", values="std", aggfunc="mean").add_prefix("sd_log_ppl_")


def measure(student: Backend, teacher: Backend, problems: Sequence[Problem], rollouts: RolloutConfig,
            run_dir: str | os.PathLike, *, student_name: str, teacher_name: str,
            taus: Sequence[float] = DEFAULT_TAUS, progress: bool = True) -> Spread:
    """Sample the student's rollouts and the teacher's own answers (for its accuracy), score the rollouts
    under both models and summarise the weights; every stage resumes from ``run_dir``."""
    run = Path(run_dir)
    sampling = rollouts.sampling
    frame = sample_rollouts(student, problems, sampling, run / "rollouts", unit_size=rollouts.items_per_unit(),
                            progress=progress)
    scored = frame[[*SAMPLE_KEY, "correct", "prompt", "response", "n_tokens", "finish_reason", "token_ids"]]
    for who, model, name in (("student", student, student_name), ("teacher", teacher, teacher_name)):
        scores = score_rollouts(model, model.encode, frame, run / f"{who}_scores", model=name, progress=progress)
        scored = scored.merge(scores[[*SAMPLE_KEY, "log_ppl"]].rename(columns={"log_ppl": f"{who}_log_ppl"}),
                              on=list(SAMPLE_KEY))
    # The teacher's score is read on wrong rollouts only, as in training (it scores no correct one there).
    scored["teacher_log_ppl"] = scored["teacher_log_ppl"].where(~scored["correct"].astype(bool))
    teacher_own = generate_samples(teacher, problems, sampling, run / "teacher_samples",
                                   unit_size=rollouts.items_per_unit(), progress=progress)
    tiers = scored.groupby("benchmark").agg(
        student_accuracy=("correct", "mean"), mean_tokens=("n_tokens", "mean"),
        truncated=("finish_reason", lambda s: float((s == "length").mean())))
    tiers["teacher_accuracy"] = teacher_own.groupby("benchmark")["correct"].mean()
    tiers = tiers.join(_within_group_sd(scored))
    per_rollout = scored.drop(columns=["token_ids"])
    table = summarise(tau_sweep(prepare(per_rollout), taus))
    return Spread(per_rollout, tiers.reset_index(), table, case_study(per_rollout, 1.0))


def ess_table(per_rollout: pd.DataFrame, taus: Sequence[float] = DEFAULT_TAUS) -> pd.DataFrame:
    """The weight summary by tau and path (``Spread.table``) from the per-rollout rows alone: what a
    committed ``per_rollout.parquet`` recomputes without any model."""
    return summarise(tau_sweep(prepare(per_rollout), taus))


def write_per_rollout(per_rollout: pd.DataFrame, path: str | os.PathLike) -> None:
    """Every rollout with its correctness and both log-PPLs, as zstd-compressed parquet (no index)."""
    per_rollout.reset_index(drop=True).to_parquet(path, compression="zstd", index=False)


def read_per_rollout(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_parquet(path)


def markdown(spread: Spread, note: str) -> str:
    """The spread as a short report: per-tier accuracies and spreads, ESS/n by tau and path, the case study."""
    ess = spread.table.pivot_table(index="tau", columns="path", values=["ess_frac_mean", "ess_frac_mean_2plus"])
    ess.columns = [f"{path} ESS/n ({'all subsets' if stat == 'ess_frac_mean' else 'subsets of 2+'})"
                   for stat, path in ess.columns]
    return "\n".join([
        "# How much SCOPE's weights spread on the toy student's rollouts", "", note, "",
        "## Per tier", "", spread.tiers.to_markdown(index=False, floatfmt=".3f"), "",
        "## Mean ESS/n by tau and path (mle: correct rollouts, student PPL^(+1/tau); opd: wrong rollouts, "
        "teacher PPL^(-1/tau))", "", ess.to_markdown(floatfmt=".3f"), "",
        # For log-normal weights ESS/n is about exp(-(sd/tau)^2): the spread a path needs for its weights to act.
        f"For weights over log-PPLs with standard deviation sd, ESS/n is about exp(-(sd/tau)^2): an ESS/n of 0.9 "
        f"at tau = 1 needs a within-group log-PPL sd of {np.sqrt(-np.log(0.9)):.2f} nats per token; the per-tier "
        "table gives the measured sds.", "",
        "## Case study at tau = 1: the highest- and lowest-weighted rollout of each path", "",
        spread.case.to_markdown(index=False, floatfmt=".3f") if not spread.case.empty else "(no group qualifies)", "",
    ])

