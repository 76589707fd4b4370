"""`make demo`: the workbench's main job on the toy world, end to end on a laptop CPU.

1. The toy teacher and student each sample n=8 answers per problem on the six toy tiers; the shared grader
   scores them; a per-tier Avg@8 / Pass@8 table is printed and written under results/toy/demo/.
2. The perplexity analyses (teacher PPL vs error recovery, student PPL vs capability boundary) run on the
   same pair and print their tables beside the paper's.

Raw samples go under results/runs/demo/ (git-ignored, resumable); the small tables under results/toy/ are
committed, each with a manifest.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import cli as analysis_cli
from eval.generate import generate_samples
from eval.tables import (
    avg_metric, format_cells, metric_table, pass_metric, summarise_samples, to_markdown, write_tables,
)
from workbench.data import TOY_BENCHMARKS, load_benchmark
from workbench.models import SamplingConfig, load_backend
from workbench.runs import REPO_ROOT, write_manifest
from workbench.toy import STUDENT_DIR, TEACHER_DIR

log = logging.getLogger("analysis.demo")

OUT = REPO_ROOT / "results" / "toy" / "demo"
SAMPLES = REPO_ROOT / "results" / "runs" / "demo"
MAX_NEW_TOKENS = 64  # the longest toy reference response (tier 6) is 46 tokens with EOS


def tier_accuracy(toy_size: int, n: int, seed: int, progress: bool) -> pd.DataFrame:
    """Sample and grade teacher and student on every toy tier; one row per graded sample."""
    problems = [p for tier in TOY_BENCHMARKS for p in load_benchmark(tier, toy_size=toy_size)]
    sampling = SamplingConfig(n=n, temperature=0.6, top_p=1.0, top_k=0, max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    frames = []
    for role, folder in (("teacher", TEACHER_DIR), ("student", STUDENT_DIR)):
        backend = load_backend("hf", str(folder), progress=False)
        out = SAMPLES / f"size{toy_size}_n{n}_seed{seed}" / role
        frame = generate_samples(backend, problems, sampling, out, progress=progress,
                                 extra={"role": role, "suite": "toy-demo"})
        frames.append(frame.assign(method=role))
    return pd.concat(frames, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy-size", type=int, default=20, help="problems per toy tier")
    parser.add_argument("--n", type=int, default=8, help="samples per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-analysis", action="store_true", help="only the accuracy table")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()

    samples = tier_accuracy(args.toy_size, args.n, args.seed, progress=not args.quiet)
    long = summarise_samples(samples, args.n)
    written = {}
    for metric in (avg_metric(args.n), pass_metric(args.n)):
        table = metric_table(long, metric)
        written.update({f"{metric}.{k}": str(v) for k, v in
                        write_tables(table, OUT, metric.replace("@", "_at_"), ci=True).items()})
        print(f"\nToy world, {metric} (%) per tier, {args.toy_size} problems x {args.n} samples, temperature 0.6:")
        print(to_markdown(format_cells(table, ci=True)))
    truncated = int((samples["finish_reason"] == "length").sum())
    accuracy_s = time.perf_counter() - started
    write_manifest(OUT, vars(args), args.seed, kind="toy-demo-accuracy", samples=str(SAMPLES),
                   truncated_samples=truncated, seconds=round(accuracy_s, 1), tables=written)
    print(f"\n{truncated} truncated samples (counted wrong); accuracy stage {accuracy_s:.0f} s")

    if not args.skip_analysis:
        analysis_cli.main(["toy", "--seed", str(args.seed)] + (["--no-progress"] if args.quiet else []))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; tables under {OUT.relative_to(REPO_ROOT)} "
          "and results/toy/analysis")
    return 0


if __name__ == "__main__":
    sys.exit(main())
