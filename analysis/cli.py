"""Command line for the perplexity analyses and the figures.

    python -m analysis.cli toy                      # both experiments in the toy world (~minutes on 2 cores)
    python -m analysis.cli run --student M --teacher M --benchmark math500 --limit 20 ...
    python -m analysis.cli figures                  # redraw every figure from results/ into results/figures/

``toy`` and ``run`` call :func:`analysis.pipeline.run`, which writes resumable stage shards under
``--run-dir`` (rerun the same command to continue a killed run), then write its small tables under
``--out`` and print the recovery table beside the paper's and the boundary table; a notebook calling
the pipeline with the same settings gets the same numbers. Default folders are under the
repository's ``results/`` wherever the command runs from (as eval.reproduce's are), so a notebook and
a shell write to the same place. The options of ``toy`` and ``run`` are the fields of the configs in
:mod:`analysis.configs` (derived by :mod:`workbench.options`), checked where those configs check them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.configs import BoundaryConfig, CorrectiveConfig, ModelConfig, ProblemSet, RolloutConfig
from workbench.errors import UserArgumentParser, UserError, check_model_name, main_guard
from workbench.layout import FIGURES, RESULTS, RUNS, TOY_MAX_NEW_TOKENS, TOY_RESULTS, TOY_TIERS
from workbench.options import add_options, build

if TYPE_CHECKING:  # the rest is imported when a command runs, so --help and argument errors are instant
    import pandas as pd

    from analysis.pipeline import PipelineResult

ANALYSIS_TIERS = ",".join(TOY_TIERS[2:])  # the tiers where the base student is wrong most often (Avg@32 19-53%)


EXPERIMENT_CONFIGS = (ProblemSet, RolloutConfig, CorrectiveConfig, BoundaryConfig, ModelConfig)
"""The configs whose fields are the options of ``toy`` and ``run`` (workbench.options derives them)."""
TOY_DEFAULTS = {"benchmark": ANALYSIS_TIERS, "max_new_tokens": TOY_MAX_NEW_TOKENS, "separator": ";",
                "boundary_samples": 8, "batch_sequences": 1024}
"""Where the toy command differs from the configs: the toy tiers, their token limit and step separator,
and batches of a thousand sequences, which the toy models decode fastest."""
RUN_DEFAULTS = {"batch_sequences": 32}
"""Real models decode in small batches, which fit in memory; one option sizes batches and units."""
NOT_FOR_TOY = ("backend", "base_url", "student_gguf", "teacher_gguf")  # toy models load from folders with transformers


def _parser() -> argparse.ArgumentParser:
    parser = UserArgumentParser(prog="python -m analysis.cli", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def experiment_options(p: argparse.ArgumentParser, *, toy: bool) -> None:
        add_options(p, EXPERIMENT_CONFIGS, defaults=TOY_DEFAULTS if toy else RUN_DEFAULTS,
                    exclude=NOT_FOR_TOY if toy else ())
        p.add_argument("--experiments", default="corrective,boundary",
                       help="comma list of 'corrective', 'boundary'")
        p.add_argument("--grade-workers", type=int, default=None, help="grader processes (default: cores, <= 8)")
        p.add_argument("--run-dir", type=Path, default=RUNS / "toy-analysis" if toy else None,
                       required=not toy, help="stage shards (large; resumable)")
        p.add_argument("--out", type=Path, default=TOY_RESULTS / "analysis" if toy else None,
                       required=not toy, help="small tables and statistics")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    toy = sub.add_parser("toy", help="both experiments with the toy teacher and student")
    experiment_options(toy, toy=True)
    toy.add_argument("--student", type=Path, default=None,
                     help="another toy student folder, e.g. a trained results/toy/runs/<method>/seed<k>/model")
    toy.add_argument("--teacher", type=Path, default=None, help="another toy teacher folder")
    toy.add_argument("--no-figures", action="store_true", help="skip drawing the figures afterwards")
    toy.add_argument("--figures-dir", type=Path, default=FIGURES / "toy-analysis")

    run = sub.add_parser("run", help="both experiments with real models")
    experiment_options(run, toy=False)
    run.add_argument("--student", required=True, help="hub id or local folder of the student")
    run.add_argument("--teacher", default=None, help="hub id or folder of the teacher (default: the student)")

    figures = sub.add_parser("figures", help="redraw every figure from results/")
    figures.add_argument("--results", type=Path, default=RESULTS, help="default: the repository's results/")
    figures.add_argument("--out", type=Path, default=None, help="default: <results>/figures")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """What the options alone can show to be wrong, raised before data or models load (the configs'
    own checks run when :func:`_settings` builds them)."""
    if args.command == "figures":
        if not args.results.is_dir():
            raise UserError(f"--results {args.results} is not a folder")
        return
    experiments = {e.strip() for e in args.experiments.split(",") if e.strip()}
    if not experiments or experiments - {"corrective", "boundary"}:
        raise UserError(f"--experiments takes 'corrective' and/or 'boundary', got {args.experiments!r}")
    if args.grade_workers is not None and args.grade_workers < 1:
        raise UserError(f"argument --grade-workers: must be at least 1, got {args.grade_workers}")
    if args.command == "toy":
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        for option, path in (("--student", args.student or STUDENT_DIR), ("--teacher", args.teacher or TEACHER_DIR)):
            if not (path / "config.json").is_file():
                raise UserError(f"{option}: no toy model at {path} (no config.json); build the toy models with "
                                "make toy-models or pass a trained toy model folder")
        return
    for option, name in (("--student", args.student), ("--teacher", args.teacher)):
        if name and args.backend != "server":
            check_model_name(option, name)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options as the pipeline's arguments, each config built from its own fields' options (one
    --temperature, --max-new-tokens, --seed, --buckets, --n-boot and --batch-sequences serve every
    stage); a value a config refuses is one line naming the option."""
    experiments = {e.strip() for e in args.experiments.split(",") if e.strip()}
    if args.command == "toy":
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        student, teacher = str(args.student or STUDENT_DIR), str(args.teacher or TEACHER_DIR)
    else:
        student, teacher = args.student, args.teacher
    return {
        "student": student, "teacher": teacher,
        "problems": build(ProblemSet, args),
        "corrective": build(CorrectiveConfig, args) if "corrective" in experiments else None,
        "boundary": build(BoundaryConfig, args) if "boundary" in experiments else None,
        "run_dir": args.run_dir, "models": build(ModelConfig, args), "grade_workers": args.grade_workers,
        "progress": not args.no_progress,
        "rollouts": build(RolloutConfig, args),
    }


