"""Command line for the perplexity analyses and the figures.

    python -m analysis.cli toy                      # both experiments in the toy world (~minutes on 2 cores)
    python -m analysis.cli run --student M --teacher M --benchmark math500 --limit 20 ...
    python -m analysis.cli figures                  # redraw every figure from results/ into results/figures/

``toy`` and ``run`` write resumable stage shards under ``--run-dir`` (rerun the same command to
continue a killed run) and small tables under ``--out``; both print the recovery table beside the
paper's and the boundary table. Default folders are under the repository's ``results/`` wherever the
command runs from (as eval.reproduce's are), so a notebook and a shell write to the same place.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from workbench.errors import UserError, check_model_name, did_you_mean, main_guard
from workbench.runs import REPO_ROOT, run_folder, write_manifest

if TYPE_CHECKING:  # the rest is imported when a command runs, so --help and argument errors are instant
    import pandas as pd

    from workbench.models import Backend
    from workbench.records import Problem

log = logging.getLogger("analysis.cli")

RESULTS = REPO_ROOT / "results"
TOY_TIERS = "toy-3,toy-4,toy-5,toy-6"
TOY_MAX_NEW_TOKENS = 64  # the longest toy reference response (toy-6) is 46 tokens with EOS
BACKENDS = ("hf", "vllm", "server")


class _Parser(argparse.ArgumentParser):
    """An argument mistake is one line naming the option, like every other mistake of this command."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 (greedy) or more, got {text}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis.cli", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def experiment_options(p: argparse.ArgumentParser, *, toy: bool) -> None:
        p.add_argument("--benchmark", default=TOY_TIERS if toy else None, required=not toy,
                       help="benchmark name(s), comma-separated, or 'toy' / 'real'")
        p.add_argument("--limit", type=_count, default=None, help="problems per benchmark (default: all)")
        p.add_argument("--toy-size", type=_count, default=30, help="problems per toy tier")
        p.add_argument("--rollouts", type=_count, default=4, help="student rollouts per problem")
        p.add_argument("--temperature", type=_temperature, default=0.6,
                       help="rollouts, continuations and fresh samples")
        p.add_argument("--max-new-tokens", type=_count, default=TOY_MAX_NEW_TOKENS if toy else 4096)
        p.add_argument("--ratios", type=_ratio, nargs="+", default=[0.2, 0.4, 0.6, 0.8],
                       help="where the teacher takes over, as fractions of a wrong rollout")
        p.add_argument("--continuations", type=_count, default=4, help="teacher continuations per prefix")
        p.add_argument("--separator", default=";" if toy else "\n",
                       help="step separator a cut lands on (newline for real models, ';' in the toy world)")
        p.add_argument("--buckets", type=_count, default=4, help="perplexity quantile buckets")
        p.add_argument("--scratch-samples", type=_count, default=4, help="teacher from-scratch samples per problem")
        p.add_argument("--boundary-samples", type=_count, default=8 if toy else 16,
                       help="fresh student samples per problem")
        p.add_argument("--experiments", default="corrective,boundary",
                       help="comma list of 'corrective', 'boundary'")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--n-boot", type=_count, default=2000, help="bootstrap resamples for intervals")
        p.add_argument("--grade-workers", type=_count, default=None, help="grader processes (default: cores, <= 8)")
        p.add_argument("--run-dir", type=Path, default=RESULTS / "runs" / "toy-analysis" if toy else None,
                       required=not toy, help="stage shards (large; resumable)")
        p.add_argument("--out", type=Path, default=RESULTS / "toy" / "analysis" if toy else None,
                       required=not toy, help="small tables and statistics")
        p.add_argument("--device", default=None, help="torch device for the hf backend (default: cuda if present)")
        p.add_argument("--batch-sequences", type=_count, default=1024 if toy else 32,
                       help="sequences per generate call and shard, and decoded together by the hf backend")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    toy = sub.add_parser("toy", help="both experiments with the toy teacher and student")
    experiment_options(toy, toy=True)
    toy.add_argument("--student", type=Path, default=None,
                     help="another toy student folder, e.g. a trained results/toy/runs/<method>/seed<k>/model")
    toy.add_argument("--teacher", type=Path, default=None, help="another toy teacher folder")
    toy.add_argument("--no-figures", action="store_true", help="skip drawing the figures afterwards")
    toy.add_argument("--figures-dir", type=Path, default=RESULTS / "figures" / "toy-analysis")

    run = sub.add_parser("run", help="both experiments with real models")
    experiment_options(run, toy=False)
    run.add_argument("--student", required=True, help="hub id or local folder of the student")
    run.add_argument("--teacher", default=None, help="hub id or folder of the teacher (default: the student)")
    run.add_argument("--student-gguf", default=None, help="GGUF file inside --student (hf backend)")
    run.add_argument("--teacher-gguf", default=None, help="GGUF file inside --teacher (hf backend)")
    run.add_argument("--backend", default="hf", choices=BACKENDS)
    run.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (server backend)")
    run.add_argument("--data-dir", type=Path, default=None, help="folder of benchmark JSONL files")

    figures = sub.add_parser("figures", help="redraw every figure from results/")
    figures.add_argument("--results", type=Path, default=RESULTS, help="default: the repository's results/")
    figures.add_argument("--out", type=Path, default=None, help="default: <results>/figures")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What the options alone can show to be wrong, raised before data or models load."""
    if args.command == "figures":
        if not args.results.is_dir():
            raise UserError(f"--results {args.results} is not a folder")
        return
    experiments = {e.strip() for e in args.experiments.split(",") if e.strip()}
    if not experiments or experiments - {"corrective", "boundary"}:
        raise UserError(f"--experiments takes 'corrective' and/or 'boundary', got {args.experiments!r}")
    if args.command == "toy":
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        for option, path in (("--student", args.student or STUDENT_DIR), ("--teacher", args.teacher or TEACHER_DIR)):
            if not (path / "config.json").is_file():
                raise UserError(f"{option}: no toy model at {path} (no config.json); build the toy models with "
                                "make toy-models or pass a trained toy model folder")
        return
    if args.backend != "hf" and (args.student_gguf or args.teacher_gguf):
        raise UserError(f"--student-gguf / --teacher-gguf are for the hf backend; the {args.backend} backend "
                        "takes a model id or path")
    if args.backend == "server" and not args.base_url:
        raise UserError("--backend server needs --base-url, e.g. http://teacher-node:8000/v1")
    for option, name in (("--student", args.student), ("--teacher", args.teacher)):
        if name and args.backend != "server":
            check_model_name(option, name)
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder")


def _backend(kind: str, model: str, gguf: str | None, args: argparse.Namespace) -> Backend:
    from workbench.models import load_backend

    kwargs: dict[str, Any] = {"progress": not args.no_progress}
    if kind == "hf":
        kwargs.update(device=args.device, gguf_file=gguf, max_batch_sequences=args.batch_sequences)
    if kind == "server":
        kwargs["base_url"] = args.base_url
    return load_backend(kind, model, **kwargs)


def _models(args: argparse.Namespace) -> tuple[Backend, Backend, dict[str, Any]]:
    from eval.generate import weights_sha256
    from workbench.models import check_same_vocab

    if args.command == "toy":
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        student_dir, teacher_dir = args.student or STUDENT_DIR, args.teacher or TEACHER_DIR
        spec = {"backend": "hf", "student": str(student_dir), "teacher": str(teacher_dir),
                "student_sha256": weights_sha256(str(student_dir)), "teacher_sha256": weights_sha256(str(teacher_dir))}
        return _backend("hf", str(student_dir), None, args), _backend("hf", str(teacher_dir), None, args), spec
    teacher_id = args.teacher or args.student
    teacher_gguf = args.teacher_gguf if args.teacher else (args.teacher_gguf or args.student_gguf)
    spec = {"backend": args.backend, "student": args.student, "student_gguf": args.student_gguf,
            "teacher": teacher_id, "teacher_gguf": teacher_gguf}
    started = time.perf_counter()
    student = _backend(args.backend, args.student, args.student_gguf, args)
    if (teacher_id, teacher_gguf) == (args.student, args.student_gguf):
        teacher = student  # one model in both roles: load it once
    else:
        teacher = _backend(args.backend, teacher_id, teacher_gguf, args)
        check_same_vocab(student.tokenizer, teacher.tokenizer)
    log.info("models loaded in %.0fs", time.perf_counter() - started)
    return student, teacher, spec


def _problems(args: argparse.Namespace) -> list[Problem]:
    from workbench.data import BENCHMARKS, load_benchmark, resolve_suite

    data_dir = getattr(args, "data_dir", None)
    try:
        names = resolve_suite(args.benchmark)
    except ValueError:
        wrong = next(n.strip() for n in args.benchmark.split(",") if n.strip() and n.strip() not in BENCHMARKS)
        raise UserError(f"--benchmark: unknown benchmark {wrong!r} (known: toy, real, {', '.join(BENCHMARKS)})"
                        f"{did_you_mean(wrong, BENCHMARKS)}") from None
    problems: list[Problem] = []
    for name in names:
        problems += load_benchmark(name, data_dir, limit=args.limit, toy_size=args.toy_size)
    if not problems:
        raise UserError("no problems selected; check --benchmark, --limit and --toy-size")
    return problems


def _weights_tables(rollouts: pd.DataFrame, student_scores: pd.DataFrame, teacher_log_ppl: pd.DataFrame,
                    out: Path) -> None:
    """Per-rollout log-PPLs for the weight figures, and the tau-sweep summary of SCOPE's weights."""
    from analysis.weights import DEFAULT_TAUS, prepare, summarise, tau_sweep
    from workbench.records import SAMPLE_KEY

    frame = rollouts[[*SAMPLE_KEY, "correct"]].merge(
        student_scores[[*SAMPLE_KEY, "log_ppl"]].rename(columns={"log_ppl": "student_log_ppl"}), on=list(SAMPLE_KEY))
    frame = frame.merge(teacher_log_ppl, on=list(SAMPLE_KEY), how="left")
    frame.to_csv(out / "weights_rollouts.csv", index=False, float_format="%.6g")
    summary = summarise(tau_sweep(prepare(frame), DEFAULT_TAUS))
    summary.to_csv(out / "weights_summary.csv", index=False)
    print("\nSCOPE weights on these rollouts (paper's Eqs. 4-5), by tau and path:")
    print(summary[["tau", "path", "n_rollouts", "n_subsets", "ess_frac_mean", "max_weight_mean",
                   "weight_p10", "weight_median", "weight_p90"]].to_string(index=False, float_format="%.3f"))


