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

    python -m eval.reproduce                                  # toy
    python -m eval.reproduce --model smollm2 --limit 2 --n 8 --max-new-tokens 256
    python -m eval.reproduce --from-samples results/toy/samples
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from eval.curves import pass_at_k_curves, plot_pass_at_k_curves
from eval.generate import DEFAULT_UNIT_SIZE, UnitSize, generate_samples
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
from workbench.data import BENCHMARKS, REAL_BENCHMARKS, TOY_BENCHMARKS, get_spec, load_benchmark
from workbench.models import SamplingConfig, load_backend
from workbench.records import read_records
from workbench.runs import MANIFEST, REPO_ROOT, read_manifest, write_manifest

log = logging.getLogger(__name__)

TOY_RUNS = REPO_ROOT / "results" / "toy" / "runs"
TOY_SAMPLES = REPO_ROOT / "results" / "toy" / "samples"
REAL_SAMPLES = REPO_ROOT / "results" / "runs" / "eval"
TABLES_DIR = REPO_ROOT / "results" / "tables"
BASE_METHOD = "base"
TOY_SIZE = 10  # problems per tier: 13 checkpoints x 60 problems x 32 samples run in a few minutes on 2 cores
TOY_MAX_NEW_TOKENS = 64  # the longest toy reference response (tier 6) is 46 tokens with EOS
TOY_UNIT_SIZE = 20
TOY_BATCH_SEQUENCES = 1024
PAPER_N = 32
# The paper's evaluation uses repetition penalty 1.08 for its Qwen3 student and 1.0 otherwise.
PAPER_REPETITION_PENALTY = {"qwen3-1.7b-base": 1.08}
MODEL_ALIASES = {"smollm2": "smollm2-135m-instruct"}
_SEED_DIR = re.compile(r"seed(\d+)")


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
            raise ValueError(f"{seed_dir}: method name {BASE_METHOD!r} is reserved for the untrained student")
        trained.append(Checkpoint(seed_dir.parent.name, int(match.group(1)), model))
    found += sorted(trained, key=lambda c: (c.method, c.seed))
    log.info("found %d toy checkpoints: %s", len(found), ", ".join(f"{c.method}/seed{c.seed}" for c in found))
    return found


def evaluate_toy(
    checkpoints: Sequence[Checkpoint],
    samples_root: str | Path = TOY_SAMPLES,
    *,
    toy_size: int = TOY_SIZE,
    n: int = PAPER_N,
    max_new_tokens: int = TOY_MAX_NEW_TOKENS,
    unit_size: UnitSize = TOY_UNIT_SIZE,
    progress: bool = True,
) -> list[Path]:
    """Sample every checkpoint on the six toy tiers into ``<samples_root>/<method>/seed<k>``; returns the folders."""
    problems = [p for tier in TOY_BENCHMARKS for p in load_benchmark(tier, toy_size=toy_size)]
    sampling = SamplingConfig(n=n, max_new_tokens=max_new_tokens)
    folders = []
    for ckpt in checkpoints:
        backend = load_backend("hf", str(ckpt.path), device="cpu", max_batch_sequences=TOY_BATCH_SEQUENCES,
                               progress=False)
        out = Path(samples_root) / ckpt.method / f"seed{ckpt.seed}"
        generate_samples(backend, problems, sampling, out, unit_size=unit_size, progress=progress,
                         extra={"suite": "toy", "method": ckpt.method, "seed": ckpt.seed,
                                "checkpoint": _rel(ckpt.path), "toy_size": toy_size})
        folders.append(out)
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


