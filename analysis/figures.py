"""Every figure of the workbench but evaluation's own Pass@k curves (``eval.curves``), in one house style.

:func:`regenerate` (``make figures``) redraws them from the committed data under ``results/``, so a fresh
clone redraws every committed figure byte for byte; the toy experiments' figures are drawn here too.
Which inputs give which figure: docs/analysis.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from analysis.experiments import METRICS, ExperimentResult, change_from_base, variants_of
from analysis.rollouts import ANALYSIS_KIND
from analysis.stats import logistic_regression
from analysis.weights import DEFAULT_TAUS, PATH_LABELS, effective_sample_size, prepare, snapshot_weights, tau_sweep
from eval.curves import AVERAGE as CURVE_AVERAGE
from eval.curves import pass_at_k_curves
from eval.reference import PAPER_SOURCE
from train.snapshots import has_snapshots, read_snapshots
from workbench.plotting import (
    BAND_ALPHA, COLUMN_WIDTH, METHOD_COLOURS, OKABE_ITO, PASS_AT_K_LABEL, TEXT_WIDTH, house_style, legend_columns,
    method_colours, ordered_palette, palette, pass_at_k_panel, save_figure, seed_band, seed_note,
)
from workbench.records import read_records
from workbench.runs import MANIFEST, read_manifest, write_manifest

log = logging.getLogger(__name__)

PAPER_LABEL = "paper"
SAMPLE_COLUMNS = {"benchmark", "problem_id", "sample_idx", "correct"}
UNCOMMITTED = "runs"  # results/runs/, results/toy/runs/: git-ignored, absent from a fresh clone
FIGURE_SUFFIXES = (".pdf", ".png")
NOT_EVAL_COLUMNS = {"group_id", "step", "logps", "ratio", "token_ids"}
# SCOPE's two paths, in colours no method uses: MLE (correct rollouts) orange, OPD (wrong ones) sky blue
PATH_COLOURS = {"mle": OKABE_ITO["orange"], "opd": OKABE_ITO["sky blue"]}


def _buckets(columns: Sequence[str]) -> list[str]:
    return sorted((c for c in columns if len(c) > 1 and c[0] == "Q" and c[1:].isdigit()), key=lambda c: int(c[1:]))


# ------------------------------------------------------------------------------------ recovery
def recovery_vs_ratio(table: pd.DataFrame) -> Figure:
    """Recovery rate against truncation ratio per teacher-PPL bucket: this run (with bootstrap
    intervals) beside the paper's curves (dashed, in their own panel).

    ``table`` is ``recovery.csv``: index r, columns ``Qk``, ``Qk_ci_lo``, ``Qk_ci_hi`` and, when
    attached, ``Qk_paper``.
    """
    buckets = _buckets(table.columns)
    has_paper = any(f"{b}_paper" in table.columns and table[f"{b}_paper"].notna().any() for b in buckets)
    fig, axes = plt.subplots(1, 2 if has_paper else 1, figsize=(COLUMN_WIDTH, 2.1), sharey=True, squeeze=False)
    colours = ordered_palette(len(buckets))
    r = table.index.to_numpy(dtype=float)
    ax = axes[0, 0]
    for b, colour in zip(buckets, colours):
        err = np.vstack([table[b] - table[f"{b}_ci_lo"], table[f"{b}_ci_hi"] - table[b]])
        ax.errorbar(r, table[b], yerr=err, color=colour, marker="o", capsize=1.5, elinewidth=0.7)
    ax.set_title("this run, 95% CI", fontsize=7)
    ax.set_ylabel("recovery rate (%)")
    handles = [Line2D([], [], color=c, marker="o", label=b) for b, c in zip(buckets, colours)]
    if has_paper:
        ax_p = axes[0, 1]
        for b, colour in zip(buckets, colours):
            ax_p.plot(r, table[f"{b}_paper"], color=colour, marker="s", linestyle="--")
        ax_p.set_title(PAPER_SOURCE, fontsize=7)
        handles.append(Line2D([], [], color="grey", marker="s", linestyle="--", label=PAPER_LABEL))
    for a in axes[0]:
        a.set_xticks(r)
        a.set_xlabel("truncation ratio r")
        a.grid(axis="y", linewidth=0.3, alpha=0.6)
    sns.despine(fig)
    fig.tight_layout(w_pad=0.6)
    fig.legend(handles=handles, title="teacher-PPL bucket of the wrong rollout (Q1 lowest)", loc="lower center",
               bbox_to_anchor=(0.5, 1.0), ncol=len(handles))
    return fig


def _jitter(values: np.ndarray, scale: float, seed: int = 0, low: float = 0.0, high: float = 100.0) -> np.ndarray:
    """Values spread by up to ``scale`` so equal ones stay visible, reflected back inside [low, high]: a
    rate drawn above 100 % (or below 0) would show a value that cannot occur."""
    moved = values + np.random.default_rng(seed).uniform(-scale, scale, size=values.shape)
    moved = np.where(moved > high, 2 * high - moved, moved)
    return np.where(moved < low, 2 * low - moved, moved)


def ppl_vs_recovery(per_rollout: pd.DataFrame) -> Figure:
    """Per wrong rollout: teacher log-PPL against recovery rate (jittered), with a logistic fit per ratio.

    The fit is the binomial regression of continuation success on teacher log-PPL (see
    ``analysis.stats.logistic_regression``); its slope and 95% interval (cluster-robust: a rollout's continuations are one cluster) are in the legend.
    """
    ratios = sorted(per_rollout["ratio"].unique())
    colours = ordered_palette(len(ratios))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.6))
    x_all = per_rollout["teacher_log_ppl"].to_numpy()
    grid = np.linspace(x_all.min(), x_all.max(), 200)
    for r, colour in zip(ratios, colours):
        part = per_rollout[per_rollout["ratio"] == r]
        ax.scatter(part["teacher_log_ppl"], _jitter(100 * part["recovery_rate"].to_numpy(), 2.5, seed=int(r * 100)),
                   s=4, alpha=0.35, color=colour, linewidths=0, rasterized=True)
        label = f"r={r:g}"
        try:
            fit = logistic_regression(part["teacher_log_ppl"].to_numpy(), part["recovered"].to_numpy(),
                                      part["n_continuations"].to_numpy(), se="cluster")
        except ValueError as exc:
            log.info("no logistic fit at r=%g: %s", r, exc)
            label += ": no fit (" + ("all recovered" if part["recovery_rate"].min() == 1 else
                                     "none recovered" if part["recovery_rate"].max() == 0 else "degenerate") + ")"
        else:
            lo, hi = fit.slope_ci
            label += f": {fit.slope:+.2f} [{lo:+.2f}, {hi:+.2f}]" + ("" if fit.converged else " (separated)")
            ax.plot(grid, 100 * fit.predict(grid), color=colour)
        ax.plot([], [], color=colour, marker="o", markersize=3, label=label)
    ax.set_xlabel("teacher log-PPL of the wrong rollout (mean token NLL)")
    ax.set_ylabel("recovery rate of the rollout (%)")
    ax.set_ylim(-4, 104)
    sns.despine(fig)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), title="truncation ratio: logistic slope per nat [95% CI]",
               loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1)
    return fig


def _percent_errorbar(ax: Any, x: np.ndarray, buckets: pd.DataFrame, name: str, **style: Any) -> None:
    """``<name>_pct`` per bucket with its ``<name>_ci_lo`` to ``<name>_ci_hi`` interval."""
    pct = buckets[f"{name}_pct"]
    err = np.vstack([pct - buckets[f"{name}_ci_lo"], buckets[f"{name}_ci_hi"] - pct])
    ax.errorbar(x, pct, yerr=err, marker="o", capsize=2, **style)


def _bucket_axes(ax: Any, x: np.ndarray, buckets: pd.DataFrame, ppl: str, decimals: int, xlabel: str,
                 ylabel: str) -> None:
    """Buckets along x, each labelled with its mean PPL (column ``ppl``), a 0-100 % y axis."""
    ax.set_xticks(x, [f"{b}\nPPL {p:.{decimals}f}" for b, p in zip(buckets["bucket"], buckets[ppl])])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(-3, 103)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)


def teacher_solve_by_bucket(buckets: pd.DataFrame) -> Figure:
    """The teacher's from-scratch solve rate per teacher-PPL bucket: are high-PPL buckets just harder?"""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.0))
    x = np.arange(len(buckets))
    _percent_errorbar(ax, x, buckets, "teacher_solve", color=palette(1)[0], linestyle="-")
    _bucket_axes(ax, x, buckets, "teacher_ppl_mean", 2, "teacher-PPL bucket of the wrong rollouts",
                 "teacher solve rate\nfrom scratch (%)")
    sns.despine(fig)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ boundary
def boundary_buckets(buckets: pd.DataFrame) -> Figure:
    """Correct rollouts by student-PPL bucket: their problems' solve rate and share solved only sometimes."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.2))
    x = np.arange(len(buckets))
    colours = palette(3)
    series = (("solve", "mean solve rate of the problem"), ("sometimes", "problems solved sometimes (0<rate<1)"),
              ("always", "problems always solved"))
    for offset, (name, label), colour in zip((-0.12, 0.0, 0.12), series, colours):
        if f"{name}_pct" in buckets.columns:
            _percent_errorbar(ax, x + offset, buckets, name, color=colour, label=label)
    _bucket_axes(ax, x, buckets, "student_ppl_mean", 3, "student-PPL bucket of the correct rollouts",
                 "%, mean over the\nbucket's correct rollouts")
    sns.despine(fig)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1)
    return fig


def boundary_scatter(per_rollout: pd.DataFrame) -> Figure:
    """Per correct rollout: student log-PPL against its problem's solve rate, with the logistic fit."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.3))
    x = per_rollout["student_log_ppl"].to_numpy()
    colour = palette(1)[0]
    ax.scatter(x, _jitter(100 * per_rollout["solve_rate"].to_numpy(), 1.5), s=5, alpha=0.4, color=colour, linewidths=0,
               rasterized=True, label="correct rollout")
    try:
        fit = logistic_regression(x, per_rollout["n_solved"].to_numpy(), per_rollout["n_samples"].to_numpy())
    except ValueError as exc:
        log.info("no boundary logistic fit: %s", exc)
    else:
        grid = np.linspace(x.min(), x.max(), 200)
        lo, hi = fit.slope_ci
        ax.plot(grid, 100 * fit.predict(grid), color="black",
                label=f"logistic fit: slope per nat {fit.slope:+.2f} [{lo:+.2f}, {hi:+.2f}] (95% CI)")
    ax.set_xlabel("student log-PPL of its correct rollout")
    ax.set_ylabel("problem solve rate (%)\n(fresh student samples)")
    ax.set_ylim(-4, 104)
    sns.despine(fig)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1)
    return fig


