"""What SCOPE's dual-path weights do to a batch: distributions, effective sample size, tau sweeps.

A weight scheme is only as useful as the spread it creates. If the softmax puts almost all of a
group's mass on one rollout, the update learns from one sample; if it is nearly uniform, the
weighting changes nothing. The effective sample size of a (group, path) subset,
ESS = (sum w)^2 / sum w^2, runs from 1 (one rollout takes all) to the subset size (uniform), so
ESS / n says how much of the batch each path really uses, and a tau sweep shows how the
temperature trades focus for coverage.

Inputs are any rollout frame: the trainer's per-step snapshots (with ``step``) or a scored
rollout file (e.g. the analysis runs'). Weights are recomputed with ``train.scope.scope_weights``
from the log-PPLs, so the numbers here are the objective's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from train.scope import WeightConfig, scope_weights
from train.scope import effective_sample_size as subset_ess
from workbench.perplexity import log_perplexity, pad_logprobs

log = logging.getLogger(__name__)

PATHS = {True: "mle", False: "opd"}
PATH_LABELS = {"mle": "correct (student PPL, MLE)", "opd": "incorrect (teacher PPL, OPD)"}
DEFAULT_TAUS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _log_ppl_from_lists(values: pd.Series) -> np.ndarray:
    """Mean token NLL of each row's log-prob list; NaN where the list is missing or empty."""
    out = np.full(len(values), np.nan)
    present = [i for i, v in enumerate(values) if v is not None and not (np.isscalar(v) and pd.isna(v)) and len(v)]
    if present:
        padded, mask = pad_logprobs([np.asarray(values.iloc[i], dtype=np.float32) for i in present])
        out[present] = log_perplexity(padded, mask).double().numpy()
    return out


