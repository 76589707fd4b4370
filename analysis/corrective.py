"""Teacher perplexity versus corrective capability: can the teacher recover a wrong student rollout?

The paper's prefix-continuation test of the claim behind SCOPE's teacher-side weights, with the teacher's
from-scratch solve rate as a control; the design and the stages: docs/analysis.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.configs import CorrectiveConfig
from analysis.rollouts import score_rollouts
from analysis.stats import attempt, bootstrap_difference_ci, jonckheere_terpstra, logistic_regression, monotonicity, spearman
from eval.generate import generate_samples
from eval.metrics import bootstrap_ci
from eval.reference import PAPER_SOURCE, paper_recovery
from eval.tables import MetricTable, format_cells, to_markdown, write_tables
from workbench.grading import GradeCache, GradingPool
from workbench.models import Backend
from workbench.records import SAMPLE_KEY, Problem, ShardStore
from workbench.sampling import grade_rows
from workbench.stages import WorkUnit, derive_seed, model_name, run_units, stage, weights_sha256

log = logging.getLogger(__name__)

RATIO_INDEX = "r"
PAPER_BUCKETS = 4  # the paper reports teacher-PPL quartiles
CONTINUATION_KEY = (*SAMPLE_KEY, "ratio", "cont_idx")
CONTINUATION_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("ratio", pa.float64()),
        ("cont_idx", pa.int32()),
        ("prefix_chars", pa.int32()),
        ("response_chars", pa.int32()),
        ("at_separator", pa.bool_()),
        ("continuation", pa.string()),
        ("n_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("correct", pa.bool_()),
        ("extracted", pa.string()),
        ("grade_error", pa.string()),
    ]
)


@dataclass(frozen=True)
class Cut:
    """Where a response is truncated: ``prefix_chars`` characters kept."""

    prefix_chars: int
    at_separator: bool


def truncation_point(response: str, ratio: float, separator: str) -> Cut:
    """The cut just after the separator whose end lies nearest ``ratio * len(response)``.

    A cut that would keep the whole response leaves nothing to redo, so separators ending the
    response are not candidates; ties go to the earlier cut. A response with no usable
    separator is cut at the nearest character instead (``at_separator`` False), so every wrong
    rollout stays in the experiment and the fallback can be counted.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must lie strictly between 0 and 1, got {ratio}")
    if not separator:
        raise ValueError("separator must be a non-empty string")
    target = ratio * len(response)
    ends, start = [], response.find(separator)
    while start != -1:
        end = start + len(separator)
        if end < len(response):
            ends.append(end)
        start = response.find(separator, start + 1)
    if ends:
        return Cut(min(ends, key=lambda e: (abs(e - target), e)), True)
    return Cut(int(np.clip(round(target), 0, len(response))), False)


