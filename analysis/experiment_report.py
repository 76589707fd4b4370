"""Tables of the toy experiments, from their committed counts, beside the paper's numbers (their figures:
:mod:`analysis.figures`).

Every cell is "mean ± half-width of the 95 % t interval over seeds", so a reader sees at once whether two
rows differ by more than the seeds do. The paper's numbers come from ``eval.reference`` and are labelled as
the paper's: they are for 1.5B-8B models on AIME, not for the toy world, so only their direction compares.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.experiments import (
    BASE, COUNTS_COMPRESSION, COUNTS_FILE, EXPERIMENT_RESULTS, EXPERIMENTS, METRICS, ExperimentConfig, ExperimentResult,
    analyse, change_from_base, manifest_config, read_counts,
)
from analysis.figures import experiment_figure, paradox_figure
from eval.reference import PAPER_SOURCE, reference_dir
from workbench.data import suite_generation
from workbench.runs import producer, read_manifest, run_folder

NOTE = ("Toy world, {seeds} seeds of {steps} steps each; every checkpoint sampled n={n} times with the toy "
        "tiers' evaluation settings (temperature {g.temperature:g}, top-p {g.top_p:g}, top-k {g.top_k}, at most "
        "{g.max_new_tokens} tokens) on {problems} test problems per tier. Cells: mean over seeds ± half-width of "
        "the 95 % Student-t interval. Trained checkpoints share sampling seed {sample_seed}; the base student is sampled once per "
        "seed with that seed as its sampling seed, so its sampling noise is inside every method - base interval.")


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


def paradox_table(result: ExperimentResult) -> pd.DataFrame:
    """Mean Pass@k per method and k, and each method's change from the base student (± t half-width over
    seeds of the per-seed differences, the base sampled once per seed)."""
    curves = result.curves
    table = curves.groupby(["method", "k"], sort=False)["value"].mean().unstack("k").map(lambda v: f"{v:.1f}")
    if BASE in set(curves["method"]):
        change = change_from_base(curves)
        cells = change.assign(cell=[_cell(m, h) for m, h in zip(change["change"], change["ci"])])
        delta = cells.pivot(index="method", columns="k", values="cell").reindex(
            [m for m in table.index if m != BASE])
        delta.index = [f"{m} - base" for m in delta.index]
        table = pd.concat([table, delta])
    table.columns = [f"Pass@{k} (unbiased)" for k in table.columns]
    return table


def write(result: ExperimentResult, n: int, folder: Path, note: str) -> list[Path]:
    """Markdown + CSV tables and the figures into ``folder`` (the experiment's results folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.md").write_text(markdown(result, n, note))
    result.summary.round(3).to_csv(folder / "summary.csv", index=False)
    written = [folder / "table.md", folder / "summary.csv"]
    if result.paired is not None:
        result.paired.round(4).to_csv(folder / "paired.csv", index=False)
        written.append(folder / "paired.csv")
    written += list(experiment_figure(result, n, folder).values())
    if result.curves is not None:
        result.curves.round(4).to_csv(folder / "pass_at_k.csv", index=False)
        written += [folder / "pass_at_k.csv", *paradox_figure(result, folder).values()]
    return written


def note(cfg: ExperimentConfig) -> str:
    return NOTE.format(seeds=len(cfg.seeds), steps=cfg.max_steps, n=cfg.n, g=suite_generation(cfg.tiers),
                       problems=cfg.problems_per_tier, sample_seed=cfg.sample_seed)


def save(result: ExperimentResult, cfg: ExperimentConfig, **manifest: Any) -> Path:
    """Counts, tables and figures of one experiment into its results folder, with a manifest that records
    what the counts cost (``result.wall_seconds``) and how long drawing took."""
    out = cfg.results / result.name
    started = time.perf_counter()
    wall = dict(result.wall_seconds)
    # run_folder writes its finished manifest on leaving the block, so the reporting time set inside is in it
    with run_folder(out, manifest_config(result.name, cfg), cfg.sample_seed, kind="toy-experiment",
                    wall_seconds=wall, **manifest):
        result.counts.to_csv(out / COUNTS_FILE, index=False, compression=COUNTS_COMPRESSION)
        write(result, cfg.n, out, note(cfg))
        wall["reporting_s"] = round(time.perf_counter() - started, 2)
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
    """Tables and figures of experiment ``name`` written again from its committed counts; the manifest keeps
    the command, commit, times and wall seconds of the run that produced the counts (``produced_by``)."""
    previous = read_manifest(results / name)
    result, cfg = load(name, results)
    result.wall_seconds = dict(previous.get("wall_seconds", {}))
    result.wall_seconds.pop("reporting_s", None)
    save(result, cfg, produced_by=producer(previous))
    return result, cfg


def redraw_all(results: Path = EXPERIMENT_RESULTS) -> list[str]:
    """Every experiment that has committed counts; returns their names."""
    done = [name for name in EXPERIMENTS if (results / name / COUNTS_FILE).is_file()]
    for name in done:
        redraw(name, results)
    return done

