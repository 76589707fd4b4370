"""`make demo`: the workbench's main job on the toy world, end to end on a laptop CPU.

1. The toy teacher and student each sample n=8 answers per problem on the six toy tiers; the shared grader
   scores them; a per-tier Avg@8 / Pass@8 table is printed and written under results/toy/demo/.
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
import gc
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import cli as analysis_cli
from eval.generate import generate_samples
from workbench.models import IN_PROCESS_ENGINE, TOY_ENGINE_KWARGS
from eval.tables import (
    avg_metric, format_cells, metric_table, pass_metric, summarise_samples, to_markdown, write_tables,
)
from workbench.data import TOY_BENCHMARKS, load_benchmark
from workbench.errors import UserArgumentParser, UserError, main_guard
from workbench.layout import DEMO_SAMPLES, DEMO_TABLES, REPO_ROOT, TOY_MAX_NEW_TOKENS
from workbench.models import SamplingConfig, load_backend
from workbench.runs import write_manifest
from workbench.toy import STUDENT_DIR, TEACHER_DIR


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


def _sampler(engine: str, folder: Path):
    if engine == "vllm":
        for key, value in IN_PROCESS_ENGINE.items():
            os.environ.setdefault(key, value)
        return load_backend("vllm", str(folder), progress=False, llm_kwargs=TOY_ENGINE_KWARGS)
    return load_backend("hf", str(folder), progress=False)


def tier_accuracy(toy_size: int, n: int, seed: int, progress: bool, engine: str = "hf",
                  samples_dir: Path = DEMO_SAMPLES["hf"]) -> pd.DataFrame:
    """Sample and grade teacher and student on every toy tier; one row per graded sample."""
    try:
        problems = [p for tier in TOY_BENCHMARKS for p in load_benchmark(tier, toy_size=toy_size)]
    except ValueError as exc:
        raise UserError(f"--toy-size {toy_size}: {exc}") from None
    sampling = SamplingConfig(n=n, temperature=0.6, top_p=1.0, top_k=0, max_new_tokens=TOY_MAX_NEW_TOKENS,
                              seed=seed)
    run = f"size{toy_size}_n{n}_seed{seed}" + ("" if engine == "hf" else f"_{engine}")
    frames = []
    for role, folder in (("teacher", TEACHER_DIR), ("student", STUDENT_DIR)):
        backend = _sampler(engine, folder)
        frame = generate_samples(backend, problems, sampling, samples_dir / run / role, progress=progress,
                                 extra={"role": role, "suite": "toy-demo", "backend": engine})
        frames.append(frame.assign(method=role))
        del backend
        gc.collect()  # one engine at a time: vLLM preallocates its KV cache
    return pd.concat(frames, ignore_index=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python scripts/demo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy-size", type=int, default=20, help="problems per toy tier")
    parser.add_argument("--n", type=int, default=8, help="samples per problem")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="sampling engine (default: transformers, the faster one on the toy models)")
    parser.add_argument("--out-dir", type=Path, help="where the accuracy tables go (default: results/toy/demo, "
                                                       "results/toy/demo-vllm on vLLM)")
    parser.add_argument("--samples-dir", type=Path, help="where the raw samples go (default: results/runs/demo, "
                                                          "results/runs/demo-vllm on vLLM)")
    parser.add_argument("--skip-analysis", action="store_true", help="only the accuracy table")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for flag, value in (("--toy-size", args.toy_size), ("--n", args.n)):
        if value < 1:
            raise UserError(f"{flag} must be a whole number >= 1, got {value}")
    if args.seed < 0:
        raise UserError(f"--seed must be a whole number >= 0, got {args.seed}")
    engine = pick_engine(args.backend)
    args.out_dir = args.out_dir or DEMO_TABLES[engine]
    args.samples_dir = args.samples_dir or DEMO_SAMPLES[engine]
    if args.quiet:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(engine_line(engine), flush=True)
    started = time.perf_counter()

    samples = tier_accuracy(args.toy_size, args.n, args.seed, progress=not args.quiet, engine=engine,
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
              "temperature 0.6; ± = half-width of the 95% bootstrap interval over problems:")
        print(to_markdown(format_cells(table, ci=True)))
    truncated = int((samples["finish_reason"] == "length").sum())
    accuracy_s = time.perf_counter() - started
    config = {k: v for k, v in vars(args).items() if k not in ("out_dir", "samples_dir", "quiet")} | {"backend": engine}
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