def quantile_buckets(values: Sequence[float] | np.ndarray, n_buckets: int = 4) -> np.ndarray:
    """Labels "Q1".."Qn" by quantile of ``values`` (Q1 lowest), buckets as equal in size as possible.

    ``pandas.qcut`` of the ranks, ties ranked in order of appearance, so equal values may straddle
    a boundary rather than leave buckets empty or unequal; when the sizes cannot be equal, the
    outer buckets take the extra values.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < n_buckets:
        raise ValueError(f"need at least {n_buckets} values to form {n_buckets} buckets, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("bucketed values must be finite")
    ranks = pd.Series(arr).rank(method="first")
    return pd.qcut(ranks, n_buckets, labels=bucket_labels(n_buckets)).astype(str).to_numpy()


def bucket_labels(n_buckets: int) -> list[str]:
    return [f"Q{i + 1}" for i in range(n_buckets)]


def gap_label(n_buckets: int) -> str:
    """Column of the lowest-minus-highest bucket difference, e.g. "Q1−Q4"."""
    return f"Q1−Q{n_buckets}"


# ------------------------------------------------------------------------------------- stages
def _items_hash(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    rows = sorted(map(tuple, frame[list(columns)].astype(str).to_numpy()))
    return hashlib.sha256(repr(rows).encode("utf-8")).hexdigest()


def continue_from_prefixes(teacher: Backend, wrong: pd.DataFrame, cfg: CorrectiveConfig,
                           out_dir: str | os.PathLike, *, grade_workers: int | None = None,
                           progress: bool = True) -> pd.DataFrame:
    """``cfg.n_continuations`` graded teacher continuations of each wrong rollout at each ratio.

    The teacher sees the rollout's prompt followed by its prefix; a continuation is graded on
    prefix + continuation (the whole response the teacher completed) and counts as wrong when cut
    off at ``max_new_tokens``.
    """
    missing = [c for c in (*SAMPLE_KEY, "prompt", "response", "answer") if c not in wrong.columns]
    if missing:
        raise ValueError(f"wrong rollouts lack columns {missing}")
    out = Path(out_dir)
    sampling = cfg.sampling
    identity = {"model": model_name(teacher), "weights_sha256": weights_sha256(model_name(teacher)),
                "sampling": asdict(sampling), "ratios": list(cfg.ratios),
                "separator": cfg.separator, "unit_sequences": cfg.unit_sequences,
                "rollouts_sha256": _items_hash(wrong, [*SAMPLE_KEY, "response"])}
    store = ShardStore(out, CONTINUATION_SCHEMA, CONTINUATION_KEY)
    records = wrong.reset_index(drop=True)
    items = [(i, r) for i in range(len(records)) for r in cfg.ratios]
    units = []
    size = cfg.items_per_unit(cfg.n_continuations)
    for index, start in enumerate(range(0, len(items), size)):
        chunk = tuple(items[start : start + size])
        keys = tuple((*(records.loc[i, c] for c in SAMPLE_KEY), r, j)
                     for i, r in chunk for j in range(cfg.n_continuations))
        seed = derive_seed(cfg.seed, "continuations", *keys[:: cfg.n_continuations])
        units.append(WorkUnit(index, chunk, keys, seed))
    cache = GradeCache()

    def produce(unit: WorkUnit) -> pd.DataFrame:
        prompts, cuts = [], []
        for i, ratio in unit.items:
            row = records.loc[i]
            cut = truncation_point(row["response"], ratio, cfg.separator)
            cuts.append(cut)
            prompts.append(row["prompt"] + row["response"][: cut.prefix_chars])
        groups = teacher.generate(prompts, replace(sampling, seed=unit.seed))
        rows = []
        for (i, ratio), cut, group in zip(unit.items, cuts, groups):
            row = records.loc[i]
            prefix = row["response"][: cut.prefix_chars]
            for j, completion in enumerate(group):
                rows.append({
                    **{c: row[c] for c in SAMPLE_KEY}, "ratio": ratio, "cont_idx": j,
                    "prefix_chars": cut.prefix_chars, "response_chars": len(row["response"]),
                    "at_separator": cut.at_separator, "continuation": completion.text,
                    "response": prefix + completion.text, "answer": row["answer"],
                    "n_tokens": completion.n_tokens, "finish_reason": completion.finish_reason,
                })
        grade_rows(rows, grader=grader, cache=cache, progress=False)
        for r in rows:
            del r["response"], r["answer"]
        return pd.DataFrame(rows)

    with stage(out, identity, cfg.seed, store=store), GradingPool(grade_workers) as grader:
        run_units(store, units, produce, desc=f"continuations {model_name(teacher)}", progress=progress)
    frame = store.read()
    expected = len(items) * cfg.n_continuations
    wanted = {(*k, r) for k in records[list(SAMPLE_KEY)].itertuples(index=False) for r in cfg.ratios}
    frame = frame[[(*k,) in wanted for k in frame[[*SAMPLE_KEY, "ratio"]].itertuples(index=False)]]
    if len(frame) != expected:
        raise RuntimeError(f"{out}: expected {expected} continuations on disk, found {len(frame)}")
    return frame.reset_index(drop=True)


def teacher_solve_rates(teacher: Backend, problems: Sequence[Problem], cfg: CorrectiveConfig,
                        out_dir: str | os.PathLike, *, grade_workers: int | None = None,
                        progress: bool = True) -> pd.DataFrame:
    """The teacher's from-scratch solve rate per problem (``benchmark, problem_id, teacher_solve_rate``)."""
    sampling = replace(cfg.sampling, n=cfg.scratch_samples, seed=derive_seed(cfg.seed, "teacher_scratch"))
    samples = generate_samples(teacher, problems, sampling, out_dir,
                               unit_size=cfg.items_per_unit(cfg.scratch_samples),
                               grade_workers=grade_workers, progress=progress)
    return (samples.groupby(["benchmark", "problem_id"], sort=False)["correct"].mean()
            .rename("teacher_solve_rate").reset_index())