def sig(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (``-0.271``, ``2.73e-05``); anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}g}"


def _get(stats: dict[str, Any], *path: str) -> Any:
    """``stats[path...]``, or None where a level is absent or the statistic was undefined."""
    node: Any = stats
    for key in path:
        if not isinstance(node, dict) or "undefined" in node or key not in node:
            return None
        node = node[key]
    return None if isinstance(node, dict) and "undefined" in node else node


def statistics_rows(kind: str, stats: dict[str, Any], n_buckets: int) -> list[tuple[str, str]]:
    """(what was measured, value) pairs of an experiment's headline statistics, 3 significant digits."""
    last = f"Q{n_buckets}"

    def rho(node: Any) -> str:
        if node is None:
            return "undefined"
        return f"{sig(node['rho'])}  (p = {sig(node['p_value'])}, n = {node['n']})"

    def ci(node: Any) -> str:
        return "undefined" if node is None else f"[{sig(node[0])}, {sig(node[1])}]"

    def steps(node: Any) -> str:
        if node is None:
            return "undefined"
        return f"{node['adjacent_in_direction']} of {node['n_adjacent']} steps fall from Q1 to {last}"

    if kind == "recovery":
        pooled = stats.get("pooled", {})
        above = pooled.get("ratios_with_q1_above_qn")
        return [
            ("Spearman ρ, teacher PPL vs recovery (mean over r)", rho(_get(pooled, "spearman_mean_over_ratios"))),
            (f"ratios r where Q1 recovers more than {last}",
             "undefined" if above is None else f"{above} of {pooled.get('n_ratios', '?')}"),
            ("logistic slope per unit log-PPL, r held fixed: 95% CI",
             ci(_get(pooled, "logistic_ratio_controlled", "slope_ci"))),
            ("  ... teacher's own solve rate also held fixed: 95% CI",
             ci(_get(pooled, "logistic_ratio_and_teacher_solve_controlled", "slope_ci"))),
            ("teacher's from-scratch solve rate by bucket", steps(_get(stats, "teacher_solve_by_bucket"))),
        ]
    p_trend = _get(stats, "trend", "p_value")
    return [
        ("Spearman ρ, student PPL vs solve rate (per rollout)", rho(_get(stats, "spearman_per_rollout"))),
        ("Spearman ρ, the same per problem", rho(_get(stats, "spearman_per_problem"))),
        ("logistic slope per unit log-PPL: 95% CI", ci(_get(stats, "logistic", "slope_ci"))),
        (f"Jonckheere-Terpstra p, solve rate falling Q1 to {last}", "undefined" if p_trend is None else sig(p_trend)),
        ("solve rate by bucket", steps(_get(stats, "monotonicity"))),
    ]


