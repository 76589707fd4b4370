"""Train every method on the toy world, three seeds each: ``python scripts/toy_suite.py``.

A finished run is skipped and an unfinished one redone, so an interrupted suite resumes; each finished
run's small logs are copied to the committed ``results/toy/training_logs/``. Details: docs/toy-world.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from train.config import parse_config
from train.methods import LOG_JSONL, MODEL_DIR, toy_recipe, train_toy_run
from train.snapshots import EXPORT_FILE, snapshot_store
from workbench.errors import main_guard
from workbench.layout import METHODS, TOY_RUNS, TOY_TIERS, TOY_TRAINING_LOGS
from workbench.runs import read_manifest, write_manifest

log = logging.getLogger("toy_suite")

SEEDS = (0, 1, 2)
LOG_FILE = "log_history.csv"
# What the weight figures read from a snapshot row; the texts and per-token log-prob lists stay behind.
SNAPSHOT_COLUMNS = ("step", "benchmark", "problem_id", "sample_idx", "group_id", "correct", "path", "weight",
                    "student_log_ppl", "teacher_log_ppl")
# Log columns that time the run: they differ between two runs of the same training and would make
# the committed copy change when nothing else did.
WALL_CLOCK_PREFIXES = ("timing/", "step_time", "train_runtime", "train_samples_per_second",
                       "train_steps_per_second")


def run_one(method: str, seed: int, root: Path, overrides: Sequence[str] = ()) -> dict[str, Any] | None:
    """Train one (method, seed) unless it already finished; returns its summary, None when skipped."""
    return train_toy_run(method, seed, root / method / f"seed{seed}", overrides)


def export_logs(run: Path, dest: Path) -> list[Path]:
    """Copy what the training figures read from a finished run into ``dest`` (small, committed), so a
    fresh clone, which has no run folders, can redraw them. Returns the files written."""
    source = read_manifest(run)
    if source.get("status") != "finished":
        raise ValueError(f"{run} has not finished (manifest status {source.get('status')!r}); nothing to export")
    dest.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in (run / LOG_JSONL).read_text().splitlines() if line.strip()]
    history = pd.DataFrame(rows)
    history = history.drop(columns=[c for c in history.columns if str(c).startswith(WALL_CLOCK_PREFIXES)])
    history.to_csv(dest / LOG_FILE, index=False, float_format="%.6g")
    written = [dest / LOG_FILE]
    snapshots = snapshot_store(run)
    if snapshots.shards():
        frame = snapshots.read()[list(SNAPSHOT_COLUMNS)].sort_values(["step", "sample_idx"], kind="stable")
        # No pandas metadata: the file's bytes then depend on the rows, not on the pandas version.
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, dest / EXPORT_FILE, compression="zstd")
        written.append(dest / EXPORT_FILE)
    elif (dest / EXPORT_FILE).exists():
        (dest / EXPORT_FILE).unlink()  # from an earlier run of this method that kept snapshots
    write_manifest(dest, source.get("config", {}), source.get("seed"), kind="training-logs", source=run,
                   method=source.get("method"),
                   trained={key: source.get(key) for key in ("git", "command", "started_at", "finished_at")})
    return written


def accuracy_check(models: dict[str, Path], n_per_tier: int, samples: int = 4, seed: int = 0) -> pd.DataFrame:
    """Accuracy per (model, tier) of ``samples`` samples on the first test problems of each tier."""
    from dataclasses import replace

    from workbench.data import TOY_PROTOCOL, load_benchmark
    from workbench.models.hf import HFBackend
    from workbench.sampling import accuracy, sample_and_grade

    problems = [p for tier in TOY_TIERS for p in load_benchmark(tier, toy_size=n_per_tier)]
    sampling = replace(TOY_PROTOCOL, n=samples, seed=seed)
    rows = []
    for name, path in models.items():
        frame = sample_and_grade(HFBackend(str(path), device="cpu", progress=False), problems, sampling)
        for tier, part in frame.groupby("benchmark", sort=False):
            rows.append({"model": name, "tier": tier, "accuracy": accuracy(part)})
    table = pd.DataFrame(rows).pivot(index="model", columns="tier", values="accuracy")
    table["mean"] = table.mean(axis=1)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other --field value flags override every recipe (a run that finished earlier is still skipped).")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--root", type=Path, default=TOY_RUNS, help="where the runs go")
    parser.add_argument("--logs-dir", type=Path, default=None,
                        help="where the small logs of finished runs are copied (default: "
                             f"<root>/../{TOY_TRAINING_LOGS.name})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; the toy models are too small to gain from more, and a second "
                             "thread on a busy machine makes each tiny op wait for it")
    parser.add_argument("--check-accuracy", type=int, default=0, metavar="N",
                        help="afterwards, sample each model on N test problems per tier (0: skip)")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("workbench.grading").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    timings = []
    for method in args.methods:
        for seed in args.seeds:
            t0 = time.perf_counter()
            summary = run_one(method, seed, args.root, overrides)
            timings.append({"method": method, "seed": seed, "skipped": summary is None,
                            "wall_s": round(time.perf_counter() - t0, 1)})
    total = time.perf_counter() - started
    print(pd.DataFrame(timings).to_string(index=False))
    print(f"total wall time {total:.0f} s")

    logs_dir = args.logs_dir or args.root.parent / TOY_TRAINING_LOGS.name
    exported = [path for method in args.methods for seed in args.seeds
                for path in export_logs(args.root / method / f"seed{seed}", logs_dir / method / f"seed{seed}")]
    print(f"logs of {len(args.methods) * len(args.seeds)} runs copied to {logs_dir} "
          f"({sum(p.stat().st_size for p in exported) / 1e3:.0f} kB)")

    if args.check_accuracy:
        base = parse_config(["--config", str(toy_recipe(args.methods[0])), *overrides]).resolved_student()
        models = {"base": Path(base)}
        models.update({f"{m}/seed{s}": args.root / m / f"seed{s}" / MODEL_DIR
                       for m in args.methods for s in args.seeds})
        table = accuracy_check(models, args.check_accuracy)
        table.to_csv(args.root / "accuracy_check.csv")
        print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
