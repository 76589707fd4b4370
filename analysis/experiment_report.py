"""Tables and figures of the toy experiments, drawn from their committed counts, beside the paper's numbers.

Every cell is "mean ± half-width of the 95 % t interval over seeds", so a reader sees at once whether two
rows differ by more than the seeds do. The paper's numbers come from ``eval.reference`` and are labelled as
the paper's: they are for 1.5B-8B models on AIME, not for the toy world, so only their direction compares.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

import dataclasses

from analysis.experiments import (
    BASE, COUNTS_COMPRESSION, COUNTS_FILE, EXPERIMENT_RESULTS, EXPERIMENTS, ExperimentConfig, ExperimentResult, analyse,
    manifest_config, read_counts, t_interval, variants_of,
)
from workbench.data import suite_generation
from workbench.runs import run_folder
from eval.reference import PAPER_SOURCE, reference_dir
from workbench.plotting import (
    BAND_ALPHA, METHOD_COLOURS, TEXT_WIDTH, house_style, method_colours, pass_at_k_panel, save_figure,
)

METRICS = {"avg": "Avg@{n}", "pass": "Pass@{n} (unbiased, Chen et al.)"}
NOTE = ("Toy world, {seeds} seeds of {steps} steps each; every checkpoint sampled n={n} times with the toy "
        "tiers' evaluation settings (temperature {g.temperature:g}, top-p {g.top_p:g}, top-k {g.top_k}, at most "
        "{g.max_new_tokens} tokens) on {problems} test problems per tier. Cells: mean over seeds ± half-width of "
        "the 95 % Student-t interval (the base student is one model, sampled once).")


def _cell(mean: float, half: float) -> str:
    return f"{mean:.1f}" if not np.isfinite(half) else f"{mean:.1f} ± {half:.1f}"


def wide_table(result: ExperimentResult, n: int) -> pd.DataFrame:
    """One row per variant, one column per (metric, tier), cells "mean ± CI"."""
    s = result.summary
    tiers = list(dict.fromkeys(s["benchmark"]))
    rows = []
    for label, part in s.groupby("label", sort=False):
        row = {"variant": label, "seeds": int(part["seeds"].max())}
        for metric, name in METRICS.items():
            for tier in tiers:
                cell = part[part["benchmark"] == tier]
                if not cell.empty:
                    row[f"{name.format(n=n)} {tier}"] = _cell(cell[metric].iat[0], cell[f"{metric}_ci"].iat[0])
        rows.append(row)
    return pd.DataFrame(rows)


def paired_table(result: ExperimentResult, n: int) -> pd.DataFrame | None:
    if result.paired is None or result.paired.empty:
        return None
    p = result.paired.copy()
    p["metric"] = p["metric"].map(lambda m: METRICS[m].format(n=n))
    return p.round({"difference": 2, "ci": 2, "p_value": 3, "detectable": 2})


def paper_ablation() -> pd.DataFrame:
    """The paper's DPAW ablation (AIME24/25, R1-Distill-1.5B student), labelled as the paper's."""
    frame = pd.read_csv(reference_dir() / "ablation_dpaw.csv")
    frame.insert(0, "source", PAPER_SOURCE)
    return frame


def markdown(result: ExperimentResult, n: int, note: str) -> str:
    parts = [f"# Toy experiment: {result.name}\n", note, "", wide_table(result, n).to_markdown(index=False), ""]
    paired = paired_table(result, n)
    if paired is not None:
        first = paired["comparison"].iloc[0]
        parts += [f"## Paired differences over seeds (same seed, same prompts): {first}, per tier", "",
                  paired[paired["comparison"] == first].to_markdown(index=False), ""]
        if paired["comparison"].nunique() > 1:
            parts += ["## Every comparison, Average over tiers", "",
                      paired[paired["benchmark"] == "Average"].to_markdown(index=False), ""]
        parts += ["`detectable`: the smallest true difference a paired t-test over these seeds finds with 80 % "
                  "power at the 5 % level, from the spread of the per-seed differences.", ""]
    if result.name == "dpaw":
        parts += ["## The paper's ablation (AIME, 1.5B student; not the toy world)", "",
                  paper_ablation().to_markdown(index=False), ""]
    if result.curves is not None:
        parts += ["## Pass@k paradox: macro Pass@k (%) by k, mean over seeds", "", paradox_table(result).to_markdown(), ""]
    return "\n".join(parts)


def _change_from_base(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and k: mean change of Pass@k from the base student over seeds, and its t half-width."""
    base = curves[curves["method"] == BASE].groupby("k")["value"].mean()
    delta = curves[curves["method"] != BASE].assign(change=lambda d: d["value"] - d["k"].map(base))
    rows = [{"method": method, "k": k, "change": float(part["change"].mean()),
             "ci": t_interval(part["change"].to_numpy())[0]}
            for (method, k), part in delta.groupby(["method", "k"], sort=False)]
    return pd.DataFrame(rows)


