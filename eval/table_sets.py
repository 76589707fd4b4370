"""A table set (Avg@k, both Pass@k forms, as md/csv/tex, the Pass@k curves and a manifest) from sample
folders on disk, replaced whole and only by a set of at least the same runs.

Every mode builds its tables by reading the samples back from disk, so a rebuild from the same folders
writes the same bytes.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.folders import BASE_METHOD, model_label, repo_path
from workbench.errors import UserError
from workbench.runs import MANIFEST, read_manifest, write_manifest

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

def find_sample_dirs(root: str | Path) -> list[Path]:
    """Every folder at or under ``root`` holding sample shards and a manifest, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no sample folder at {root}")
    dirs = sorted({p.parent for p in root.rglob("part-*.parquet") if (p.parent / MANIFEST).is_file()})
    if not dirs:
        raise UserError(f"no sample folders (part-*.parquet beside {MANIFEST}) under {root}")
    return dirs


def run_info(folder: str | Path) -> dict[str, Any]:
    """What a sample folder's manifest says about its run: method, seed, suite, model, n, sampling."""
    config = read_manifest(folder).get("config", {})
    extra = config.get("extra", {})
    return {"method": str(extra.get("method") or model_label(str(config.get("model", Path(folder).name)))),
            "seed": int(extra.get("seed", config.get("sampling", {}).get("seed", 0))),
            "suite": extra.get("suite"), "model": config.get("model"),
            "n": config.get("sampling", {}).get("n"), "samples": repo_path(Path(folder)),
            "sampling": config.get("sampling")}


