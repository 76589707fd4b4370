"""Train one run from a recipe: ``python -m train.cli --config train/recipes/toy_scope.yaml [--field value ...]``.

Any ScopeConfig / GRPOConfig field can be overridden on the command line, e.g. ``--seed 1
--output_dir results/toy/runs/scope/seed1``, ``--ablation no_teacher_weight``, ``--tau 0.5``,
``--method opd --num_generations 1``. The output folder gets a manifest (config, seed, versions,
git commit, status) written by workbench.runs, then the model, log history and snapshots.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence

from train.config import parse_config
from train.methods import train_run
from workbench.runs import run_folder


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(argv)
    with run_folder(cfg.output_dir, cfg.to_dict(), cfg.seed, method=cfg.method):
        summary = train_run(cfg)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