# ------------------------------------------------------------------------------------ analysis
@dataclass(frozen=True)
class RecoveryAnalysis:
    """The experiment's results.

    table: recovery rate (percent) by truncation ratio (rows) and teacher-PPL bucket (columns,
        plus the Q1−Q4 gap), bootstrap intervals over wrong rollouts, the paper's values attached.
    per_rollout: one row per (wrong rollout, ratio): key, bucket, teacher_log_ppl,
        teacher_solve_rate, n_continuations, recovered, recovery_rate.
    buckets: per bucket: rollouts, problems, mean teacher PPL and NLL, teacher solve rate (percent, CI).
    statistics: JSON-ready tests (see :func:`recovery_statistics`).
    """

    table: MetricTable
    per_rollout: pd.DataFrame
    buckets: pd.DataFrame
    statistics: dict[str, Any] = field(default_factory=dict)


def paper_recovery_table() -> pd.DataFrame:
    """The paper's recovery rates (percent) in this module's shape: rows r, columns Q1..Q4 and the gap.

    The gap column is computed here from the paper's rounded cells (so 19.5 where the text says 19.4).
    """
    ref = paper_recovery()
    wide = ref.pivot(index="truncation_ratio", columns="bucket", values="recovery_rate_pct")
    wide.index = wide.index.astype(float)
    wide.index.name = RATIO_INDEX
    wide = wide.reindex(columns=bucket_labels(PAPER_BUCKETS))
    wide[gap_label(PAPER_BUCKETS)] = wide.iloc[:, 0] - wide.iloc[:, -1]
    wide.attrs["source"] = PAPER_SOURCE
    return wide


def per_rollout_recovery(wrong: pd.DataFrame, continuations: pd.DataFrame, n_buckets: int) -> pd.DataFrame:
    """Join continuations to their rollouts: recovered counts per (rollout, ratio) and PPL buckets.

    ``wrong`` needs the sample key and ``teacher_log_ppl`` (and optionally ``teacher_solve_rate``).
    Buckets are quantiles of teacher log-PPL over the wrong rollouts, the same for every ratio.
    """
    need = [*SAMPLE_KEY, "teacher_log_ppl"]
    missing = [c for c in need if c not in wrong.columns]
    if missing:
        raise ValueError(f"wrong rollouts lack columns {missing}")
    base = wrong.drop_duplicates(list(SAMPLE_KEY)).reset_index(drop=True).copy()
    base["bucket"] = quantile_buckets(base["teacher_log_ppl"].to_numpy(), n_buckets)
    counts = (continuations.assign(correct=continuations["correct"].astype(int))
              .groupby([*SAMPLE_KEY, "ratio"], sort=False)
              .agg(n_continuations=("correct", "size"), recovered=("correct", "sum"),
                   prefix_chars=("prefix_chars", "first"), response_chars=("response_chars", "first"),
                   at_separator=("at_separator", "first"))
              .reset_index())
    keep = [c for c in (*SAMPLE_KEY, "bucket", "teacher_log_ppl", "teacher_solve_rate") if c in base.columns]
    merged = counts.merge(base[keep], on=list(SAMPLE_KEY), how="inner", validate="many_to_one")
    if len(merged) != len(counts):
        raise ValueError(f"{len(counts) - len(merged)} continuation groups have no matching wrong rollout")
    merged["recovery_rate"] = merged["recovered"] / merged["n_continuations"]
    merged["cut_ratio"] = merged["prefix_chars"] / merged["response_chars"].clip(lower=1)
    return merged.sort_values(["ratio", "bucket", *SAMPLE_KEY]).reset_index(drop=True)


