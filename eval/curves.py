"""Pass@k curves: how the chance of solving a problem grows with the sampling budget k.

A single Pass@32 number hides whether a method raised Avg@k (the curve's left end, k = 1) or only
widened what the model can reach (the right end); distillation and RL are known to move the two ends
differently, so the reproduction tables come with the whole curve. Curves use the unbiased estimator
of Chen et al. (the paper's bootstrap form differs only in how it treats k close to n). Seeds of one
method are averaged, with a band from the lowest to the highest seed. This is eval's one figures module
(eval cannot import analysis, where every other figure is drawn); both draw in ``workbench.plotting``'s style.
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
RUN_COLUMNS = ("method", "seed")


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
    return pass_at_k_curves_from_counts(per_problem, ks)


def pass_at_k_curves_from_counts(per_problem: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """:func:`pass_at_k_curves` from per-problem counts: rows ``method, seed, benchmark, n, c``."""
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


def plot_pass_at_k_curves(curves: pd.DataFrame, out_stem: str | Path) -> dict[str, Path]:
    """One panel per benchmark (and the Average), one line per method; writes ``<stem>.pdf`` and ``.png``.

    Neither file carries a date or a software version, so rebuilding the same curves gives the same bytes.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from workbench.plotting import (
        PASS_AT_K_LABEL, TEXT_WIDTH, house_style, legend_columns, method_colours, pass_at_k_panel, save_figure,
        seed_note,
    )

    if curves.empty:
        raise ValueError("no curves to plot")
    benchmarks = list(pd.unique(curves["benchmark"]))
    colours = method_colours(list(pd.unique(curves["method"])))
    cols = min(4, len(benchmarks))
    rows = int(np.ceil(len(benchmarks) / cols))
    stem = Path(out_stem)
    with house_style():
        fig, axes = plt.subplots(rows, cols, figsize=(TEXT_WIDTH, 1.6 * rows + 0.3), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, bench in zip(axes.flat, benchmarks):
            pass_at_k_panel(ax, curves[curves["benchmark"] == bench], colours)
            ax.set_title(bench)
        for ax in axes.flat[len(benchmarks):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel(PASS_AT_K_LABEL)
        for col in range(cols):
            lowest = axes[(len(benchmarks) - 1 - col) // cols, col]  # the column's last visible panel
            lowest.tick_params(labelbottom=True)
            lowest.set_xlabel("k (samples per problem)")
        sns.despine(fig)
        fig.tight_layout()
        drawn = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
        methods = [m for m in colours if m in drawn]  # a method missing from some benchmarks is still listed
        fig.legend([drawn[m] for m in methods], methods, loc="lower center", bbox_to_anchor=(0.5, 1.0),
                   ncol=legend_columns(methods, 6), title=seed_note(curves["seed"]))
        paths = save_figure(fig, stem.parent, stem.name)
    log.info("wrote Pass@k curves to %s.{pdf,png}", stem)
    return paths