# ------------------------------------------------------------------------------------- weights
def _relative(frame: pd.DataFrame) -> pd.Series:
    """Weight times subset size: 1 means the uniform share, whatever the subset's size."""
    keys = [k for k in ("tau", "step", "group", "path") if k in frame.columns]
    return frame["weight"] * frame.groupby(keys, sort=False)["weight"].transform("size")


def weight_distributions(sweep: pd.DataFrame) -> Figure:
    """Relative weights (n x w, 1 = uniform) of each path across the tau sweep (subsets of >= 2 only)."""
    data = sweep.assign(relative=_relative(sweep))
    keys = [k for k in ("tau", "group", "path") if k in data.columns]
    data = data[data.groupby(keys, sort=False)["weight"].transform("size") >= 2]
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 2.2), sharey=True)
    for ax, path in zip(axes, ("mle", "opd")):
        colour = PATH_COLOURS[path]
        part = data[data["path"] == path]
        if part.empty:
            ax.set_axis_off()
            continue
        taus = sorted(part["tau"].unique())
        boxes = ax.boxplot([part.loc[part["tau"] == t, "relative"].to_numpy() for t in taus], widths=0.6,
                           patch_artist=True, orientation="vertical", flierprops={"markersize": 1.5},
                           medianprops={"color": "black", "linewidth": 0.8}, whiskerprops={"linewidth": 0.6},
                           capprops={"linewidth": 0.6}, boxprops={"linewidth": 0.6})
        for box in boxes["boxes"]:
            box.set_facecolor(colour)
        ax.set_xticks(range(1, len(taus) + 1), [f"{t:g}" for t in taus])
        ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(PATH_LABELS[path], fontsize=7)
        ax.set_xlabel("τ")
        ax.set_ylabel("weight × subset size" if path == "mle" else "")
    sns.despine(fig)
    fig.tight_layout(w_pad=0.5)
    return fig