def recovery_table(per_rollout: pd.DataFrame, n_buckets: int, *, level: float = 0.95, n_boot: int = 2000,
                   seed: int = 0) -> MetricTable:
    """Recovery rate (percent) per ratio x bucket with percentile bootstrap intervals over wrong rollouts,
    and the Q1−Qn gap with an interval resampling the two buckets independently."""
    labels = bucket_labels(n_buckets)
    ratios = sorted(per_rollout["ratio"].unique())
    index = pd.Index([float(r) for r in ratios], name=RATIO_INDEX)
    gap = gap_label(n_buckets)
    values, lo, hi = (pd.DataFrame(np.nan, index=index, columns=[*labels, gap]) for _ in range(3))
    for r in ratios:
        part = per_rollout[per_rollout["ratio"] == r]
        rates = {b: 100.0 * part.loc[part["bucket"] == b, "recovery_rate"].to_numpy() for b in labels}
        for b in labels:
            if rates[b].size:
                values.loc[r, b], lo.loc[r, b], hi.loc[r, b] = bootstrap_ci(rates[b], level, n_boot, seed)
        if rates[labels[0]].size and rates[labels[-1]].size:
            values.loc[r, gap], lo.loc[r, gap], hi.loc[r, gap] = bootstrap_difference_ci(
                rates[labels[0]], rates[labels[-1]], level=level, n_boot=n_boot, seed=seed)
    return MetricTable(metric="recovery rate (%)", values=values, ci_lo=lo, ci_hi=hi)