def _headline(title: str, stats: dict[str, Any], keys: Sequence[tuple[str, ...]]) -> None:
    print(f"\n{title}")
    for path in keys:
        node: Any = stats
        for k in path:
            if not isinstance(node, dict) or "undefined" in node:
                break
            node = node.get(k, "absent")
        print(f"  {'/'.join(path)}: {json.dumps(node, default=float)}")


def run_experiments(args: argparse.Namespace) -> int:
    from analysis.boundary import BoundaryConfig, boundary_markdown, run_boundary, write_boundary
    from analysis.corrective import CorrectiveConfig, recovery_markdown, run_corrective, write_recovery
    from analysis.rollouts import ANALYSIS_KIND, sample_rollouts
    from workbench.models import SamplingConfig
    from workbench.records import SAMPLE_KEY

    experiments = {e.strip() for e in args.experiments.split(",") if e.strip()}
    problems = _problems(args)
    started = time.perf_counter()
    student, teacher, models = _models(args)
    load_s = time.perf_counter() - started
    progress = not args.no_progress
    rollout_sampling = SamplingConfig(n=args.rollouts, temperature=args.temperature, top_p=1.0, top_k=0,
                                      max_new_tokens=args.max_new_tokens, seed=args.seed)
    corrective = CorrectiveConfig(ratios=tuple(args.ratios), n_continuations=args.continuations,
                                  temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                  separator=args.separator, n_buckets=args.buckets,
                                  scratch_samples=args.scratch_samples, unit_sequences=args.batch_sequences,
                                  seed=args.seed, n_boot=args.n_boot)
    boundary = BoundaryConfig(n_samples=args.boundary_samples, temperature=args.temperature,
                              max_new_tokens=args.max_new_tokens, n_buckets=args.buckets,
                              unit_sequences=args.batch_sequences, seed=args.seed, n_boot=args.n_boot)
    config = {"models": models, "benchmarks": sorted({p.benchmark for p in problems}), "n_problems": len(problems),
              "limit": args.limit, "rollouts": asdict(rollout_sampling), "corrective": asdict(corrective),
              "boundary": asdict(boundary), "experiments": sorted(experiments)}
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {"load_models_s": load_s}
    with run_folder(args.run_dir, config, args.seed, kind=ANALYSIS_KIND):
        t0 = time.perf_counter()
        rollouts = sample_rollouts(student, problems, rollout_sampling, args.run_dir / "rollouts",
                                   unit_size=max(1, args.batch_sequences // args.rollouts),
                                   grade_workers=args.grade_workers, progress=progress)
        timings["rollouts_s"] = time.perf_counter() - t0
        print(f"{len(problems)} problems x {args.rollouts} student rollouts: "
              f"{int(rollouts['correct'].sum())} correct, {int((~rollouts['correct']).sum())} wrong")
        teacher_ppl = None
        n_wrong, n_correct = int((~rollouts["correct"]).sum()), int(rollouts["correct"].sum())
        for name, have, what in (("corrective", n_wrong, "wrong"), ("boundary", n_correct, "correct")):
            if name in experiments and have < args.buckets:
                print(f"{name} experiment skipped: {have} {what} rollouts, fewer than the {args.buckets} buckets")
                experiments.discard(name)
        if "corrective" in experiments:
            t0 = time.perf_counter()
            recovery = run_corrective(student, teacher, rollouts, problems, corrective, args.run_dir,
                                      grade_workers=args.grade_workers, progress=progress)
            timings["corrective_s"] = time.perf_counter() - t0
            write_recovery(recovery, out)
            teacher_ppl = recovery.per_rollout.drop_duplicates(list(SAMPLE_KEY))[[*SAMPLE_KEY, "teacher_log_ppl"]]
            print("\n" + recovery_markdown(recovery))
            print(recovery.buckets.to_string(index=False, float_format="%.3f"))
            _headline("Teacher PPL vs recovery:", recovery.statistics,
                      [("pooled", "spearman_mean_over_ratios"), ("pooled", "ratios_with_q1_above_qn"),
                       ("pooled", "logistic_ratio_controlled", "slope_ci"),
                       ("pooled", "logistic_ratio_and_teacher_solve_controlled", "slope_ci"),
                       ("teacher_solve_by_bucket",)])
        if "boundary" in experiments:
            t0 = time.perf_counter()
            edge, student_scores = run_boundary(student, rollouts, problems, boundary, args.run_dir,
                                                grade_workers=args.grade_workers, progress=progress)
            timings["boundary_s"] = time.perf_counter() - t0
            write_boundary(edge, out)
            print("\n" + boundary_markdown(edge))
            _headline("Student PPL vs capability boundary:", edge.statistics,
                      [("spearman_per_rollout",), ("spearman_per_problem",), ("logistic", "slope_ci"),
                       ("trend", "p_value"), ("monotonicity", "adjacent_in_direction")])
            if teacher_ppl is not None:
                _weights_tables(rollouts, student_scores, teacher_ppl, out)
    timings["total_s"] = time.perf_counter() - started
    write_manifest(out, config, args.seed, kind="perplexity-analysis-tables", run_dir=str(args.run_dir),
                   timings=timings)
    print("\ntimings (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in timings.items()))
    if args.command == "toy" and not args.no_figures:
        from analysis.figures import analysis_figures, write_figures_manifest

        figures = analysis_figures(out, args.figures_dir)
        write_figures_manifest(args.figures_dir, figures, [out])
        print(f"figures: {', '.join(f['name'] for f in figures)} in {args.figures_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check_args(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    if args.command == "figures":
        from analysis.figures import regenerate

        written = regenerate(args.results, args.out)
        print(f"{len(written)} figures written:")
        for path in written:
            print(f"  {path}")
        return 0
    return run_experiments(args)


if __name__ == "__main__":
    sys.exit(main_guard(main))