def ess_vs_tau(sweep: pd.DataFrame) -> Figure:
    """Mean effective sample size fraction ESS/n per path against tau (subsets of >= 2 rollouts)."""
    ess = effective_sample_size(sweep)
    ess = ess[ess["n"] >= 2]
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.1))
    for path, colour in PATH_COLOURS.items():
        part = ess[ess["path"] == path].groupby("tau")["ess_frac"].agg(["mean", "sem", "size"]).reset_index()
        if part.empty:
            continue
        ax.errorbar(part["tau"], part["mean"], yerr=1.96 * part["sem"].fillna(0.0), marker="o", capsize=2,
                    color=colour, label=f"{PATH_LABELS[path]} ({int(part['size'].iloc[0])} subsets)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sweep["tau"].unique()), [f"{t:g}" for t in sorted(sweep["tau"].unique())])
    ax.set_xlabel("τ")
    ax.set_ylabel("mean ESS / subset size")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right")
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def weight_vs_ppl(weighted: pd.DataFrame) -> Figure:
    """At tau = 1: each rollout's relative weight against its path's log-PPL, centred on its subset's mean."""
    data = weighted.assign(relative=_relative(weighted))
    data["own"] = np.where(data["path"] == "mle", data["student_log_ppl"], data["teacher_log_ppl"])
    keys = [k for k in ("step", "group", "path") if k in data.columns]
    data["centred"] = data["own"] - data.groupby(keys, sort=False)["own"].transform("mean")
    data = data[data.groupby(keys, sort=False)["weight"].transform("size") >= 2]
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 2.1), sharey=True)
    for ax, path in zip(axes, ("mle", "opd")):
        colour = PATH_COLOURS[path]
        part = data[data["path"] == path]
        ax.scatter(part["centred"], part["relative"], s=4, alpha=0.4, color=colour, linewidths=0, rasterized=True)
        ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_title(PATH_LABELS[path], fontsize=7)
        ax.set_xlabel(("student" if path == "mle" else "teacher") + " log-PPL\nminus its subset's mean")
    axes[0].set_ylabel("weight × subset size")
    sns.despine(fig)
    fig.tight_layout(w_pad=0.5)
    return fig


RunKey = tuple[str, int]


def _methods(keys: Sequence[RunKey]) -> list[str]:
    return list(dict.fromkeys(method for method, _ in keys))


def _seed_note(keys: Sequence[RunKey]) -> str:
    return seed_note(seed for _, seed in keys)


