"""One look for every figure the workbench draws, and figure files that change only when the figure does.

Both figure modules (``analysis.figures``, ``eval.curves``) draw through it, so a method keeps its colour
everywhere and the Pass@k panel looks alike; no date or version enters a file, so unchanged results give
unchanged bytes. The style's choices: docs/analysis.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Subsetting fonts into each PDF logs a dozen INFO lines per figure from fontTools; they say nothing
# a reader of a run's log needs.
logging.getLogger("fontTools").setLevel(logging.WARNING)

matplotlib.use("Agg")  # figures go to files: Agg needs no display and renders alike everywhere

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart with any colour-vision deficiency.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
PALETTE = [OKABE_ITO[c] for c in ("blue", "vermillion", "bluish green", "reddish purple", "orange", "sky blue",
                                  "black", "yellow")]
SEQUENTIAL = "cividis"  # perceptually even, readable with either red-green deficiency and in greyscale
COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
TEXT_WIDTH = 7.0  # inches: both columns
PNG_DPI = 200
# matplotlib leaves out a metadata key set to None: no dates, no "Matplotlib vX" producer.
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None}
PNG_METADATA = {"Software": None}
# Read when a file is written, so they are applied by save_figure itself, not only inside house_style.
SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "savefig.bbox": "tight", "savefig.pad_inches": 0.02}
HOUSE_RC = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 6.5, "legend.title_fontsize": 7, "legend.frameon": False, "lines.linewidth": 1.2,
    "lines.markersize": 3.5, "axes.linewidth": 0.6, "figure.dpi": 100, **SAVE_RC,
}
# Methods of the workbench in fixed colours, no two from one hue family; others take the rest in order.
METHOD_ORDER = ("base", "grpo", "kd", "opd", "scope")
METHOD_COLOURS = {"base": OKABE_ITO["black"], "grpo": OKABE_ITO["reddish purple"], "kd": OKABE_ITO["bluish green"],
                  "opd": OKABE_ITO["blue"], "scope": OKABE_ITO["vermillion"]}
OTHER_COLOURS = [OKABE_ITO["orange"], OKABE_ITO["sky blue"], "#999999", OKABE_ITO["yellow"]]
BAND_ALPHA = 0.15  # a seed band under its line: light enough that overlapping bands leave every line visible
PASS_AT_K_LABEL = "Pass@k (%), unbiased"


@contextmanager
def house_style() -> Iterator[None]:
    """The house matplotlib/seaborn settings for the figures drawn inside; restored afterwards."""
    with plt.rc_context(), sns.axes_style("ticks"):
        sns.set_palette(PALETTE)
        plt.rcParams.update(HOUSE_RC)
        yield


def palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` unordered categories (series that are not methods), Okabe-Ito colours in a fixed order."""
    return sns.color_palette(PALETTE, n)


def ordered_palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` ordered categories (Q1..Qn, increasing ratios): even steps of the sequential map, dark to
    light, its palest end left out so every step shows on white."""
    return [tuple(float(v) for v in c[:3]) for c in matplotlib.colormaps[SEQUENTIAL](np.linspace(0.0, 0.8, n))]


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """One colour per method, the same in every figure: known methods keep theirs, others take the
    remaining Okabe-Ito colours in order of appearance (then seaborn's colour-blind palette)."""
    extra = [m for m in dict.fromkeys(methods) if m not in METHOD_COLOURS]
    spare = OTHER_COLOURS + [c for c in sns.color_palette("colorblind", max(0, len(extra) - len(OTHER_COLOURS)))]
    colours = {**METHOD_COLOURS, **dict(zip(extra, spare))}
    return {m: matplotlib.colors.to_rgb(colours[m]) for m in methods}


def legend_columns(labels: Sequence[str], most: int) -> int:
    """Legend columns for these entries: one when a label is long (folder-named runs), else up to ``most``."""
    return 1 if max(len(str(label)) for label in labels) > 16 else min(most, len(labels))


def save_figure(fig: Figure, folder: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.pdf`` and ``<stem>.png`` into ``folder`` (created) and close the figure.

    Neither file carries a date or a software version, so the same figure gives the same bytes.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"pdf": out / f"{stem}.pdf", "png": out / f"{stem}.png"}
    with plt.rc_context(SAVE_RC):
        fig.savefig(paths["pdf"], metadata=PDF_METADATA)
        fig.savefig(paths["png"], dpi=PNG_DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return paths


def seed_band(ax: Axes, per_seed: pd.DataFrame, x: str, y: str, colour: Any, label: str) -> None:
    """Mean over seeds as a line, lowest-to-highest seed as a band (when there are several seeds).

    ``per_seed`` holds columns ``x``, ``y`` and ``seed``.
    """
    stats = per_seed.groupby(x)[y].agg(["mean", "min", "max"])
    # lines above every band (zorder), so a wide band never hides another method's line
    ax.plot(stats.index, stats["mean"], color=colour, label=label, marker="o" if len(stats) < 12 else None, zorder=3)
    if per_seed["seed"].nunique() > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=BAND_ALPHA, linewidth=0, zorder=1)


def pass_at_k_panel(ax: Axes, curves: pd.DataFrame, colours: Mapping[str, Any]) -> None:
    """Pass@k (percent) against k on a log2 axis, one line per method of ``colours`` present in
    ``curves`` (rows ``method, seed, k, value`` of one benchmark or the average), seeds banded."""
    for method, colour in colours.items():
        part = curves[curves["method"] == method]
        if not part.empty:
            seed_band(ax, part, "k", "value", colour, method)
    ks = sorted(pd.unique(curves["k"]))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(-2, 102)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)


def seed_note(seeds: Iterable[Any]) -> str:
    """Legend title saying what a :func:`seed_band` line and band are, given the seeds drawn."""
    n = len(set(seeds))
    return f"line: mean over seeds (up to {n}), band: lowest to highest seed" if n > 1 else "one seed"
