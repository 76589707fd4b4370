"""The paper's experiments on the toy world: ``python scripts/toy_experiments.py main|dpaw|tau``.

``main`` is the main table (base, GRPO, KD, OPD, SCOPE; Avg@n and Pass@n per tier; SCOPE - OPD paired) and
the Pass@k paradox figure; ``dpaw`` the paper's Figure 5 ablation set plus the authors'-code preset;
``tau`` the temperature sweep. Training and sampling resume where a killed run stopped. ``--report-only``
redraws the tables and figures from the committed counts without training or sampling.
Outputs: ``results/toy/experiments/<name>/`` (counts.csv.gz, table.md, summary.csv, paired.csv, figures, manifest).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence

from analysis import experiment_report
from analysis.experiments import EXPERIMENTS, ExperimentConfig, run
from workbench.errors import UserArgumentParser, main_guard


def main(argv: Sequence[str] | None = None) -> int:
    defaults = ExperimentConfig()
    parser = UserArgumentParser(prog="python scripts/toy_experiments.py", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, default=len(defaults.seeds), help="seeds 0..N-1")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument("--problems-per-tier", type=int, default=defaults.problems_per_tier)
    parser.add_argument("--n", type=int, default=defaults.n, help="samples a problem")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="processes at once")
    parser.add_argument("--report-only", action="store_true", help="redraw from the committed counts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    started = time.perf_counter()
    if args.report_only:
        result, cfg = experiment_report.redraw(args.experiment)
    else:
        cfg = ExperimentConfig(seeds=tuple(range(args.seeds)), max_steps=args.max_steps,
                               problems_per_tier=args.problems_per_tier, n=args.n, workers=args.workers)
        result = run(args.experiment, cfg)
        experiment_report.save(result, cfg)
    out = cfg.results / args.experiment
    note = experiment_report.note(cfg)
    print(experiment_report.markdown(result, cfg.n, note))
    if not result.timings.empty:
        print(result.timings.to_string(index=False))
    print(f"{args.experiment}: {time.perf_counter() - started:.0f} s wall, outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