def load_samples(dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Samples of several runs with ``method`` and ``seed`` columns, in a canonical order.

    Runs are ordered base first, then by method and seed, whatever order ``dirs`` came in, so a
    table does not depend on how its folders were found. Benchmarks take their display names.
    """
    import pandas as pd

    from workbench.data import BENCHMARKS
    from workbench.records import read_records

    runs, frames = [], []
    for folder in dirs:
        run = run_info(folder)
        frame = read_records(folder).assign(method=run["method"], seed=run["seed"])
        same = next((i for i, r in enumerate(runs) if (r["method"], r["seed"]) == (run["method"], run["seed"])), None)
        if same is None:
            runs.append(run)
            frames.append(frame)
            continue
        _check_mergeable(runs[same], run, frames[same], frame)
        runs[same] = {**runs[same], "samples": f"{runs[same]['samples']}; {run['samples']}"}
        frames[same] = pd.concat([frames[same], frame], ignore_index=True)
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["method"] != BASE_METHOD, runs[i]["method"],
                                                    runs[i]["seed"]))
    runs = [runs[i] for i in order]
    samples = pd.concat([frames[i] for i in order], ignore_index=True)
    unknown = sorted(set(samples["benchmark"]) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"samples name unregistered benchmarks {unknown}")
    samples["benchmark"] = samples["benchmark"].map(lambda b: BENCHMARKS[b].display)
    return samples, runs


def _check_mergeable(first: dict[str, Any], other: dict[str, Any], a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two folders of one method and seed make one run only when they sampled other benchmarks the same way."""
    name = f"{first['method']}/seed{first['seed']}"
    if first["sampling"] != other["sampling"]:
        raise UserError(f"two sample folders of {name} were sampled with other settings ({first['samples']}, "
                        f"{other['samples']}); pass one of them")
    both = sorted(set(a["benchmark"]) & set(b["benchmark"]))
    if both:
        raise UserError(f"two sample folders of {name} both hold {', '.join(both)} ({first['samples']}, "
                        f"{other['samples']}); pass one of them")


def _paper_reference(long: pd.DataFrame, k: int) -> pd.DataFrame:
    """The paper's Table 1 as extra rows of our long frame, labelled as the paper's (reported at n=32)."""
    import pandas as pd

    from eval.reference import PAPER_K
    from eval.tables import avg_metric, bootstrap_pass_metric, paper_long

    paper = paper_long()
    rename = {avg_metric(PAPER_K): avg_metric(k), bootstrap_pass_metric(PAPER_K): bootstrap_pass_metric(k)}
    paper = paper[paper["metric"].isin(list(rename))]
    suffix = "" if k == PAPER_K else f", @{PAPER_K}"
    rows = pd.DataFrame({
        "method": "paper: " + paper["student"] + " " + paper["method"] + suffix,
        "benchmark": paper["benchmark"], "metric": paper["metric"].map(rename), "value": paper["value"],
    })
    return pd.concat([long, rows], ignore_index=True)


def _paper_student(runs: Sequence[dict[str, Any]], k: int) -> str | None:
    """The paper student this table's single run *is* (same model at n = 32), else None."""
    from eval.reference import PAPER_K
    from eval.tables import paper_long

    if k != PAPER_K or len(runs) != 1:
        return None
    students = set(paper_long()["setting"])
    return runs[0]["method"] if runs[0]["method"] in students else None


def _describe(rows: Sequence[tuple[str, int]]) -> str:
    """Method/seed rows compactly, e.g. ``base/seed0, grpo/seed0,1,2``."""
    seeds: dict[str, list[int]] = {}
    for method, seed in sorted(rows, key=lambda r: (r[0] != BASE_METHOD, r[0], r[1])):
        seeds.setdefault(method, []).append(seed)
    return ", ".join(f"{m}/seed{','.join(map(str, s))}" for m, s in seeds.items())


def check_replace(out_dir: str | Path, suite: str, k: int, rows: Sequence[tuple[str, int]], *,
                  overwrite: bool = False, missing_hint: str = "") -> None:
    """Refuse to replace the tables in ``out_dir`` with ones that would drop rows or change k.

    A table may only be replaced by one built from at least the same (method, seed) runs at the same
    k; a fresh clone without trained checkpoints would otherwise turn the committed five-method
    tables into base-only ones. Tables without a manifest name no runs, so they are never replaced
    silently either. ``overwrite`` lifts the check; ``missing_hint`` says where lost rows come from.
    """
    out = Path(out_dir)
    if overwrite or not out.is_dir():
        return
    force = "pass --overwrite (make reproduce-tables OVERWRITE=1) to replace them, or --tables-dir DIR to write elsewhere"
    if not (out / MANIFEST).is_file():
        if any(out.glob(f"{suite}_avg@*.csv")):
            raise UserError(f"{repo_path(out)} holds {suite} tables without a {MANIFEST}, so the runs they show are "
                            f"unknown; {force}")
        return
    config = read_manifest(out).get("config", {})
    old = {(str(r["method"]), int(r["seed"])) for r in config.get("runs", [])}
    old_suite, old_k = config.get("suite"), config.get("k")
    if old_suite is not None and old_suite != suite:
        raise UserError(f"{repo_path(out)} holds {old_suite} tables; this run makes {suite} tables; {force}")
    lost = old - set(rows)
    if lost:
        raise UserError(
            f"{repo_path(out)} holds {suite} tables of {len(old)} runs ({_describe(sorted(old))}); this run has "
            f"{len(set(rows))} ({_describe(rows)}) and would lose the rows of {_describe(sorted(lost))}"
            f"{missing_hint}; {force}")
    if old_k is not None and old_k != k:
        raise UserError(f"{repo_path(out)} holds {suite} tables at k={old_k}; this run makes k={k} and would replace "
                        f"their manifest and figure; {force}")


def _write_figure(samples: pd.DataFrame, out: Path, stem: str) -> dict[str, Path]:
    """The Pass@k curves, drawn under a temporary name and renamed into place, so a failed or
    interrupted draw leaves the previous figure whole."""
    from eval.curves import pass_at_k_curves, plot_pass_at_k_curves

    tmp = out / f".tmp-{stem}-{uuid.uuid4().hex[:8]}"
    drawn: dict[str, Path] = {}
    try:
        drawn = plot_pass_at_k_curves(pass_at_k_curves(samples), tmp)
        final = {kind: out / f"{stem}{path.suffix}" for kind, path in drawn.items()}
        for kind, path in drawn.items():
            os.replace(path, final[kind])
        return final
    finally:
        for path in drawn.values():
            path.unlink(missing_ok=True)


def build_tables(samples: pd.DataFrame, runs: Sequence[dict[str, Any]], out_dir: str | Path, *,
                 figure: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write ``<suite>_avg@k``, ``<suite>_pass@k`` (the paper's bootstrap form) and
    ``<suite>_pass@k_unbiased`` as md/csv/tex, the Pass@k curves and a manifest; returns what was written.

    Refuses (:func:`check_replace`) to replace tables of other runs unless ``overwrite``. The set is
    written into a staging folder and swapped in whole (:func:`workbench.locking.replace_set`), so a
    kill or a full disk leaves the previous set, which the same command then replaces.
    """
    from eval.tables import avg_metric, metric_table
    from workbench.data import display_order
    from workbench.locking import replace_set

    suite = "toy" if all(r["suite"] == "toy" for r in runs) else "real"
    k = int(samples.groupby(["method", "seed", "benchmark", "problem_id"]).size().min())
    with replace_set(out_dir) as staging:
        check_replace(out_dir, suite, k, [(r["method"], r["seed"]) for r in runs], overwrite=overwrite)
        long, written = _write_set(samples, runs, Path(out_dir), staging, suite, k, figure)
    benchmarks = display_order(samples["benchmark"].unique())
    values = metric_table(long, avg_metric(k), benchmarks=benchmarks).values
    return {"suite": suite, "k": k, "written": written, "runs": list(runs), "avg_table": values}


def _write_set(samples: pd.DataFrame, runs: Sequence[dict[str, Any]], out: Path, staging: Path, suite: str,
               k: int, figure: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tables, figure and manifest of :func:`build_tables`, written into ``staging``, naming their
    final paths in ``out``."""
    from eval.reference import PAPER_K
    from eval.tables import (
        MetricTable,
        add_paper,
        avg_metric,
        bootstrap_pass_metric,
        metric_table,
        paper_long,
        pass_metric,
        summarise_samples,
        write_tables,
    )
    from workbench.data import display_order

    benchmarks = display_order(samples["benchmark"].unique())
    long = summarise_samples(samples[["method", "seed", "benchmark", "problem_id", "sample_idx", "correct"]], k)
    several = any(sum(r["method"] == m["method"] for r in runs) > 1 for m in runs)
    problems = samples.groupby("benchmark")["problem_id"].nunique()
    size = f"{problems.min()}" if problems.min() == problems.max() else f"{problems.min()}-{problems.max()}"
    interval = ("95% t-interval over seeds where a method has several seeds, else a bootstrap over problems"
                if several else "95% bootstrap interval over problems")
    student = _paper_student(runs, k) if suite == "real" else None
    specs = [
        (avg_metric(k), f"{suite}_avg@{k}", f"Avg@{k}", True),
        (bootstrap_pass_metric(k), f"{suite}_pass@{k}", f"Pass@{k} (the paper's with-replacement form)", True),
        (pass_metric(k), f"{suite}_pass@{k}_unbiased", f"Pass@{k} (unbiased, Chen et al.)", False),
    ]
    written: dict[str, Any] = {}
    for metric, stem, name, has_paper in specs:
        frame = long
        if student is not None:
            frame = long.assign(method=BASE_METHOD)
        elif suite == "real" and has_paper:
            frame = _paper_reference(long, k)
        table: MetricTable = metric_table(frame, metric, benchmarks=benchmarks)
        if student is not None and has_paper:
            table = add_paper(table, paper_long(), paper_metric=metric, where={"setting": student})
        caption = (f"{'Toy world' if suite == 'toy' else 'Real benchmarks'}: {name}, %, {k} samples per problem, "
                   f"{size} problems per benchmark; ± is a {interval}.")
        if suite == "real" and has_paper and student is None:
            caption += f" Rows 'paper: ...' are the paper's reported numbers for its own models (n={PAPER_K}), for reference."
        written[stem] = {kind: repo_path(out / p.name)
                         for kind, p in write_tables(table, staging, stem, ci=True, caption=caption).items()}
    if figure:
        written["figure"] = {kind: repo_path(out / p.name)
                             for kind, p in _write_figure(samples, staging, f"{suite}_pass_at_k").items()}
    truncated = (samples.assign(truncated=samples["finish_reason"] == "length")
                 .groupby(["method", "seed"], sort=False)["truncated"].sum())
    for run in runs:
        run["truncated"] = int(truncated.loc[(run["method"], run["seed"])])
    write_manifest(staging, {"suite": suite, "k": k, "benchmarks": benchmarks, "runs": list(runs)}, seed=None,
                   outputs=written)
    return long, written


def rebuild(sample_dirs: Sequence[str | Path], out_dir: str | Path, *, figure: bool = True,
            overwrite: bool = False) -> dict[str, Any]:
    """Tables from sample folders already on disk (the rebuild mode, and the last step of the others)."""
    samples, runs = load_samples(sample_dirs)
    return build_tables(samples, runs, out_dir, figure=figure, overwrite=overwrite)
