"""`make demo`: the workbench's main job on the toy world, end to end on a laptop CPU.

1. The toy teacher and student each sample n=8 answers per problem on the six toy tiers with the tiers'
   registered protocol, through the same evaluation functions as ``make reproduce-tables``; the shared
   grader scores them; a per-tier Avg@8 / Pass@8 table is printed and written under results/toy/demo/.
2. The perplexity analyses (teacher PPL vs error recovery, student PPL vs capability boundary) run on the
   same pair and print their tables beside the paper's.

Sampling runs on transformers unless vLLM is asked for (``--backend vllm``, ``make demo BACKEND=vllm``):
on the toy models transformers is the faster engine for this job, start-up included (`make bench`'s
bench_engines measures both on the same problems), so vLLM would only make the demo slower. The demo
says which engine samples and why in one line; each engine keeps its own sample folders because their
random streams differ. Raw samples go under results/runs/demo/ (git-ignored, resumable); the small tables
under results/toy/ are committed, each with a manifest.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from analysis import cli as analysis_cli
from eval.folders import Checkpoint, toy_generation, toy_settings
from eval.running import evaluate_toy, load_problems
from eval.tables import (
    avg_metric, format_cells, metric_table, pass_metric, summarise_samples, to_markdown, write_tables,
)
from workbench.data import TOY_BENCHMARKS
from workbench.errors import UserArgumentParser, UserError, main_guard
from workbench.layout import DEMO_SAMPLES, DEMO_TABLES, REPO_ROOT
from workbench.models import SamplingConfig
from workbench.options import add_options, build
from workbench.records import read_records
from workbench.runs import write_manifest
from workbench.toy import STUDENT_DIR, TEACHER_DIR

DEMO_N = 8  # samples per problem: a quarter of the protocol's 32, so the demo runs in about a minute
PROTOCOL_FIELDS = tuple(f.name for f in fields(SamplingConfig) if f.name not in ("n", "seed"))
"""The demo samples with the toy tiers' registered protocol; it chooses only n and the seed."""


def pick_engine(requested: str = "hf") -> str:
    """The engine asked for; vLLM only when asked, and only where it is importable."""
    if requested == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError("--backend vllm needs vLLM, which this Python lacks: run `make setup-vllm` "
                        "(make demo BACKEND=vllm then uses .venv-vllm)")
    return requested


def engine_line(engine: str) -> str:
    """The one line saying which engine samples and why."""
    if engine == "vllm":
        import vllm

        return (f"sampling engine: vLLM {vllm.__version__} (asked for; on the toy models transformers "
                "samples faster, start-up included: see make bench)")
    return ("sampling engine: transformers (HF), the faster one on the toy models, start-up included "
            "(make bench compares them); make demo BACKEND=vllm samples with vLLM")


def tier_accuracy(toy_size: int, sampling: SamplingConfig, progress: bool, engine: str = "hf",
                  samples_dir: Path = DEMO_SAMPLES["hf"]) -> pd.DataFrame:
    """Sample and grade teacher and student on every toy tier with the tiers' registered protocol, as
    ``make reproduce-tables`` samples its checkpoints (:func:`eval.running.evaluate_toy`, into the
    folder :func:`eval.folders.toy_settings` names); ``sampling`` is that protocol with the demo's
    ``n`` and ``seed``. One row per graded sample."""
    problems = load_problems(TOY_BENCHMARKS, toy_size=toy_size)
    settings = toy_settings(sampling.n, sampling.max_new_tokens, toy_size, engine=engine, seed=sampling.seed)
    checkpoints = [Checkpoint("teacher", 0, TEACHER_DIR), Checkpoint("student", 0, STUDENT_DIR)]
    folders = evaluate_toy(checkpoints, samples_dir / (settings or "default"), toy_size=toy_size, n=sampling.n,
                           max_new_tokens=sampling.max_new_tokens, engine=engine, problems=problems,
                           progress=progress, seed=sampling.seed)
    return pd.concat([read_records(f).assign(method=c.method) for c, f in zip(checkpoints, folders)],
                     ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python scripts/demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy-size", type=int, default=20, help="problems per toy tier")
    add_options(parser, [SamplingConfig], defaults={"n": DEMO_N}, exclude=PROTOCOL_FIELDS)
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="sampling engine (default: transformers, the faster one on the toy models)")
    parser.add_argument("--out-dir", type=Path, help="where the accuracy tables go (default: results/toy/demo, "
                                                       "results/toy/demo-vllm on vLLM)")
    parser.add_argument("--samples-dir", type=Path, help="where the raw samples go (default: results/runs/demo, "
                                                          "results/runs/demo-vllm on vLLM)")
    parser.add_argument("--skip-analysis", action="store_true", help="only the accuracy table")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.toy_size < 1:
        raise UserError(f"--toy-size must be a whole number >= 1, got {args.toy_size}")
    sampling = build(SamplingConfig, args, base=toy_generation())
    engine = pick_engine(args.backend)
    args.out_dir = args.out_dir or DEMO_TABLES[engine]
    args.samples_dir = args.samples_dir or DEMO_SAMPLES[engine]
    if args.quiet:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(engine_line(engine), flush=True)
    started = time.perf_counter()

    samples = tier_accuracy(args.toy_size, sampling, progress=not args.quiet, engine=engine,
                            samples_dir=args.samples_dir)
    long = summarise_samples(samples, args.n)
    written = {}
    for metric in (avg_metric(args.n), pass_metric(args.n)):
        table = metric_table(long, metric)
        written.update({f"{metric}.{k}": str(v) for k, v in
                        write_tables(table, args.out_dir, metric.replace("@", "_at_"), ci=True).items()})
        shown = metric.replace("avg", "Avg").replace("pass", "Pass")
        meaning = (f"mean accuracy of the {args.n} samples" if shown.startswith("Avg") else
                   f"share of problems solved by at least one of {args.n} samples")
        print(f"\nToy world, {shown} (%) per tier ({meaning}), {args.toy_size} problems x {args.n} samples, "
              f"the toy tiers' protocol (temperature {sampling.temperature:g}, top-p {sampling.top_p:g}, top-k "
              f"{sampling.top_k}); ± = half-width of the 95% bootstrap interval over problems:")
        print(to_markdown(format_cells(table, ci=True)))
    truncated = int((samples["finish_reason"] == "length").sum())
    accuracy_s = time.perf_counter() - started
    config = ({k: v for k, v in vars(args).items() if k not in ("out_dir", "samples_dir", "quiet")}
              | {"backend": engine, "sampling": asdict(sampling)})
    write_manifest(args.out_dir, config, args.seed, kind="toy-demo-accuracy", samples=str(args.samples_dir),
                   truncated_samples=truncated, seconds=round(accuracy_s, 1), tables=written)
    print(f"\n{truncated} truncated samples (counted wrong); accuracy stage {accuracy_s:.0f} s")

    if not args.skip_analysis:
        analysis_cli.main(["toy", "--seed", str(args.seed)] + (["--no-progress"] if args.quiet else []))
    out = args.out_dir.resolve()
    shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; tables under {shown}"
          + ("" if args.skip_analysis else " and results/toy/analysis"))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