def aligned(rows: Sequence[tuple[str, str]], indent: str = "  ") -> str:
    """Two columns, the first padded to its widest cell."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{indent}{name.ljust(width)}  {value}" for name, value in rows)


def bucket_table(buckets: pd.DataFrame) -> str:
    """A bucket summary with readable headers, numbers to 3 significant digits, no row numbers."""
    names = {"n_rollouts": "rollouts", "n_problems": "problems", "teacher_ppl_mean": "teacher PPL",
             "teacher_nll_mean": "teacher NLL", "teacher_solve_pct": "teacher solves %",
             "teacher_solve_ci_lo": "95% CI low", "teacher_solve_ci_hi": "95% CI high"}
    shown = buckets.rename(columns=names).set_index("bucket")
    return shown.to_string(float_format=sig)


def _report(result: PipelineResult) -> None:
    """Print the tables and headline statistics of a finished run."""
    from analysis.boundary import boundary_markdown
    from analysis.corrective import recovery_markdown

    rollouts = result.rollouts
    print(f"{len(result.problems)} problems x {result.config['rollouts']['n']} student rollouts: "
          f"{int(rollouts['correct'].sum())} correct, {int((~rollouts['correct']).sum())} wrong")
    for name, reason in result.skipped.items():
        print(f"{name} experiment skipped: {reason}")
    if result.recovery is not None:
        n_buckets = int(result.recovery.buckets["bucket"].nunique())
        print("\n" + recovery_markdown(result.recovery))
        print(f"\nWrong rollouts by teacher-PPL bucket (Q1 lowest PPL, Q{n_buckets} highest); teacher solves % = "
              "how often the teacher solves the problem from scratch:")
        print(bucket_table(result.recovery.buckets))
        print(f"\nTeacher PPL vs recovery, over wrong rollouts (r: truncation ratio; Q1..Q{n_buckets}: "
              "teacher-PPL buckets; 95% CI: Wald interval of the slope):")
        print(aligned(statistics_rows("recovery", result.recovery.statistics, n_buckets)))
    if result.boundary is not None:
        n_buckets = int(result.boundary.buckets["bucket"].nunique())
        print("\n" + boundary_markdown(result.boundary))
        print(f"\nStudent PPL vs capability boundary, over correct rollouts (Q1..Q{n_buckets}: student-PPL "
              "buckets, Q1 lowest; 95% CI: Wald interval of the slope):")
        print(aligned(statistics_rows("boundary", result.boundary.statistics, n_buckets)))
    if result.weights_summary is not None:
        print("\nSCOPE weights on these rollouts (paper's Eqs. 4-5), by τ and path; ESS/n = effective sample size "
              "over group size (1: uniform weights); p10/p50/p90: weight percentiles:")
        names = {"tau": "τ", "path": "path", "n_rollouts": "rollouts", "n_subsets": "groups", "ess_frac_mean": "ESS/n",
                 "max_weight_mean": "max weight", "weight_p10": "p10", "weight_median": "p50", "weight_p90": "p90"}
        print(result.weights_summary[list(names)].rename(columns=names).to_string(index=False, float_format=sig))
    print("\ntimings (s): " + ", ".join(f"{k[:-2]} {v:.0f}" for k, v in result.timings.items()))


def run_experiments(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    from analysis import pipeline

    result = pipeline.run(**settings)
    pipeline.write_tables(result, args.out)
    _report(result)
    if args.command == "toy" and not args.no_figures:
        from analysis.figures import analysis_figures, write_figures_manifest

        figures = analysis_figures(args.out, args.figures_dir, result.config["weight_taus"])
        write_figures_manifest(args.figures_dir, figures, [args.out])
        print(f"figures: {', '.join(f['name'] for f in figures)} in {args.figures_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    check_args(args)
    settings = None if args.command == "figures" else _settings(args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    if args.command == "figures":
        from analysis.figures import regenerate

        from analysis.experiment_report import redraw_all

        written = regenerate(args.results, args.out)
        print(f"{len(written)} figures written:")
        for path in written:
            print(f"  {path}")
        experiments = args.results / "toy" / "experiments"
        redrawn = redraw_all(experiments)
        if redrawn:
            print(f"toy experiments redrawn from their counts in {experiments}: {', '.join(redrawn)}")
        return 0
    return run_experiments(args, settings)


if __name__ == "__main__":
    sys.exit(main_guard(main))
