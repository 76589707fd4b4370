"""Benchmark x method tables of Avg@k and Pass@k, beside the paper's numbers.

The flow is: graded samples -> :func:`summarise_samples` (a long frame of metrics with bootstrap
intervals, in percent) -> :func:`metric_table` (one metric, rows = methods, columns = benchmarks +
"Average") -> optional :func:`add_paper` -> :func:`format_cells` -> Markdown, LaTeX or CSV.
Keeping the long frame as the exchange format lets runs, seeds and the paper's numbers be
concatenated and filtered with ordinary pandas before any table is drawn.

Metric names say which estimator produced a number, because the paper's "Pass@32" is the
with-replacement bootstrap form: ``avg@k``, ``pass@k`` (unbiased, Chen et al.) and
``pass@k/bootstrap`` (the paper's form). The paper's Pass@32 is filed as ``pass@32/bootstrap``.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from numbers import Integral
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from eval.metrics import (
    avg_at_k,
    bootstrap_ci,
    macro_average,
    macro_bootstrap_ci,
    pass_at_k,
    pass_at_k_bootstrap,
    seed_ci,
)
from eval.reference import AVERAGE, PAPER_K, paper_table1

logger = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("benchmark", "problem_id", "sample_idx", "correct")
GROUP_COLUMNS = ("setting", "model", "method", "seed")
MISSING = "n/a"


def avg_metric(k: int) -> str:
    """Name of Avg@k in long frames."""
    return f"avg@{k}"


def pass_metric(k: int) -> str:
    """Name of the unbiased (Chen et al.) Pass@k in long frames."""
    return f"pass@{k}"


def bootstrap_pass_metric(k: int) -> str:
    """Name of the paper's with-replacement bootstrap Pass@k in long frames."""
    return f"pass@{k}/bootstrap"


def paper_long() -> pd.DataFrame:
    """The paper's Table 1 as a long metrics frame, comparable with :func:`summarise_samples` output.

    ``setting`` is the student's name (one per setting); Pass@32 is filed as ``pass@32/bootstrap``.
    """
    wide = paper_table1()
    names = {f"avg_at_{PAPER_K}": avg_metric(PAPER_K), f"pass_at_{PAPER_K}": bootstrap_pass_metric(PAPER_K)}
    long = wide.melt(
        id_vars=["student", "teacher", "method", "benchmark", "source"],
        value_vars=list(names),
        var_name="metric",
        value_name="value",
    )
    long["metric"] = long["metric"].map(names)
    long.insert(0, "setting", long["student"])
    long.attrs["source"] = wide.attrs["source"]
    return long


def _check_samples(samples: pd.DataFrame, k: int) -> list[str]:
    """Validate a samples frame; return the grouping columns it carries."""
    missing = [col for col in SAMPLE_COLUMNS if col not in samples.columns]
    if missing:
        raise ValueError(f"samples frame lacks columns {missing}; it needs {list(SAMPLE_COLUMNS)}")
    if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if samples.empty:
        raise ValueError("samples frame has no rows")
    grades = samples["correct"]
    if grades.isna().any():
        raise ValueError(f"column 'correct' has {int(grades.isna().sum())} missing grades")
    if not grades.isin([0, 1]).all():
        raise ValueError(f"column 'correct' must hold 0/1 or booleans, got {sorted(grades.unique())[:5]}")
    groups = [col for col in GROUP_COLUMNS if col in samples.columns]
    key = [*groups, "benchmark", "problem_id", "sample_idx"]
    dup = samples.duplicated(key, keep=False)
    if dup.any():
        first = samples.loc[dup, key].iloc[0].to_dict()
        raise ValueError(f"{int(dup.sum())} duplicated sample rows, e.g. {first}")
    return groups


def _metric_rows(
    per_benchmark: dict[str, np.ndarray], metric: str, level: float, n_boot: int, seed: int
) -> list[dict]:
    """Long rows (percent) for one metric: each benchmark, then the macro Average."""
    rows = []
    for bench, values in per_benchmark.items():
        mean, lo, hi = bootstrap_ci(100.0 * values, level=level, n_boot=n_boot, seed=seed)
        rows.append(dict(benchmark=bench, metric=metric, value=mean, ci_lo=lo, ci_hi=hi, n_problems=values.size))
    scaled = {bench: 100.0 * values for bench, values in per_benchmark.items()}
    mean, lo, hi = macro_bootstrap_ci(scaled, level=level, n_boot=n_boot, seed=seed)
    n_total = sum(v.size for v in per_benchmark.values())
    rows.append(dict(benchmark=AVERAGE, metric=metric, value=mean, ci_lo=lo, ci_hi=hi, n_problems=n_total))
    return rows