def weights_over_steps(runs: dict[RunKey, pd.DataFrame]) -> Figure:
    """Per method: mean ESS/n of each path's subsets over training steps (the trainer's snapshots)."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 2.1), sharey=True)
    methods = _methods(list(runs))
    colours = method_colours(methods)
    per_seed = []
    for (method, seed), frame in runs.items():
        ess = effective_sample_size(frame)
        ess = ess[ess["n"] >= 2].groupby(["step", "path"])["ess_frac"].mean().reset_index()
        per_seed.append(ess.assign(method=method, seed=seed))
    data = pd.concat(per_seed, ignore_index=True)
    for ax, path in zip(axes, ("mle", "opd")):
        for method in methods:
            part = data[(data["path"] == path) & (data["method"] == method)]
            if not part.empty:
                seed_band(ax, part, "step", "ess_frac", colours[method], method)
        ax.set_title(PATH_LABELS[path], fontsize=7)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("mean ESS / subset size")
    entries = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    sns.despine(fig)
    fig.tight_layout(w_pad=0.5)
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(4, len(entries)), title=_seed_note(list(runs)))
    return fig


# ----------------------------------------------------------------------------------- training
# (axis label, log-column needles, scale): rates logged as fractions are drawn in %, as every table shows them
DYNAMICS = (
    ("entropy (nats)", ("entropy",), 1.0),
    ("rollouts correct (%)", ("frac_correct", "fraction_correct"), 100.0),
    ("held-out Avg@k (%)", ("avg@",), 100.0),
)


def _dynamics_column(columns: Sequence[str], needles: Sequence[str]) -> str | None:
    """The first log column whose name contains one of ``needles`` (TRL names vary by trainer)."""
    for needle in needles:
        for column in columns:
            if needle in str(column).lower():
                return str(column)
    return None


def training_dynamics(histories: dict[RunKey, pd.DataFrame]) -> Figure:
    """Entropy, fraction of correct rollouts and Avg@k over training steps, one line per method."""
    present = [(title, needles, scale) for title, needles, scale in DYNAMICS
               if any(_dynamics_column(h.columns, needles) for h in histories.values())]
    if not present:
        raise ValueError("no log history has entropy, fraction-correct or Avg@k columns")
    fig, axes = plt.subplots(len(present), 1, figsize=(COLUMN_WIDTH, 1.3 * len(present) + 0.4), sharex=True,
                             squeeze=False)
    methods = _methods(list(histories))
    colours = method_colours(methods)
    for ax, (title, needles, scale) in zip(axes[:, 0], present):
        for method in methods:
            parts = []
            for (m, seed), history in histories.items():
                column = _dynamics_column(history.columns, needles)
                if m == method and column is not None:
                    values = history[["step", column]].dropna().rename(columns={column: "value"})
                    parts.append(values.assign(value=values["value"] * scale, seed=seed))
            if parts:
                seed_band(ax, pd.concat(parts, ignore_index=True), "step", "value", colours[method], method)
        ax.set_ylabel(title)
        ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    axes[-1, 0].set_xlabel("training step")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    entries = {label: handle for ax in axes[:, 0] for handle, label in zip(*ax.get_legend_handles_labels())}
    sns.despine(fig)
    fig.tight_layout(h_pad=0.4)
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(4, len(entries)), title=_seed_note(list(histories)))
    return fig


# -------------------------------------------------------------------------------------- pass@k
def pass_at_k_figure(samples: pd.DataFrame) -> Figure:
    """Unbiased Pass@k (Chen et al.) against k, one line per method: the unweighted mean over the
    benchmarks each run was evaluated on (``eval.curves``' "Average"), seeds averaged with a band.

    ``samples`` carries ``method`` and ``seed`` columns.
    """
    curves = pass_at_k_curves(samples)
    average = curves[curves["benchmark"] == CURVE_AVERAGE]
    methods = list(pd.unique(average["method"]))
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.3))
    pass_at_k_panel(ax, average, method_colours(methods))
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel(f"{PASS_AT_K_LABEL},\nmean over benchmarks")
    sns.despine(fig)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=legend_columns(methods, 4), title=seed_note(average["seed"]))
    return fig


# ------------------------------------------------------------------------------------ toy experiments
def _variant_colours(name: str, labels: list[str]) -> dict[str, tuple]:
    """Each row's colour: a method its own (workbench.plotting); SCOPE's ablations black, so that in the
    DPAW figure SCOPE and the OPD control stand out and the ablations read by their labels."""
    methods = {v.display: v.name if v.name in METHOD_COLOURS else v.name.split("-")[0] for v in variants_of(name)}
    own = {label: method for label, method in methods.items()
           if method in METHOD_COLOURS and (method != "scope" or label == "SCOPE")}  # an ablation is not SCOPE
    colours = method_colours(sorted(set(own.values())))
    return {label: colours[own[label]] if label in own else (0.0, 0.0, 0.0) for label in labels}


def _forest(ax: Axes, summary: pd.DataFrame, metric: str, tier: str, labels: list[str], colours: dict,
            reference: str | None) -> None:
    """One tier's panel: a row per variant (first at the top), its mean and 95 % interval, cut at 0 and 100
    (a rate cannot leave them), and a dashed line at the reference variant's mean."""
    part = summary[summary["benchmark"] == tier].set_index("label").reindex(labels)
    y = np.arange(len(labels))[::-1]
    mean, half = part[metric].to_numpy(dtype=float), part[f"{metric}_ci"].fillna(0).to_numpy(dtype=float)
    low, high = np.clip(mean - half, 0, 100), np.clip(mean + half, 0, 100)
    if reference in part.index and np.isfinite(part.at[reference, metric]):
        ax.axvline(part.at[reference, metric], color=colours[reference], linewidth=0.6, linestyle="--", zorder=1)
    for yi, label, m, lo, hi in zip(y, labels, mean, low, high):
        if np.isfinite(m):
            ax.errorbar(m, yi, xerr=[[m - lo], [hi - m]], fmt="o", ms=3, capsize=1.5, elinewidth=0.8,
                        color=colours[label], zorder=3)
    span_lo, span_hi = np.nanmin(low), np.nanmax(high)
    pad = max(1.5, 0.08 * (span_hi - span_lo))
    ax.set_xlim(max(-0.8, span_lo - pad), min(100.8, span_hi + pad))  # no tick beyond 0 or 100
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.set_title(tier, fontsize=7)
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, steps=[1, 2, 5, 10]))
    ax.tick_params(axis="x", labelsize=6)