def evaluate_real(
    model: str,
    *,
    backend: str = "hf",
    data_dir: str | Path | None = None,
    benchmarks: Sequence[str] = REAL_BENCHMARKS,
    limit: int | None = None,
    n: int = PAPER_N,
    max_new_tokens: int = SamplingConfig.max_new_tokens,
    repetition_penalty: float | None = None,
    seed: int = 0,
    label: str | None = None,
    gguf_file: str | None = None,
    unit_size: UnitSize | None = None,
    samples_root: str | Path = REAL_SAMPLES,
    backend_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Sample one model on the real benchmarks (the first ``limit`` problems of each); returns the folder.

    The folder name carries n, the token budget and the limit, so differently sized runs never meet.
    vLLM receives all prompts at once (its scheduler batches best with everything in flight).
    """
    label = label or model_label(model, gguf_file)
    if repetition_penalty is None:
        repetition_penalty = PAPER_REPETITION_PENALTY.get(label, 1.0)
    problems = [p for b in benchmarks for p in load_benchmark(b, data_dir, limit=limit)]
    sampling = SamplingConfig(n=n, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed)
    kwargs: dict[str, Any] = {"progress": False, **(backend_kwargs or {})}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if unit_size is None:
        unit_size = "all" if backend == "vllm" else DEFAULT_UNIT_SIZE
    out = Path(samples_root) / label / f"n{n}_tok{max_new_tokens}_limit{limit or 'all'}_seed{seed}"
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
        raise FileNotFoundError(f"no sample folder at {root}")
    dirs = sorted({p.parent for p in root.rglob("part-*.parquet") if (p.parent / MANIFEST).is_file()})
    if not dirs:
        raise FileNotFoundError(f"no sample folders (part-*.parquet beside {MANIFEST}) under {root}")
    return dirs


def load_samples(dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Samples of several runs with ``method`` and ``seed`` columns, in a canonical order.

    Runs are ordered base first, then by method and seed, whatever order ``dirs`` came in, so a
    table does not depend on how its folders were found. Benchmarks take their display names.
    """
    runs, frames = [], []
    for folder in dirs:
        config = read_manifest(folder).get("config", {})
        extra = config.get("extra", {})
        method = str(extra.get("method") or model_label(str(config.get("model", Path(folder).name))))
        seed = int(extra.get("seed", config.get("sampling", {}).get("seed", 0)))
        runs.append({"method": method, "seed": seed, "suite": extra.get("suite"), "model": config.get("model"),
                     "n": config.get("sampling", {}).get("n"), "samples": _rel(Path(folder)),
                     "sampling": config.get("sampling")})
        frames.append(read_records(folder).assign(method=method, seed=seed))
    order = sorted(range(len(runs)), key=lambda i: (runs[i]["method"] != BASE_METHOD, runs[i]["method"],
                                                    runs[i]["seed"]))
    runs = [runs[i] for i in order]
    seen = [(r["method"], r["seed"]) for r in runs]
    if len(set(seen)) != len(seen):
        dup = next(r for r in runs if seen.count((r["method"], r["seed"])) > 1)
        raise ValueError(f"two sample folders are both {dup['method']}/seed{dup['seed']}; pass one of them")
    samples = pd.concat([frames[i] for i in order], ignore_index=True)
    unknown = sorted(set(samples["benchmark"]) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"samples name unregistered benchmarks {unknown}")
    samples["benchmark"] = samples["benchmark"].map(lambda b: get_spec(b).display)
    return samples, runs


def _paper_reference(long: pd.DataFrame, k: int) -> pd.DataFrame:
    """The paper's Table 1 as extra rows of our long frame, labelled as the paper's (reported at n=32)."""
    paper = paper_long()
    rename = {avg_metric(PAPER_N): avg_metric(k), bootstrap_pass_metric(PAPER_N): bootstrap_pass_metric(k)}
    paper = paper[paper["metric"].isin(list(rename))]
    suffix = "" if k == PAPER_N else f", @{PAPER_N}"
    rows = pd.DataFrame({
        "method": "paper: " + paper["student"] + " " + paper["method"] + suffix,
        "benchmark": paper["benchmark"], "metric": paper["metric"].map(rename), "value": paper["value"],
    })
    return pd.concat([long, rows], ignore_index=True)


def _paper_student(runs: Sequence[dict[str, Any]], k: int) -> str | None:
    """The paper student this table's single run *is* (same model at n = 32), else None."""
    if k != PAPER_N or len(runs) != 1:
        return None
    students = set(paper_long()["setting"])
    return runs[0]["method"] if runs[0]["method"] in students else None


def build_tables(samples: pd.DataFrame, runs: Sequence[dict[str, Any]], out_dir: str | Path, *,
                 figure: bool = True) -> dict[str, Any]:
    """Write ``<suite>_avg@k``, ``<suite>_pass@k`` (the paper's bootstrap form) and
    ``<suite>_pass@k_unbiased`` as md/csv/tex, the Pass@k curves and a manifest; returns what was written.
    """
    suite = "toy" if all(r["suite"] == "toy" for r in runs) else "real"
    k = int(samples.groupby(["method", "seed", "benchmark", "problem_id"]).size().min())
    registry = [get_spec(b).display for b in BENCHMARKS]
    benchmarks = [b for b in registry if b in set(samples["benchmark"])]
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
            caption += f" Rows 'paper: ...' are the paper's reported numbers for its own models (n={PAPER_N}), for reference."
        written[stem] = {kind: _rel(p) for kind, p in write_tables(table, out, stem, ci=True, caption=caption).items()}
    if figure:
        curves = pass_at_k_curves(samples)
        written["figure"] = {kind: _rel(p) for kind, p in
                             plot_pass_at_k_curves(curves, out / f"{suite}_pass_at_k").items()}
    truncated = (samples.assign(truncated=samples["finish_reason"] == "length")
                 .groupby(["method", "seed"], sort=False)["truncated"].sum())
    for run in runs:
        run["truncated"] = int(truncated.loc[(run["method"], run["seed"])])
    write_manifest(out, {"suite": suite, "k": k, "benchmarks": benchmarks, "runs": list(runs)}, seed=None,
                   outputs=written)
    values = metric_table(long, avg_metric(k), benchmarks=benchmarks).values
    return {"suite": suite, "k": k, "written": written, "runs": list(runs), "avg_table": values}


def rebuild(sample_dirs: Sequence[str | Path], out_dir: str | Path, *, figure: bool = True) -> dict[str, Any]:
    """Tables from sample folders already on disk (the rebuild mode, and the last step of the others)."""
    samples, runs = load_samples(sample_dirs)
    return build_tables(samples, runs, out_dir, figure=figure)


# ------------------------------------------------------------------------------------------- CLI
def real_tables_dir(dirs: Sequence[Path], root: Path) -> Path:
    """``results/tables/real/<model>/<run>`` for one real run, ``.../real/<root name>`` for several."""
    if len(dirs) == 1:
        return TABLES_DIR / "real" / Path(dirs[0]).resolve().parent.name / Path(dirs[0]).resolve().name
    return TABLES_DIR / "real" / Path(root).resolve().name


def _unit_size(text: str) -> UnitSize:
    return "all" if text == "all" else int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m eval.reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("mode (default: every toy checkpoint)")
    mode.add_argument("--from-samples", type=Path, help="rebuild tables from the sample folders under DIR")
    mode.add_argument("--model", help="evaluate this model on the real benchmarks (hub id, folder, or 'smollm2')")
    p.add_argument("--backend", default="hf", choices=("hf", "vllm"))
    p.add_argument("--data-dir", type=Path, help="folder of the real benchmarks' JSONL files")
    p.add_argument("--limit", type=int, help="first LIMIT problems of each real benchmark")
    p.add_argument("--n", type=int, default=PAPER_N, help="samples per problem (k of Avg@k / Pass@k)")
    p.add_argument("--max-new-tokens", type=int, help=f"default: {SamplingConfig.max_new_tokens} real, "
                                                      f"{TOY_MAX_NEW_TOKENS} toy")
    p.add_argument("--repetition-penalty", type=float, help="default: the paper's for the model (1.0 unless Qwen3)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of a real run")
    p.add_argument("--gguf-file", help="GGUF file inside --model's folder")
    p.add_argument("--label", help="row label and folder name of a real run (default: from the model name)")
    p.add_argument("--unit-size", type=_unit_size, help="problems per resumable unit, or 'all'")
    p.add_argument("--toy-size", type=int, default=TOY_SIZE, help="problems per toy tier")
    p.add_argument("--runs-root", type=Path, default=TOY_RUNS, help="trained toy runs to discover")
    p.add_argument("--base", type=Path, help="base toy student (default: the committed one)")
    p.add_argument("--samples-dir", type=Path, help=f"where samples go (default {_rel(TOY_SAMPLES)} toy, "
                                                    f"{_rel(REAL_SAMPLES)} real)")
    p.add_argument("--tables-dir", type=Path, help=f"where tables go (default {_rel(TABLES_DIR)}; "
                                                   "real runs: a subfolder real/<run>)")
    p.add_argument("--no-figure", action="store_true", help="skip the Pass@k curve figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    args = p.parse_args(argv)
    if args.from_samples and args.model:
        p.error("--from-samples and --model are different modes; give one")
    if args.limit is not None and not args.model:
        p.error("--limit applies to real benchmarks (with --model)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = not args.quiet
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    start = time.perf_counter()
    if args.from_samples:
        dirs = find_sample_dirs(args.from_samples)
        toy = all(read_manifest(d).get("config", {}).get("extra", {}).get("suite") == "toy" for d in dirs)
        tables_dir = args.tables_dir or (TABLES_DIR if toy else real_tables_dir(dirs, args.from_samples))
    elif args.model:
        folder = evaluate_real(
            args.model, backend=args.backend, data_dir=args.data_dir, limit=args.limit, n=args.n,
            max_new_tokens=args.max_new_tokens or SamplingConfig.max_new_tokens,
            repetition_penalty=args.repetition_penalty, seed=args.seed, label=args.label, gguf_file=args.gguf_file,
            unit_size=args.unit_size, samples_root=args.samples_dir or REAL_SAMPLES, progress=progress)
        dirs = [folder]
        tables_dir = args.tables_dir or real_tables_dir(dirs, folder)
    else:
        checkpoints = discover_checkpoints(args.runs_root, args.base)
        dirs = evaluate_toy(checkpoints, args.samples_dir or TOY_SAMPLES, toy_size=args.toy_size, n=args.n,
                            max_new_tokens=args.max_new_tokens or TOY_MAX_NEW_TOKENS,
                            unit_size=args.unit_size or TOY_UNIT_SIZE, progress=progress)
        tables_dir = args.tables_dir or TABLES_DIR
    report = rebuild(dirs, tables_dir, figure=not args.no_figure)
    elapsed = time.perf_counter() - start
    print(f"{report['suite']} Avg@{report['k']} (%), {len(report['runs'])} runs, {elapsed:.0f} s:")
    print(report["avg_table"].round(1).to_string())
    for run in report["runs"]:
        if run["truncated"]:
            print(f"  {run['method']}/seed{run['seed']}: {run['truncated']} samples truncated (counted wrong)")
    print(f"tables in {_rel(Path(tables_dir))}: " + ", ".join(k for k in report["written"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