def bucket_summary(per_rollout: pd.DataFrame, n_buckets: int, model: str, rates: Mapping[str, str], *,
                   level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per PPL bucket: rollouts, problems, mean ``<model>`` PPL and NLL (``<model>_ppl_mean``,
    ``<model>_nll_mean`` from ``<model>_log_ppl``) and, for each ``name: column`` of ``rates`` (values in
    0..1), its mean in percent with a bootstrap interval over rows (``name_pct``, ``name_ci_lo``,
    ``name_ci_hi``). The recovery and the boundary analyses summarise their buckets alike through it."""
    rows = []
    for b in bucket_labels(n_buckets):
        part = per_rollout[per_rollout["bucket"] == b]
        row: dict[str, Any] = {
            "bucket": b, "n_rollouts": len(part),
            "n_problems": part[["benchmark", "problem_id"]].drop_duplicates().shape[0],
            f"{model}_ppl_mean": float(np.exp(part[f"{model}_log_ppl"]).mean()) if len(part) else np.nan,
            f"{model}_nll_mean": float(part[f"{model}_log_ppl"].mean()) if len(part) else np.nan,
        }
        if len(part):
            for name, column in rates.items():
                mean, lo, hi = bootstrap_ci(100.0 * part[column].to_numpy().astype(float), level, n_boot, seed)
                row.update({f"{name}_pct": mean, f"{name}_ci_lo": lo, f"{name}_ci_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def recovery_statistics(per_rollout: pd.DataFrame, n_buckets: int, *, level: float = 0.95) -> dict[str, Any]:
    """Every test of "higher teacher PPL, lower recovery", per ratio and pooled.

    Per ratio (unit: a wrong rollout): Spearman's rho of teacher log-PPL with the rollout's
    recovery rate; the logistic slope of continuation success on teacher log-PPL (binomial counts
    per rollout); the Jonckheere-Terpstra test for recovery falling from Q1 to Qn; the sign
    pattern of bucket means. Pooled over ratios: rho of log-PPL with each rollout's recovery
    averaged over ratios; logistic slope with the ratio as a covariate, and again with the
    teacher's from-scratch solve rate as a second control (when present), so a slope that
    survives the control is not just problem difficulty; and the number of ratios where Q1 > Qn.
    """
    labels = bucket_labels(n_buckets)
    out: dict[str, Any] = {"unit": "wrong student rollout (per ratio) / continuation (logistic trials)",
                           "per_ratio": {}}
    gaps = 0
    for r in sorted(per_rollout["ratio"].unique()):
        part = per_rollout[per_rollout["ratio"] == r]
        groups = [part.loc[part["bucket"] == b, "recovery_rate"].to_numpy() for b in labels]
        means = [g.mean() if g.size else np.nan for g in groups]
        gaps += bool(groups[0].size and groups[-1].size and means[0] > means[-1])
        out["per_ratio"][str(float(r))] = {
            "spearman": attempt(spearman, part["teacher_log_ppl"], part["recovery_rate"]),
            # cluster-robust: a rollout's continuations share its prefix, so they are not independent trials
            "logistic": attempt(logistic_regression, part["teacher_log_ppl"].to_numpy(), part["recovered"].to_numpy(),
                                part["n_continuations"].to_numpy(), names=["teacher_log_ppl"], level=level,
                                se="cluster"),
            "trend": attempt(jonckheere_terpstra, [g for g in groups if g.size], "decreasing"),
            "monotonicity": attempt(monotonicity, [m for m in means if np.isfinite(m)], "decreasing"),
        }
    per_rollout_mean = per_rollout.groupby(list(SAMPLE_KEY), sort=False).agg(
        teacher_log_ppl=("teacher_log_ppl", "first"), recovery_rate=("recovery_rate", "mean"))
    # pooled fits see each rollout once per ratio: its rows form one cluster
    rollout_of = per_rollout[list(SAMPLE_KEY)].astype(str).agg("/".join, axis=1).to_numpy()
    pooled: dict[str, Any] = {
        "spearman_mean_over_ratios": attempt(spearman, per_rollout_mean["teacher_log_ppl"],
                                             per_rollout_mean["recovery_rate"]),
        "logistic_ratio_controlled": attempt(
            logistic_regression, per_rollout[["teacher_log_ppl", "ratio"]].to_numpy(),
            per_rollout["recovered"].to_numpy(), per_rollout["n_continuations"].to_numpy(),
            names=["teacher_log_ppl", "ratio"], level=level, se="cluster", clusters=rollout_of),
        "ratios_with_q1_above_qn": gaps,
        "n_ratios": int(per_rollout["ratio"].nunique()),
    }
    if "teacher_solve_rate" in per_rollout.columns and per_rollout["teacher_solve_rate"].notna().all():
        pooled["logistic_ratio_and_teacher_solve_controlled"] = attempt(
            logistic_regression, per_rollout[["teacher_log_ppl", "ratio", "teacher_solve_rate"]].to_numpy(),
            per_rollout["recovered"].to_numpy(), per_rollout["n_continuations"].to_numpy(),
            names=["teacher_log_ppl", "ratio", "teacher_solve_rate"], level=level, se="cluster",
            clusters=rollout_of)
        rollouts = per_rollout.drop_duplicates(list(SAMPLE_KEY))
        pooled["spearman_teacher_log_ppl_vs_teacher_solve"] = attempt(
            spearman, rollouts["teacher_log_ppl"], rollouts["teacher_solve_rate"])
    out["pooled"] = pooled
    return out


def analyse_recovery(wrong: pd.DataFrame, continuations: pd.DataFrame, cfg: CorrectiveConfig,
                     solve_rates: pd.DataFrame | None = None) -> RecoveryAnalysis:
    """Tables and statistics from the stored stages; pure, so it can be rerun on any saved run."""
    if solve_rates is not None:
        wrong = wrong.merge(solve_rates, on=["benchmark", "problem_id"], how="left", validate="many_to_one")
    per_rollout = per_rollout_recovery(wrong, continuations, cfg.n_buckets)
    table = recovery_table(per_rollout, cfg.n_buckets, level=cfg.level, n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.n_buckets == PAPER_BUCKETS:
        paper = paper_recovery_table().reindex(index=table.values.index, columns=table.values.columns)
        table = MetricTable(table.metric, table.values, table.ci_lo, table.ci_hi, paper=paper)
    else:
        log.info("the paper reports quartiles; with %d buckets no paper values are shown", cfg.n_buckets)
    solve = {"teacher_solve": "teacher_solve_rate"} if "teacher_solve_rate" in per_rollout.columns else {}
    buckets = bucket_summary(per_rollout.drop_duplicates(list(SAMPLE_KEY)), cfg.n_buckets, "teacher", solve,
                             level=cfg.level, n_boot=cfg.n_boot, seed=cfg.seed)
    statistics = recovery_statistics(per_rollout, cfg.n_buckets, level=cfg.level)
    statistics["n_wrong_rollouts"] = int(per_rollout.drop_duplicates(list(SAMPLE_KEY)).shape[0])
    statistics["n_continuations"] = int(per_rollout["n_continuations"].sum())
    statistics["cuts_without_separator"] = int((~per_rollout["at_separator"].astype(bool)).sum())
    if "teacher_solve_pct" in buckets.columns:
        statistics["teacher_solve_by_bucket"] = attempt(monotonicity, buckets["teacher_solve_pct"].dropna(), "decreasing")
    return RecoveryAnalysis(table, per_rollout, buckets, statistics)


def run_corrective(student: Backend, teacher: Backend, rollouts: pd.DataFrame, problems: Sequence[Problem],
                   cfg: CorrectiveConfig, run_dir: str | os.PathLike, *, grade_workers: int | None = None,
                   progress: bool = True) -> RecoveryAnalysis:
    """All stages after the rollouts: teacher scores, continuations, from-scratch solves, analysis."""
    run = Path(run_dir)
    wrong = rollouts[~rollouts["correct"].astype(bool)].reset_index(drop=True)
    if len(wrong) < cfg.n_buckets:
        raise ValueError(f"only {len(wrong)} wrong rollouts: too few for {cfg.n_buckets} buckets; "
                         "sample more problems or rollouts")
    log.info("corrective: %d wrong of %d rollouts (%d problems)", len(wrong), len(rollouts),
             wrong[["benchmark", "problem_id"]].drop_duplicates().shape[0])
    scores = score_rollouts(teacher, teacher.encode, wrong, run / "teacher_scores", model=model_name(teacher),
                            progress=progress)
    wrong = wrong.merge(scores[[*SAMPLE_KEY, "log_ppl"]].rename(columns={"log_ppl": "teacher_log_ppl"}),
                        on=list(SAMPLE_KEY), validate="one_to_one")
    continuations = continue_from_prefixes(teacher, wrong, cfg, run / "continuations",
                                           grade_workers=grade_workers, progress=progress)
    with_wrong = set(zip(wrong["benchmark"], wrong["problem_id"]))
    scratch_problems = [p for p in problems if (p.benchmark, p.problem_id) in with_wrong]
    solve = teacher_solve_rates(teacher, scratch_problems, cfg, run / "teacher_scratch",
                                grade_workers=grade_workers, progress=progress)
    return analyse_recovery(wrong, continuations, cfg, solve)


def recovery_markdown(analysis: RecoveryAnalysis, decimals: int = 1) -> str:
    """This run's table (± half-width of the interval) and, below it, the paper's, each titled."""
    ours = MetricTable(analysis.table.metric, analysis.table.values, analysis.table.ci_lo, analysis.table.ci_hi)
    last = bucket_labels(int(analysis.buckets["bucket"].nunique()))[-1]
    parts = [f"Recovery rate (%) of teacher continuations, this run. Rows: r, the fraction of a wrong rollout kept "
             f"before the teacher continues; columns: Q1..{last}, the wrong rollouts' teacher-PPL buckets (Q1 lowest), "
             f"and Q1−{last} their gap; ± = half-width of the 95% bootstrap interval over wrong rollouts:\n",
             to_markdown(format_cells(ours, decimals=decimals, ci=True))]
    if analysis.table.paper is not None:
        paper = analysis.table.paper.map(lambda v: "n/a" if not np.isfinite(v) else f"{v:.{decimals}f}")
        paper.index.name = RATIO_INDEX
        parts += [f"\nRecovery rate (%), {PAPER_SOURCE} (Tables 6-7; gap from its rounded cells):\n", to_markdown(paper)]
    return "".join(parts)


def write_recovery(analysis: RecoveryAnalysis, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``recovery.{md,tex,csv}`` (with the paper's columns), the per-rollout and per-bucket CSVs,
    ``recovery_statistics.json`` and ``recovery_summary.md`` (the two tables as printed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_tables(analysis.table, out, "recovery", ci=True,
                         caption="Recovery rate (%) by truncation ratio and teacher-PPL bucket, beside the paper's")
    paths["per_rollout"] = out / "recovery_rollouts.csv"
    analysis.per_rollout.to_csv(paths["per_rollout"], index=False, float_format="%.6g")
    paths["buckets"] = out / "recovery_buckets.csv"
    analysis.buckets.to_csv(paths["buckets"], index=False)
    paths["statistics"] = out / "recovery_statistics.json"
    paths["statistics"].write_text(json.dumps(analysis.statistics, indent=2, default=float) + "\n")
    paths["summary"] = out / "recovery_summary.md"
    paths["summary"].write_text(recovery_markdown(analysis))
    return paths