def experiment_figure(result: ExperimentResult, n: int, folder: Path) -> dict[str, Path]:
    """The experiment's figure: a curve over τ (tau); else one panel per tier and metric, a row per
    variant with its interval (main, dpaw), so eight variants never crowd one axis
    (main's Pass@k paradox figure is separate: :func:`paradox_figure`)."""
    labels = [v.display for v in variants_of(result.name) if v.display in set(result.summary["label"])]
    with house_style():
        if result.name == "tau":
            fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 2.6))
            avg = result.summary[result.summary["benchmark"] == "Average"].set_index("label").reindex(labels)
            taus = [float(label.split("=")[1]) for label in labels]
            for ax, metric in zip(axes, METRICS):
                low = np.clip(avg[metric] - avg[f"{metric}_ci"], 0, 100)
                high = np.clip(avg[metric] + avg[f"{metric}_ci"], 0, 100)
                ax.errorbar(taus, avg[metric], yerr=[avg[metric] - low, high - avg[metric]], marker="o", capsize=3,
                            color=METHOD_COLOURS["scope"])
                ax.set_xscale("log", base=2)
                ax.set_xticks(taus, [f"{t:g}" for t in taus])
                ax.set_xlabel("τ (SCOPE's softmax temperature)")
                ax.set_ylabel(f"{METRICS[metric].format(n=n)} (%), mean of the tiers")
                ax.grid(axis="y", linewidth=0.3, alpha=0.6)
            title = "SCOPE on the toy world by τ: mean over seeds, 95 % t interval"
        else:
            colours = _variant_colours(result.name, labels)
            tiers = list(dict.fromkeys(result.summary["benchmark"]))
            reference = next((v.display for v in variants_of(result.name) if v.name == "scope"), None)
            fig, axes = plt.subplots(2, len(tiers), figsize=(TEXT_WIDTH, 0.9 + 0.42 * len(labels)), sharey=True,
                                     squeeze=False)
            for row, metric in enumerate(METRICS):
                for ax, tier in zip(axes[row], tiers):
                    _forest(ax, result.summary, metric, tier, labels, colours, reference)
                axes[row, 0].set_yticks(np.arange(len(labels))[::-1], labels)
                axes[row, len(tiers) // 2].set_xlabel(f"{METRICS[metric].format(n=n)} (%)")
            for label, tick in zip(labels, axes[0, 0].get_yticklabels()):
                tick.set_color(colours[label])
            for label, tick in zip(labels, axes[1, 0].get_yticklabels()):
                tick.set_color(colours[label])
            title = {"main": "toy main comparison", "dpaw": "toy DPAW ablation"}.get(result.name, f"toy {result.name}")
            title += (": mean over seeds, 95 % t interval (cut at 0 and 100)"
                      + (f"; dashed: {reference}'s mean" if reference else ""))
        sns.despine(fig)
        fig.suptitle(title, fontsize=8)
        fig.tight_layout(h_pad=0.8, w_pad=0.3)
        return save_figure(fig, folder, f"toy_{result.name}")


def paradox_figure(result: ExperimentResult, folder: Path) -> dict[str, Path]:
    """Pass@k against k for the base student and each trained method (band: lowest to highest seed)."""
    curves = result.curves
    methods = [v.name for v in variants_of("main")]
    colours = method_colours(methods)
    with house_style():
        fig, axes = plt.subplots(1, 2, figsize=(TEXT_WIDTH, 2.6))
        pass_at_k_panel(axes[0], curves, colours)
        axes[0].set_ylim(max(-2.0, curves["value"].min() - 3.0), 101.5)
        axes[0].set_ylabel("macro Pass@k (%), unbiased")
        axes[0].set_xlabel("k")
        axes[0].legend(fontsize=6, frameon=False)
        change = change_from_base(curves)
        for method in methods[1:]:
            part = change[change["method"] == method]
            axes[1].plot(part["k"], part["change"], marker="o", color=colours[method], label=method, zorder=3)
            axes[1].fill_between(part["k"], part["change"] - part["ci"], part["change"] + part["ci"],
                                 color=colours[method], alpha=BAND_ALPHA, linewidth=0, zorder=1)
        axes[1].axhline(0, color="0.5", linewidth=0.6)
        axes[1].set_xscale("log", base=2)
        ks = sorted(pd.unique(curves["k"]))
        axes[1].set_xticks(ks, [str(k) for k in ks])
        axes[1].set_xlabel("k")
        axes[1].set_ylabel("change from base (points, 95 % t band)")
        axes[1].grid(axis="y", linewidth=0.3, alpha=0.6)
        fig.suptitle("toy Pass@k paradox: Pass@1 vs Pass@k after training", fontsize=8)
        return save_figure(fig, folder, "toy_paradox")


# ---------------------------------------------------------------------------------- discovery
def _under_analysis_run(folder: Path, root: Path) -> bool:
    """Whether a folder sits inside a perplexity-analysis run (its sample stores are not evaluations)."""
    for parent in [folder, *folder.parents]:
        manifest = parent / MANIFEST
        if manifest.is_file() and f'"{ANALYSIS_KIND}"' in manifest.read_text():
            return True
        if parent == root:
            break
    return False


def run_key(folder: Path, root: Path) -> RunKey:
    """(method, seed) of a folder laid out as ``.../<method>/seed<k>``; otherwise ("<parent>/<name>", 0)."""
    if folder.name.startswith("seed") and folder.name[4:].isdigit():
        return folder.parent.name, int(folder.name[4:])
    return (f"{folder.parent.name}/{folder.name}" if folder != root else folder.name), 0


def committed_folders(root: Path, skip: Path | None = None) -> list[Path]:
    """``root`` and every folder below it, sorted, except ``runs`` folders (git-ignored data) and
    ``skip`` (the figures' own output folder), whose subtrees are not even walked."""
    root = Path(root)
    skipped = Path(skip).resolve() if skip is not None else None
    found = []
    for current, dirs, _ in os.walk(root):
        folder = Path(current)
        dirs[:] = sorted(d for d in dirs if d != UNCOMMITTED and (folder / d).resolve() != skipped)
        found.append(folder)
    return sorted(found)


def find_analysis_folders(root: Path, skip: Path | None = None) -> list[Path]:
    return [folder for folder in committed_folders(root, skip)
            if any((folder / name).is_file()
                   for name in ("recovery_rollouts.csv", "boundary_rollouts.csv", "weights_rollouts.csv"))]


def find_training_runs(root: Path, skip: Path | None = None) -> list[Path]:
    """``seed<k>`` folders holding weight snapshots or a training log history."""
    return [folder for folder in committed_folders(root, skip)
            if folder.name.startswith("seed") and folder.name[4:].isdigit()
            and (has_snapshots(folder) or any(folder.glob("*.jsonl")) or any(folder.glob("*.csv")))]


def read_history(run: Path) -> pd.DataFrame | None:
    """The first ``*.jsonl`` / ``*.csv`` in a run folder that has a ``step`` column, else None."""
    for path in sorted(run.glob("*.jsonl")) + sorted(run.glob("*.csv")):
        try:
            frame = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path)
        except ValueError as exc:
            log.info("skipping unreadable log %s: %s", path, exc)
            continue
        if "step" in frame.columns:
            return frame.sort_values("step")
    return None