def paradox_table(result: ExperimentResult) -> pd.DataFrame:
    """Mean Pass@k per method and k, and each method's change from the base student (± t half-width
    over seeds; the base is one model sampled once, so the interval is the trained method's)."""
    curves = result.curves
    table = curves.groupby(["method", "k"], sort=False)["value"].mean().unstack("k").map(lambda v: f"{v:.1f}")
    if BASE in set(curves["method"]):
        change = _change_from_base(curves)
        cells = change.assign(cell=[_cell(m, h) for m, h in zip(change["change"], change["ci"])])
        delta = cells.pivot(index="method", columns="k", values="cell").reindex(
            [m for m in table.index if m != BASE])
        delta.index = [f"{m} - base" for m in delta.index]
        table = pd.concat([table, delta])
    table.columns = [f"Pass@{k} (unbiased)" for k in table.columns]
    return table


def _variant_colours(name: str, labels: list[str]) -> dict[str, tuple]:
    """Each row's colour: a method its own (workbench.plotting); SCOPE's ablations black, so that in the
    DPAW figure SCOPE and the OPD control stand out and the ablations read by their labels."""
    methods = {v.display: v.name if v.name in METHOD_COLOURS else v.name.split("-")[0] for v in variants_of(name)}
    own = {label: method for label, method in methods.items()
           if method in METHOD_COLOURS and (method != "scope" or label == "SCOPE")}  # an ablation is not SCOPE
    colours = method_colours(sorted(set(own.values())))
    return {label: colours[own[label]] if label in own else (0.0, 0.0, 0.0) for label in labels}


def _forest(ax: plt.Axes, summary: pd.DataFrame, metric: str, tier: str, labels: list[str], colours: dict,
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


def figure(result: ExperimentResult, n: int, folder: Path) -> dict[str, Path]:
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
        change = _change_from_base(curves)
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


def write(result: ExperimentResult, n: int, folder: Path, note: str) -> list[Path]:
    """Markdown + CSV tables and the figures into ``folder`` (the experiment's results folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(markdown(result, n, note))
    result.summary.round(3).to_csv(folder / "summary.csv", index=False)
    written = [folder / "table.md", folder / "summary.csv"]
    if result.paired is not None:
        result.paired.round(4).to_csv(folder / "paired.csv", index=False)
        written.append(folder / "paired.csv")
    written += list(figure(result, n, folder).values())
    if result.curves is not None:
        result.curves.round(4).to_csv(folder / "pass_at_k.csv", index=False)
        written += [folder / "pass_at_k.csv", *paradox_figure(result, folder).values()]
    return written


def note(cfg: ExperimentConfig) -> str:
    return NOTE.format(seeds=len(cfg.seeds), steps=cfg.max_steps, n=cfg.n, g=suite_generation(cfg.tiers),
                       problems=cfg.problems_per_tier)


def save(result: ExperimentResult, cfg: ExperimentConfig) -> Path:
    """Counts, tables and figures of one experiment into its results folder, with a manifest."""
    out = cfg.results / result.name
    with run_folder(out, manifest_config(result.name, cfg), cfg.sample_seed, kind="toy-experiment"):
        result.counts.to_csv(out / COUNTS_FILE, index=False, compression=COUNTS_COMPRESSION)
        write(result, cfg.n, out, note(cfg))
    return out


def load(name: str, results: Path = EXPERIMENT_RESULTS) -> tuple[ExperimentResult, ExperimentConfig]:
    """Experiment ``name``'s tables from its committed counts, and the settings it was made with (its
    manifest), without sampling or writing anything."""
    counts, config = read_counts(name, results)
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    cfg = ExperimentConfig(results=results, **{k: tuple(v) if isinstance(v, list) else v
                                               for k, v in config.items() if k in fields})
    return analyse(name, counts, cfg.n), cfg


def redraw(name: str, results: Path = EXPERIMENT_RESULTS) -> tuple[ExperimentResult, ExperimentConfig]:
    """Tables and figures of experiment ``name`` written again from its committed counts."""
    result, cfg = load(name, results)
    save(result, cfg)
    return result, cfg


def redraw_all(results: Path = EXPERIMENT_RESULTS) -> list[str]:
    """Every experiment that has committed counts; returns their names."""
    done = [name for name in EXPERIMENTS if (results / name / COUNTS_FILE).is_file()]
    for name in done:
        redraw(name, results)
    return done

