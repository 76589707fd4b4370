"""How much SCOPE's weights spread in the toy world: ``python scripts/toy_spread.py`` (``make toy-spread``).

The toy student samples ``--rollouts`` responses per test problem of every tier; both toy models score
them; ESS/n per path and tau, per-tier accuracies and spreads and a case study go to
``results/toy/spread/`` (spread.md, tiers.csv, ess.csv, case_study.csv, per_rollout.parquet: every rollout
with its correctness and both log-PPLs, from which every ESS number recomputes; manifest). ``--world W``
measures a spread-dial world instead (its student, the committed teacher) into ``results/toy/dial/W/spread``.
The stages resume from ``results/runs/toy-spread[-W]`` when a run is killed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch

from analysis import spread
from analysis.configs import ANALYSIS_SAMPLING, ModelConfig, ProblemSet, RolloutConfig
from analysis.pipeline import load_models
from workbench.errors import UserArgumentParser, UserError, main_guard
from workbench.layout import RUNS, TOY_MAX_NEW_TOKENS, TOY_RESULTS
from workbench.runs import run_folder
from workbench.toy import DIAL_DIR, DIAL_WORLDS, STUDENT_DIR, TEACHER_DIR, dial_student_dir

PER_ROLLOUT = "per_rollout.parquet"


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python scripts/toy_spread.py", description=__doc__.splitlines()[0])
    parser.add_argument("--toy-size", type=int, default=50, help="test problems per tier")
    parser.add_argument("--rollouts", type=int, default=8, help="student rollouts per problem (the group size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--world", choices=DIAL_WORLDS, help="a spread-dial world (default: the committed one)")
    parser.add_argument("--out", help="output folder (default results/toy/spread, or results/toy/dial/W/spread)")
    parser.add_argument("--run-dir", help="resumable stages (default results/runs/toy-spread[-W])")
    args = parser.parse_args(argv)
    student_dir = dial_student_dir(args.world) if args.world else STUDENT_DIR
    if not (student_dir / "config.json").is_file():
        raise UserError(f"no student at {student_dir}; build it with make toy-dial-worlds")
    out_dir = args.out or str(DIAL_DIR / args.world / "spread" if args.world else TOY_RESULTS / "spread")
    run_dir = args.run_dir or str(RUNS / (f"toy-spread-{args.world}" if args.world else "toy-spread"))
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started = time.perf_counter()
    rollouts = RolloutConfig(replace(ANALYSIS_SAMPLING, n=args.rollouts, max_new_tokens=TOY_MAX_NEW_TOKENS,
                                     seed=args.seed), unit_sequences=1024)
    problems = ProblemSet("toy", toy_size=args.toy_size).load()
    student, teacher, _ = load_models(str(student_dir), str(TEACHER_DIR), ModelConfig("hf", batch_sequences=1024),
                                      progress=False)
    result = spread.measure(student, teacher, problems, rollouts, run_dir,
                            student_name=str(student_dir), teacher_name=str(TEACHER_DIR))
    measured = time.perf_counter() - started
    who = f"the dial world {args.world!r} (its student, the committed teacher)" if args.world else \
        "the committed toy student and teacher"
    note = (f"{len(problems)} test problems ({args.toy_size} per tier) x {args.rollouts} student rollouts at "
            f"temperature {rollouts.sampling.temperature}, seed {args.seed}; {who}.")
    config = {"toy_size": args.toy_size, "rollouts": asdict(rollouts), "student": str(student_dir),
              "teacher": str(TEACHER_DIR), "world": args.world}
    with run_folder(out_dir, config, args.seed, kind="toy-spread",
                    wall_seconds={"sampling_and_scoring": round(measured, 1)}) as out:
        (out / "spread.md").write_text(spread.markdown(result, note))
        result.tiers.round(4).to_csv(out / "tiers.csv", index=False)
        result.table.round(4).to_csv(out / "ess.csv", index=False)
        result.case.round(4).to_csv(out / "case_study.csv", index=False)
        spread.write_per_rollout(result.per_rollout, out / PER_ROLLOUT)
    print(spread.markdown(result, note))
    print(f"toy spread: {time.perf_counter() - started:.0f} s, outputs in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