def find_eval_folders(root: Path, skip: Path | None = None) -> list[Path]:
    """Shard folders whose parquet rows are graded samples (not rollouts, snapshots or analysis stages)."""
    found = []
    for folder in committed_folders(root, skip):
        if not any(folder.glob("part-*.parquet")) or _under_analysis_run(folder, root):
            continue
        names = set(pq.read_schema(next(folder.glob("part-*.parquet"))).names)
        if SAMPLE_COLUMNS <= names and not names & NOT_EVAL_COLUMNS:
            found.append(folder)
    return found


def _draw(figures: list[dict[str, Any]], out_dir: Path, name: str, make: Any, inputs: Sequence[Path]) -> None:
    with house_style():
        paths = save_figure(make(), out_dir, name)
    figures.append({"name": name, "files": [p.name for p in paths.values()], "inputs": [_path(p) for p in inputs]})
    log.debug("wrote %s", paths["png"])  # the command prints the list of figures once


def _path(path: str | os.PathLike) -> str:
    """Absolute, so the manifest records it relative to the repository root whatever the working folder."""
    return str(Path(path).resolve())


def write_figures_manifest(folder: str | os.PathLike, figures: Sequence[dict[str, Any]],
                           sources: Sequence[str | os.PathLike]) -> Path:
    """Remove figure files in ``folder`` that this drawing did not make, then write its manifest,
    which so lists exactly the folder's files (with their sha256) and how each figure was drawn."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = {name for figure in figures for name in figure["files"]}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in FIGURE_SUFFIXES and path.name not in drawn:
            log.info("removing %s: no longer drawn from these inputs", path)
            path.unlink()
    return write_manifest(folder, {"sources": [_path(s) for s in sources]}, None, figures=list(figures))


def _remove_stale_folder(folder: Path) -> None:
    """A figures folder none of whose figures the results support any more: its figures and manifest go."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in FIGURE_SUFFIXES or path.name == MANIFEST):
            log.info("removing %s: its inputs are gone", path)
            path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def analysis_figures(folder: Path, out_dir: Path, taus: Sequence[float] = DEFAULT_TAUS) -> list[dict[str, Any]]:
    """Every figure an analysis folder's tables support; absent inputs are skipped with a note."""
    figures: list[dict[str, Any]] = []
    recovery, per_rollout = folder / "recovery.csv", folder / "recovery_rollouts.csv"
    if recovery.is_file() and per_rollout.is_file():
        table = pd.read_csv(recovery, index_col=0)
        rows = pd.read_csv(per_rollout)
        _draw(figures, out_dir, "recovery_vs_ratio", lambda: recovery_vs_ratio(table), [recovery])
        _draw(figures, out_dir, "ppl_vs_recovery", lambda: ppl_vs_recovery(rows), [per_rollout])
    else:
        log.info("%s: no recovery tables, skipping the recovery figures", folder)
    buckets = folder / "recovery_buckets.csv"
    if buckets.is_file():
        frame = pd.read_csv(buckets)
        if "teacher_solve_pct" in frame.columns:
            _draw(figures, out_dir, "teacher_solve_by_bucket", lambda: teacher_solve_by_bucket(frame), [buckets])
    b_buckets, b_rollouts = folder / "boundary_buckets.csv", folder / "boundary_rollouts.csv"
    if b_buckets.is_file() and b_rollouts.is_file():
        frame_b, rows_b = pd.read_csv(b_buckets), pd.read_csv(b_rollouts)
        _draw(figures, out_dir, "boundary_buckets", lambda: boundary_buckets(frame_b), [b_buckets])
        _draw(figures, out_dir, "boundary_scatter", lambda: boundary_scatter(rows_b), [b_rollouts])
    else:
        log.info("%s: no boundary tables, skipping the boundary figures", folder)
    w_rollouts = folder / "weights_rollouts.csv"
    if w_rollouts.is_file():
        sweep = tau_sweep(prepare(pd.read_csv(w_rollouts)), taus)
        _draw(figures, out_dir, "weights_by_path", lambda: weight_distributions(sweep), [w_rollouts])
        _draw(figures, out_dir, "ess_vs_tau", lambda: ess_vs_tau(sweep), [w_rollouts])
        if 1.0 in set(sweep["tau"]):
            _draw(figures, out_dir, "weight_vs_ppl", lambda: weight_vs_ppl(sweep[sweep["tau"] == 1.0]), [w_rollouts])
    else:
        log.info("%s: no weights_rollouts.csv, skipping the weight figures", folder)
    return figures