def summarise_samples(
    samples: pd.DataFrame, k: int, *, level: float = 0.95, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Per-benchmark Avg@k, Pass@k (unbiased) and Pass@k (paper bootstrap, exact) with macro Average.

    ``samples`` has one graded sample a row: ``benchmark, problem_id, sample_idx, correct`` and
    optionally ``setting``, ``model``, ``method``, ``seed`` (each combination summarised apart).
    Problems may carry more than k samples (all are used; Avg@k is then their mean), never fewer.
    Returns a long frame in percent with a percentile bootstrap interval over problems
    (stratified by benchmark for the Average): group columns, benchmark, metric, value,
    ci_lo, ci_hi, n_problems.
    """
    groups = _check_samples(samples, k)
    per_problem = (
        samples.assign(correct=samples["correct"].astype(np.int64))
        .groupby([*groups, "benchmark", "problem_id"], sort=False, dropna=False)["correct"]
        .agg(n="size", c="sum")
        .reset_index()
    )
    short = per_problem[per_problem["n"] < k]
    if not short.empty:
        bad = short.iloc[0]
        where = ", ".join(f"{col}={bad[col]!r}" for col in groups)
        raise ValueError(
            f"{len(short)} problems have fewer than k={k} samples, e.g. benchmark={bad['benchmark']!r} "
            f"problem_id={bad['problem_id']!r} with n={bad['n']}" + (f" ({where})" if where else "")
        )
    out = []
    grouped = per_problem.groupby(groups, sort=False, dropna=False) if groups else [((), per_problem)]
    for key, frame in grouped:
        key = key if isinstance(key, tuple) else (key,)
        by_bench = {bench: part for bench, part in frame.groupby("benchmark", sort=False)}
        n = {bench: part["n"].to_numpy() for bench, part in by_bench.items()}
        c = {bench: part["c"].to_numpy() for bench, part in by_bench.items()}
        estimators = {
            avg_metric(k): {b: avg_at_k(c[b], n[b]) for b in by_bench},
            pass_metric(k): {b: pass_at_k(n[b], c[b], k) for b in by_bench},
            bootstrap_pass_metric(k): {b: pass_at_k_bootstrap(n[b], c[b], k) for b in by_bench},
        }
        for metric, per_benchmark in estimators.items():
            for row in _metric_rows(per_benchmark, metric, level, n_boot, seed):
                out.append({**dict(zip(groups, key)), **row})
    logger.info("summarised %d samples into %d metric rows", len(samples), len(out))
    return pd.DataFrame(out)


@dataclass(frozen=True)
class MetricTable:
    """One metric as rows x (benchmarks + Average), in percent, with optional intervals and paper values.

    ``ci_lo``/``ci_hi`` and ``paper`` share ``values``' index and columns; NaN marks a cell with
    no interval or no paper number.
    """

    metric: str
    values: pd.DataFrame
    ci_lo: pd.DataFrame
    ci_hi: pd.DataFrame
    paper: pd.DataFrame | None = None


def _select(long: pd.DataFrame, metric: str, row: str, where: Mapping[str, object] | None) -> pd.DataFrame:
    """Rows of one metric matching ``where``, with clear errors for absent columns or values."""
    for col in ("benchmark", "metric", "value", row):
        if col not in long.columns:
            raise ValueError(f"long frame lacks column {col!r}; columns are {list(long.columns)}")
    frame = long[long["metric"] == metric]
    if frame.empty:
        raise ValueError(f"no rows for metric {metric!r}; available: {sorted(long['metric'].unique())}")
    for col, wanted in (where or {}).items():
        if col not in frame.columns:
            raise ValueError(f"where names column {col!r}, absent from {list(frame.columns)}")
        frame = frame[frame[col] == wanted]
        if frame.empty:
            raise ValueError(f"no rows of metric {metric!r} with {col}={wanted!r}")
    return frame


def _with_average(frame: pd.DataFrame, row: str, run_keys: list[str], benchmarks: list[str]) -> pd.DataFrame:
    """Add a computed macro Average for every run that reports none but has all benchmarks."""
    added = []
    for key, part in frame.groupby([row, *run_keys], sort=False, dropna=False):
        if AVERAGE in set(part["benchmark"]):
            continue
        scores = dict(zip(part["benchmark"], part["value"]))
        if not set(benchmarks) <= set(scores):
            continue
        key = key if isinstance(key, tuple) else (key,)
        avg = macro_average({b: scores[b] for b in benchmarks})
        added.append({**dict(zip([row, *run_keys], key)), "benchmark": AVERAGE, "value": avg})
    if added:
        logger.debug("computed the macro Average for %d runs", len(added))
        frame = pd.concat([frame, pd.DataFrame(added)], ignore_index=True)
    return frame


def _cell_stats(part: pd.DataFrame, level: float) -> tuple[float, float, float]:
    """One cell: the value and interval of a single run, or mean and t-interval over seeds."""
    if len(part) > 1:
        return seed_ci(part["value"].to_numpy(), level=level)
    first = part.iloc[0]
    lo = first["ci_lo"] if "ci_lo" in part.columns else math.nan
    hi = first["ci_hi"] if "ci_hi" in part.columns else math.nan
    return float(first["value"]), float(lo), float(hi)


def metric_table(
    long: pd.DataFrame,
    metric: str,
    *,
    row: str = "method",
    where: Mapping[str, object] | None = None,
    benchmarks: Sequence[str] | None = None,
    level: float = 0.95,
) -> MetricTable:
    """Pivot one metric of a long frame to rows (``row`` column) x benchmarks + "Average".

    ``where`` filters columns to equal values (e.g. ``{"setting": "qwen3-1.7b-base"}``). Several
    seeds of one cell become their mean with a t-interval over seeds; a single run keeps its own
    ``ci_lo``/``ci_hi``. A reported Average is kept as reported; otherwise it is the unweighted
    mean of the benchmarks (rows lacking a benchmark get none).
    """
    frame = _select(long, metric, row, where)
    run_keys = ["seed"] if "seed" in frame.columns else []
    dup = frame.duplicated([row, "benchmark", *run_keys], keep=False)
    if dup.any():
        first = frame.loc[dup, [row, "benchmark", *run_keys]].iloc[0].to_dict()
        raise ValueError(f"several rows for one cell of {metric!r}, e.g. {first}; narrow them with `where`")
    present = [b for b in pd.unique(frame["benchmark"]) if b != AVERAGE]
    if benchmarks is None:
        benchmarks = present
    else:
        absent = [b for b in benchmarks if b not in present]
        if absent:
            raise ValueError(f"benchmarks {absent} not in the {metric!r} rows; present: {present}")
        benchmarks = list(benchmarks)
        if set(benchmarks) != set(present):
            logger.info(
                "showing %d of %d benchmarks: Average recomputed over those shown", len(benchmarks), len(present)
            )
            frame = frame[frame["benchmark"] != AVERAGE]
    frame = _with_average(frame[frame["benchmark"].isin([*benchmarks, AVERAGE])], row, run_keys, benchmarks)
    rows = list(pd.unique(frame[row]))
    columns = [*benchmarks, AVERAGE]
    index = pd.Index(rows, name=row)
    values, ci_lo, ci_hi = (pd.DataFrame(math.nan, index=index, columns=columns) for _ in range(3))
    for (label, bench), part in frame.groupby([row, "benchmark"], sort=False):
        values.loc[label, bench], ci_lo.loc[label, bench], ci_hi.loc[label, bench] = _cell_stats(part, level)
    return MetricTable(metric=metric, values=values, ci_lo=ci_lo, ci_hi=ci_hi)


def add_paper(
    table: MetricTable,
    paper: pd.DataFrame,
    *,
    paper_metric: str | None = None,
    where: Mapping[str, object] | None = None,
) -> MetricTable:
    """Attach the paper's numbers for the same rows and columns (default: the same metric name).

    Name ``paper_metric`` explicitly to compare with a different estimator; by default an
    unbiased ``pass@k`` finds no paper counterpart and fails loudly instead of mixing the two.
    """
    row = table.values.index.name
    ref = metric_table(paper, paper_metric or table.metric, row=row, where=where)
    aligned = ref.values.reindex(index=table.values.index, columns=table.values.columns)
    return replace(table, paper=aligned)


def _fmt(value: float, decimals: int, sign: bool = False) -> str:
    """Fixed decimals; a difference that rounds to zero prints as +0.0, never -0.0."""
    if not np.isfinite(value):
        return MISSING
    value = round(float(value), decimals) + 0.0
    return f"{value:{'+' if sign else ''}.{decimals}f}"


def format_cells(table: MetricTable, *, decimals: int = 1, ci: bool = False) -> pd.DataFrame:
    """A table of display strings: values (``± half-width`` of the interval when ``ci``), and paper
    columns ``<bench> (paper)`` and ``<bench> Δ`` (ours - paper) when attached.
    """
    values = table.values
    cells = pd.DataFrame(index=values.index)
    for col in values.columns:
        half = (table.ci_hi[col] - table.ci_lo[col]) / 2.0
        cells[col] = [
            _fmt(v, decimals) + (f" ± {h:.{decimals}f}" if ci and np.isfinite(v) and np.isfinite(h) else "")
            for v, h in zip(values[col], half)
        ]
        if table.paper is not None:
            cells[f"{col} (paper)"] = [_fmt(v, decimals) for v in table.paper[col]]
            cells[f"{col} Δ"] = [_fmt(v, decimals, sign=True) for v in values[col] - table.paper[col]]
    cells.index.name = values.index.name
    return cells


def to_markdown(cells: pd.DataFrame) -> str:
    """A GitHub-flavoured pipe table, padded so its columns also line up as plain text: label column
    left-aligned, value columns right-aligned, cells written as they are (tabulate parses no numbers)."""
    def esc(text: object) -> str:
        return str(text).replace("|", "\\|")

    table = cells.rename(index=esc, columns=esc).map(esc).rename_axis(esc(cells.index.name or ""))
    return table.to_markdown(tablefmt="pipe", colalign=("left", *["right"] * len(cells.columns)),
                             disable_numparse=True) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
}


def latex_escape(text: object) -> str:
    """Escape LaTeX specials character by character, so no replacement is escaped twice."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def to_latex(cells: pd.DataFrame, *, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs tabular from pandas' Styler, in a table float when a caption or label is given;
    every cell, header and the caption go through :func:`latex_escape`."""
    table = cells.rename_axis(cells.index.name or "").reset_index()
    styler = table.style.hide(axis="index").format(latex_escape).format_index(latex_escape, axis="columns")
    wrapped = caption is not None or label is not None
    return styler.to_latex(column_format="l" + "r" * len(cells.columns), hrules=True,
                           caption=None if caption is None else latex_escape(caption), label=label,
                           position="t" if wrapped else None, position_float="centering" if wrapped else None)


def numeric_frame(table: MetricTable) -> pd.DataFrame:
    """The table's numbers for machines: ``<bench>``, ``<bench>_ci_lo``, ``<bench>_ci_hi`` and,
    with paper values, ``<bench>_paper`` and ``<bench>_delta`` (ours - paper)."""
    parts = {}
    for col in table.values.columns:
        parts[col] = table.values[col]
        parts[f"{col}_ci_lo"] = table.ci_lo[col]
        parts[f"{col}_ci_hi"] = table.ci_hi[col]
        if table.paper is not None:
            parts[f"{col}_paper"] = table.paper[col]
            parts[f"{col}_delta"] = table.values[col] - table.paper[col]
    return pd.DataFrame(parts, index=table.values.index)


def _replace_together(files: Mapping[Path, tuple[str, str | None]]) -> None:
    """Write each text to a temporary file beside its target, then rename them all into place.

    A full disk, a kill or an exception while writing leaves every target as it was, whole; only
    the renames, which cannot run out of space, change them. ``files`` maps a path to its text and
    the ``newline`` argument of :func:`open`.
    """
    temps: dict[Path, Path] = {}
    try:
        for path, (text, newline) in files.items():
            temps[path] = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            with open(temps[path], "x", encoding="utf-8", newline=newline) as fh:
                fh.write(text)
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def write_tables(
    table: MetricTable,
    out_dir: str | Path,
    stem: str,
    *,
    decimals: int = 1,
    ci: bool = False,
    caption: str | None = None,
) -> dict[str, Path]:
    """Write ``<stem>.md`` and ``<stem>.tex`` (display cells) and ``<stem>.csv`` (numbers), all three
    or none: a failed write leaves the previous files whole."""
    if not stem or "/" in stem:
        raise ValueError(f"stem must be a plain file name without '/', got {stem!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = format_cells(table, decimals=decimals, ci=ci)
    paths = {"md": out / f"{stem}.md", "tex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    # pandas ends CSV lines itself, so that text is written without newline translation
    _replace_together({
        paths["md"]: (to_markdown(cells), None),
        paths["tex"]: (to_latex(cells, caption=caption), None),
        paths["csv"]: (numeric_frame(table).to_csv(), ""),
    })
    logger.info("wrote %s table to %s/%s.{md,tex,csv}", table.metric, out, stem)
    return paths
