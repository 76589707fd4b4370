"""Pass@k curves: how the chance of solving a problem grows with the sampling budget k.

A single Pass@32 number hides whether a method raised Avg@k (the curve's left end, k = 1) or only
widened what the model can reach (the right end); distillation and RL are known to move the two ends
differently, so the reproduction tables come with the whole curve. Curves use the unbiased estimator
of Chen et al. (the paper's bootstrap form differs only in how it treats k close to n). Seeds of one
method are averaged, with a band from the lowest to the highest seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from eval.metrics import default_ks, macro_average, pass_at_k

log = logging.getLogger(__name__)

AVERAGE = "Average"
PALETTE = "colorblind"
RUN_COLUMNS = ("method", "seed")
# No dates and no software versions in figure files: the same curves give the same bytes, so a
# rerun that changes nothing leaves committed figures untouched. (matplotlib drops a key set to None.)
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}
PNG_METADATA = {"Software": None}


def pass_at_k_curves(samples: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Benchmark-mean unbiased Pass@k per (method, seed, benchmark) plus the macro Average, in percent.

    ``samples`` needs ``method, seed, benchmark, problem_id, correct``; ``ks`` defaults to
    1, 2, 4, ..., n for the smallest per-problem sample count n. Returns long rows:
    method, seed, benchmark, k, value.
    """
    missing = [c for c in (*RUN_COLUMNS, "benchmark", "problem_id", "correct") if c not in samples.columns]
    if missing:
        raise ValueError(f"samples lack columns {missing}")
    per_problem = (samples.assign(correct=samples["correct"].astype(np.int64))
                   .groupby([*RUN_COLUMNS, "benchmark", "problem_id"], sort=False)["correct"]
                   .agg(n="size", c="sum").reset_index())
    grid = list(ks) if ks is not None else default_ks(int(per_problem["n"].min()))
    rows = []
    for (method, seed), run in per_problem.groupby(list(RUN_COLUMNS), sort=False):
        for k in grid:
            scores = {bench: 100.0 * float(pass_at_k(part["n"].to_numpy(), part["c"].to_numpy(), k).mean())
                      for bench, part in run.groupby("benchmark", sort=False)}
            for bench, value in scores.items():
                rows.append(dict(method=method, seed=seed, benchmark=bench, k=k, value=value))
            rows.append(dict(method=method, seed=seed, benchmark=AVERAGE, k=k, value=macro_average(scores)))
    return pd.DataFrame(rows)


def plot_pass_at_k_curves(curves: pd.DataFrame, out_stem: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """One panel per benchmark (and the Average), one line per method; writes ``<stem>.pdf`` and ``.png``.

    Neither file carries a date or a software version, so rebuilding the same curves gives the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    if curves.empty:
        raise ValueError("no curves to plot")
    benchmarks = list(pd.unique(curves["benchmark"]))
    methods = list(pd.unique(curves["method"]))
    colours = dict(zip(methods, sns.color_palette(PALETTE, len(methods))))
    cols = min(4, len(benchmarks))
    rows = int(np.ceil(len(benchmarks) / cols))
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=0.9):
        fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols + 0.6, 1.8 * rows + 0.5),
                                 sharex=True, sharey=True, squeeze=False)
        for ax, bench in zip(axes.flat, benchmarks):
            for method in methods:
                part = curves[(curves["benchmark"] == bench) & (curves["method"] == method)]
                stats = part.groupby("k")["value"].agg(["mean", "min", "max"])
                ax.plot(stats.index, stats["mean"], marker="o", markersize=2.5, linewidth=1.2,
                        color=colours[method], label=method)
                if part["seed"].nunique() > 1:
                    ax.fill_between(stats.index, stats["min"], stats["max"], color=colours[method], alpha=0.2,
                                    linewidth=0)
            ax.set_xscale("log", base=2)
            ks = sorted(pd.unique(curves["k"]))
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.set_title(bench)
            ax.set_ylim(-2, 102)
        for ax in axes.flat[len(benchmarks):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("Pass@k, unbiased (%)")
        for col in range(cols):
            lowest = axes[(len(benchmarks) - 1 - col) // cols, col]  # the column's last visible panel
            lowest.tick_params(labelbottom=True)
            lowest.set_xlabel("k")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(methods), 6), frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
        if title:
            fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        stem = Path(out_stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = {"pdf": stem.with_suffix(".pdf"), "png": stem.with_suffix(".png")}
        fig.savefig(paths["pdf"], metadata=PDF_METADATA)
        fig.savefig(paths["png"], dpi=200, metadata=PNG_METADATA)
        plt.close(fig)
    log.info("wrote Pass@k curves to %s.{pdf,png}", stem)
    return paths