def regenerate(results_dir: str | os.PathLike = "results", out_dir: str | os.PathLike | None = None,
               taus: Sequence[float] = DEFAULT_TAUS) -> list[Path]:
    """Redraw every figure the committed contents of ``results_dir`` support into ``out_dir``
    (default ``results_dir/figures``): one subfolder per analysis folder, ``training`` and ``eval``,
    each with a manifest; figure folders whose inputs are gone are removed. Returns the PNG paths."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no results folder at {root}")
    out = Path(out_dir) if out_dir is not None else root / "figures"
    written: list[Path] = []
    kept: set[Path] = set()

    def finish(folder: Path, figures: list[dict[str, Any]], sources: Sequence[Path]) -> None:
        if figures:
            write_figures_manifest(folder, figures, sources)
            written.extend(folder / f"{f['name']}.png" for f in figures)
            kept.add(folder.resolve())

    for folder in find_analysis_folders(root, skip=out):
        target = out / ("-".join(folder.relative_to(root).parts) or folder.name)
        finish(target, analysis_figures(folder, target, taus), [folder])

    runs = find_training_runs(root, skip=out)
    snapshots: dict[RunKey, pd.DataFrame] = {}
    histories: dict[RunKey, pd.DataFrame] = {}
    for run in runs:
        if has_snapshots(run):
            snapshots[run_key(run, root)] = snapshot_weights(read_snapshots(run))
        history = read_history(run)
        if history is not None and any(_dynamics_column(history.columns, n) for _, n, _ in DYNAMICS):
            histories[run_key(run, root)] = history
    training: list[dict[str, Any]] = []
    if snapshots:
        _draw(training, out / "training", "weights_over_steps", lambda: weights_over_steps(snapshots),
              [r for r in runs if run_key(r, root) in snapshots])
    else:
        log.info("no training snapshots under %s, skipping weights over steps", root)
    if histories:
        _draw(training, out / "training", "training_dynamics", lambda: training_dynamics(histories),
              [r for r in runs if run_key(r, root) in histories])
    else:
        log.info("no training log histories under %s, skipping training dynamics", root)
    finish(out / "training", training, runs)

    evals = find_eval_folders(root, skip=out)
    suites: dict[str, list[tuple[Path, pd.DataFrame]]] = {}
    for folder in evals:
        method, seed = run_key(folder, root)
        frame = read_records(folder).assign(method=method, seed=seed)
        suite = "toy" if frame["benchmark"].str.startswith("toy-").all() else "real"
        suites.setdefault(suite, []).append((folder, frame))
    figures: list[dict[str, Any]] = []
    for suite, parts in sorted(suites.items()):
        samples = pd.concat([frame for _, frame in parts], ignore_index=True)
        _draw(figures, out / "eval", f"pass_at_k_{suite}", lambda: pass_at_k_figure(samples),
              [folder for folder, _ in parts])
    if not evals:
        log.info("no evaluation sample folders under %s, skipping Pass@k curves", root)
    finish(out / "eval", figures, evals)

    if out.is_dir():
        for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.resolve() not in kept):
            if (folder / MANIFEST).is_file() and "figures" in read_manifest(folder):
                _remove_stale_folder(folder)
    return written


DIAL_VARIANT_COLOURS = {"scope": OKABE_ITO["vermillion"], "scope-uniform": OKABE_ITO["orange"],
                        "opd": OKABE_ITO["blue"], "opd-32x1": OKABE_ITO["sky blue"], "opd-8xsteps": "#999999"}
"""SCOPE's two arms in its hue family, OPD and its compute-matched controls in OPD's."""


def dial_spread(per_rollout: dict[str, pd.DataFrame]) -> Figure:
    """What SCOPE's student-side (MLE) weights have to weigh in each dial world: the student's per-token
    log-PPL of each correct rollout against its group's mean, and how far each group's weights at tau = 1
    are from uniform (ECDF of ESS/n over groups with two or more correct rollouts)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(2 * COLUMN_WIDTH, 2.2))
    for (world, frame), colour in zip(per_rollout.items(), ordered_palette(len(per_rollout))):
        correct = frame[frame["correct"].astype(bool)]
        centred = correct["student_log_ppl"] - correct.groupby(["benchmark", "problem_id"])[
            "student_log_ppl"].transform("mean")
        left.hist(centred, bins=np.linspace(-2.5, 2.5, 101), histtype="step", density=True, color=colour, label=world)
        ess = effective_sample_size(tau_sweep(prepare(frame), [1.0]))
        mle = np.sort(ess.loc[(ess["path"] == "mle") & (ess["n"] >= 2), "ess_frac"].to_numpy())
        right.step(mle, np.arange(1, len(mle) + 1) / len(mle), where="post", color=colour,
                   label=f"{world} (mean {mle.mean():.3f})")
    left.set_xlabel("student log-PPL − group mean (nats/token)")
    left.set_ylabel("density (correct rollouts)")
    left.legend(title="world")
    right.set_xlabel("ESS/n of a group's MLE-path weights, τ = 1")
    right.set_ylabel("fraction of groups")
    right.set_xlim(None, 1.005)
    right.legend(title="world", loc="upper left")
    for ax in (left, right):
        ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def dial_curves(traces: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Held-out accuracy against the rollouts trained on, per variant of one world's dose-response (seeds
    banded), so OPD's compute-matched controls line up with SCOPE by compute rather than by step."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 3.0))
    held = traces.dropna(subset=["heldout"])
    per_step = traces.groupby("variant")["rollouts_per_update"].mean()
    for variant, colour in DIAL_VARIANT_COLOURS.items():
        part = held[held["variant"] == variant]
        if part.empty:
            continue
        seed_band(ax, part.assign(rollouts=part["step"] * per_step[variant]), "rollouts", "heldout", colour,
                  labels.get(variant, variant))
    ax.set_xlabel("rollouts trained on")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(title=seed_note(held["seed"].unique()), loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    sns.despine(fig)
    fig.tight_layout()
    return fig


def dose_response_figure(table: pd.DataFrame) -> Figure:
    """Each dial world's SCOPE − uniform-weights gap (paired over seeds, 95 % interval) against how far its
    MLE-path weights are from uniform (ESS/n at tau = 1 on the base student's rollouts)."""
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.3))
    colours = ordered_palette(len(table))
    for (_, row), colour in zip(table.iterrows(), colours):
        ax.errorbar(row["mle_ess_frac"], row["scope - scope-uniform"], yerr=row["scope - scope-uniform ci"],
                    marker="o", capsize=2, color=colour, label=f"{row['world']} ({int(row['seeds'])} seeds)")
    ax.axhline(0.0, color=OKABE_ITO["black"], linewidth=0.6)
    ax.invert_xaxis()  # weights further from uniform to the right
    ax.set_xlabel("MLE-path ESS/n at τ = 1 (lower: the weights weigh more)")
    ax.set_ylabel("SCOPE − uniform weights\n(Avg@n, points)")
    ax.legend(title="world", loc="best")
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    sns.despine(fig)
    fig.tight_layout()
    return fig