def prepare(rollouts: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``group``, ``path``, ``student_log_ppl`` and ``teacher_log_ppl`` columns.

    Log-PPLs are taken from those columns when present, else computed from ``student_logps`` /
    ``teacher_logps`` lists. Groups are ``group_id`` (within ``step`` when snapshots carry
    one), else (benchmark, problem_id). The path comes from ``correct``.
    """
    if "correct" not in rollouts.columns:
        raise ValueError(f"rollouts need a 'correct' column; have {list(rollouts.columns)}")
    frame = rollouts.reset_index(drop=True).copy()
    for who in ("student", "teacher"):
        column = f"{who}_log_ppl"
        if column not in frame.columns:
            lists = f"{who}_logps"
            if lists not in frame.columns:
                raise ValueError(f"rollouts need {column!r} or {lists!r}; have {list(frame.columns)}")
            frame[column] = _log_ppl_from_lists(frame[lists])
    if "group_id" in frame.columns:
        keys = ["step", "group_id"] if "step" in frame.columns else ["group_id"]
    elif {"benchmark", "problem_id"} <= set(frame.columns):
        keys = ["step", "benchmark", "problem_id"] if "step" in frame.columns else ["benchmark", "problem_id"]
    else:
        raise ValueError("rollouts need 'group_id' or 'benchmark' and 'problem_id' to form groups")
    frame["group"] = frame.groupby(keys, sort=False).ngroup()
    frame["path"] = [PATHS[bool(c)] for c in frame["correct"]]
    return frame


def compute_weights(frame: pd.DataFrame, cfg: WeightConfig = WeightConfig()) -> np.ndarray:
    """``scope_weights`` for a prepared frame (see :func:`prepare`)."""
    weights = scope_weights(
        torch.tensor(frame["group"].to_numpy(dtype=np.int64)),
        torch.tensor(frame["correct"].to_numpy(dtype=bool)),
        torch.tensor(frame["student_log_ppl"].to_numpy(dtype=np.float64)),
        torch.tensor(frame["teacher_log_ppl"].to_numpy(dtype=np.float64)),
        cfg,
    )
    return weights.numpy()


def effective_sample_size(frame: pd.DataFrame, weight: str = "weight") -> pd.DataFrame:
    """Per (tau, step, group, path), whichever exist: subset size ``n``, ``ess`` (the objective's own
    ``train.scope.effective_sample_size``) and ``ess_frac`` = ess / n, subsets in order of appearance.

    Rollouts with weight 0 (excluded by a NaN PPL or an "off" path) still count in ``n``, so an
    excluded rollout lowers ``ess_frac``. A subset whose weights are all 0 gets ESS 0.
    """
    keys = [k for k in ("tau", "step", "group", "path") if k in frame.columns]
    subset = frame.groupby(keys, sort=False, dropna=False).ngroup()
    ess, size = subset_ess(torch.tensor(frame[weight].to_numpy(dtype=np.float64)),
                           torch.tensor(subset.to_numpy(dtype=np.int64)))
    out = frame[keys][~subset.duplicated().to_numpy()].reset_index(drop=True)
    out["n"] = size.numpy().astype(np.int64)
    out["ess"] = ess.numpy()
    out["ess_frac"] = out["ess"] / out["n"]
    return out


def tau_sweep(frame: pd.DataFrame, taus: Sequence[float] = DEFAULT_TAUS,
              base: WeightConfig = WeightConfig()) -> pd.DataFrame:
    """Every rollout's weight under each tau (other settings from ``base``): long frame with ``tau``."""
    if not taus:
        raise ValueError("taus is empty")
    parts = [frame.assign(tau=float(tau), weight=compute_weights(frame, replace(base, tau=float(tau))))
             for tau in taus]
    return pd.concat(parts, ignore_index=True)


def summarise(weighted: pd.DataFrame, by: Sequence[str] = ("tau", "path")) -> pd.DataFrame:
    """Per ``by`` cell: rollouts, weight mean/sd/quantiles, mean largest weight per subset, mean ESS/n,
    and Spearman's rho of weight with the path's own log-PPL (within a subset the order is fixed by
    construction; across groups it shows how much the per-group normalisation scrambles it)."""
    by = [b for b in by if b in weighted.columns]
    if not by:
        raise ValueError(f"none of the grouping columns {list(by)} is in the frame")
    ess = effective_sample_size(weighted)
    rows = []
    for key, part in weighted.groupby(by, sort=True):
        cell = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        sub = ess
        for column, value in cell.items():
            sub = sub[sub[column] == value]
        w = part["weight"].to_numpy(dtype=np.float64)
        own = np.where(part["path"] == "mle", part["student_log_ppl"], part["teacher_log_ppl"]).astype(np.float64)
        finite = np.isfinite(own)
        rho = (float(pd.Series(w[finite]).corr(pd.Series(own[finite]), method="spearman"))
               if finite.sum() > 2 else np.nan)
        subset_keys = [k for k in ("step", "group", "path") if k in part.columns]
        q10, q50, q90 = np.quantile(w, [0.1, 0.5, 0.9])
        rows.append({
            **cell, "n_rollouts": len(part), "weight_mean": float(w.mean()), "weight_sd": float(w.std(ddof=0)),
            "weight_p10": float(q10), "weight_median": float(q50), "weight_p90": float(q90),
            "max_weight_mean": float(part.groupby(subset_keys, sort=False)["weight"].max().mean()),
            "ess_frac_mean": float(sub["ess_frac"].mean()), "n_subsets": len(sub),
            # a subset of one rollout has ESS/n = 1 whatever the weights; these are where weights can act
            "ess_frac_mean_2plus": float(sub.loc[sub["n"] >= 2, "ess_frac"].mean()),
            "n_subsets_2plus": int((sub["n"] >= 2).sum()),
            "spearman_weight_vs_own_log_ppl": rho,
        })
    return pd.DataFrame(rows)


def snapshot_weights(snapshots: pd.DataFrame) -> pd.DataFrame:
    """Prepared snapshot rows with their weights: the trainer's logged ``weight`` when present, else
    recomputed at the paper's default (tau 1). ``path`` is derived from ``correct`` (SCOPE's routing)."""
    frame = prepare(snapshots)
    if "weight" not in frame.columns or frame["weight"].isna().all():
        frame["weight"] = compute_weights(frame)
    return frame


def case_study(frame: pd.DataFrame, tau: float = 1.0, groups: int = 4) -> pd.DataFrame:
    """The highest- and lowest-weighted rollout of each path in a few groups, with their text (the
    paper's Appendix D): what the weights prefer, read off the responses themselves.

    ``frame`` is a per-rollout frame with ``prompt`` and ``response`` besides what :func:`prepare`
    reads. Groups are those whose paths both hold at least two rollouts (where a weight can choose),
    the ones with the widest weight range first.
    """
    missing = [c for c in ("prompt", "response") if c not in frame.columns]
    if missing:
        raise ValueError(f"a case study needs the rollouts' {missing}")
    weighted = tau_sweep(prepare(frame), [tau])
    sizes = weighted.groupby(["group", "path"]).size().unstack(fill_value=0)
    eligible = sizes[(sizes.get("mle", 0) >= 2) & (sizes.get("opd", 0) >= 2)].index
    part = weighted[weighted["group"].isin(eligible)]
    spread = part.groupby(["group", "path"])["weight"].agg(lambda w: w.max() - w.min()).groupby("group").sum()
    chosen = spread.sort_values(ascending=False, kind="stable").index[:groups]
    rows = []
    for group in chosen:
        for path, rollouts in part[part["group"] == group].groupby("path", sort=True):
            ordered = rollouts.sort_values("weight", ascending=False, kind="stable")
            for rank, row in (("highest", ordered.iloc[0]), ("lowest", ordered.iloc[-1])):
                own = row["student_log_ppl"] if path == "mle" else row["teacher_log_ppl"]
                rows.append({"group": int(group), "prompt": row["prompt"], "path": path, "rank": rank,
                             "weight": float(row["weight"]), "subset_size": len(rollouts),
                             "ppl": float(np.exp(own)), "response": row["response"]})
    return pd.DataFrame(rows)

