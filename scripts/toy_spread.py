"""How much SCOPE's weights spread in the toy world: ``python scripts/toy_spread.py`` (``make toy-spread``).

The toy student samples ``--rollouts`` responses per test problem of every tier; both toy models score
them; ESS/n per path and tau, per-tier accuracies and spreads and a case study go to
``results/toy/spread/`` (spread.md, tiers.csv, ess.csv, case_study.csv, manifest). The stages resume
from ``results/runs/toy-spread`` when a run is killed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

import torch

from analysis import spread
from analysis.pipeline import ModelConfig, ProblemSet, load_models
from analysis.rollouts import RolloutConfig
from workbench.errors import UserArgumentParser, main_guard
from workbench.layout import RUNS, TOY_MAX_NEW_TOKENS, TOY_RESULTS
from workbench.runs import run_folder
from workbench.toy import STUDENT_DIR, TEACHER_DIR


def main(argv: Sequence[str] | None = None) -> int:
    parser = UserArgumentParser(prog="python scripts/toy_spread.py", description=__doc__.splitlines()[0])
    parser.add_argument("--toy-size", type=int, default=50, help="test problems per tier")
    parser.add_argument("--rollouts", type=int, default=8, help="student rollouts per problem (the group size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(TOY_RESULTS / "spread"))
    parser.add_argument("--run-dir", default=str(RUNS / "toy-spread"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    started = time.perf_counter()
    rollouts = RolloutConfig(n=args.rollouts, temperature=0.6, max_new_tokens=TOY_MAX_NEW_TOKENS, seed=args.seed,
                             unit_sequences=1024)
    problems = ProblemSet("toy", toy_size=args.toy_size).load()
    student, teacher, _ = load_models(str(STUDENT_DIR), str(TEACHER_DIR), ModelConfig("hf", batch_sequences=1024),
                                      progress=False)
    result = spread.measure(student, teacher, problems, rollouts, args.run_dir,
                            student_name=str(STUDENT_DIR), teacher_name=str(TEACHER_DIR))
    note = (f"{len(problems)} test problems ({args.toy_size} per tier) x {args.rollouts} student rollouts at "
            f"temperature {rollouts.temperature}, seed {args.seed}; the committed toy student and teacher.")
    config = {"toy_size": args.toy_size, "rollouts": asdict(rollouts), "student": str(STUDENT_DIR),
              "teacher": str(TEACHER_DIR)}
    with run_folder(args.out, config, args.seed, kind="toy-spread") as out:
        (out / "spread.md").write_text(spread.markdown(result, note))
        result.tiers.round(4).to_csv(out / "tiers.csv", index=False)
        result.table.round(4).to_csv(out / "ess.csv", index=False)
        result.case.round(4).to_csv(out / "case_study.csv", index=False)
    print(spread.markdown(result, note))
    print(f"toy spread: {time.perf_counter() - started:.0f} s, outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
