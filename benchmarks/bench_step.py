"""Benchmark: wall time of a SCOPE training step against a GRPO step on the toy recipe.

``python benchmarks/bench_step.py`` trains both methods from the toy base student with the same batch
(4 prompts x 8 rollouts, toy_scope.yaml / toy_grpo.yaml) in one process, alternating short runs so
that load from other processes falls on both alike, and reports their step times and ratio (goal:
SCOPE <= 1.25x GRPO; the paper's step-time table has 1.40x). A step is everything between the
trainer's step-begin and step-end callbacks: generation, grading, teacher scoring, the update.
SCOPE's extra work is the teacher scoring the incorrect rollouts (every rollout with
``--teacher_on_correct true``), the weights and the snapshot rows; the behaviour log-probs come
from the loss's own forward in this recipe (see ScopeTrainer._weights_at_loss). GRPO runs without
its KL reference model (``beta 0``), the cheaper GRPO, so the ratio is not flattered by a
reference forward. Both run with learning rate 0, so the policy never moves and both methods
sample the same rollouts step for step: the times compare equal work, not whichever method
happened to write longer answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainerCallback, set_seed

from train.config import parse_config
from train.methods import build_trainer, toy_recipe

log = logging.getLogger(__name__)


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, from step begin to step end."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):  # type: ignore[override]
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[override]
        self.times.append(time.perf_counter() - self._started)


def _timed_run(method: str, steps: int, folder: Path, seed: int,
               overrides: Sequence[str]) -> tuple[list[float], list[dict[str, Any]]]:
    extra = ["--beta", "0"] if method == "grpo" else []
    cfg = parse_config(["--config", str(toy_recipe(method)), "--max_steps", str(steps), "--seed", str(seed),
                        "--output_dir", str(folder), "--logging_steps", "1", "--learning_rate", "0",
                        *extra, *overrides])
    trainer = build_trainer(cfg)
    trainer.remove_callback(PrinterCallback)
    timer = StepTimer()
    trainer.add_callback(timer)
    set_seed(seed)  # loading SCOPE's teacher moved the RNG; reseed so both sample the same rollouts
    trainer.train()
    return timer.times, trainer.state.log_history


def run(steps: int = 8, warmup: int = 2, rounds: int = 4, seed: int = 0,
        overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Step times of grpo and scope over ``rounds`` alternating runs of ``steps`` steps each,
    dropping each run's first ``warmup`` steps.

    Both runs of a round sample the same rollouts step for step, so step i of one is paired with
    step i of the other: ``ratio`` is the median of these paired ratios, which a load spike on a
    shared machine moves far less than it moves either median. Also returned: each method's median
    step time, their ratio, and SCOPE's median teacher-scoring and behaviour log-prob times.
    ``overrides`` are config flags given to both recipes (e.g. ``["--teacher_on_correct", "true"]``).
    """
    if steps <= warmup:
        raise ValueError(f"steps ({steps}) must exceed warmup ({warmup})")
    times: dict[str, list[float]] = {"grpo": [], "scope": []}
    paired: list[float] = []
    extra: dict[str, list[float]] = {"timing/teacher_scoring_s": [], "timing/old_logprob_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            per_run = {}
            for method in ("grpo", "scope"):
                step_times, history = _timed_run(method, steps, Path(tmp) / f"{method}{r}", seed, overrides)
                per_run[method] = step_times[warmup:]
                times[method] += per_run[method]
                if method == "scope":
                    logged = [h for h in history if "loss" in h][warmup:]
                    for key in extra:
                        extra[key] += [h[key] for h in logged if key in h]
            paired += [s / g for g, s in zip(per_run["grpo"], per_run["scope"], strict=True)]
    grpo, scope = statistics.median(times["grpo"]), statistics.median(times["scope"])
    return {
        "steps_measured": len(paired),
        "grpo_step_s": grpo,
        "scope_step_s": scope,
        "ratio": statistics.median(paired),
        "ratio_of_medians": scope / grpo,
        "scope_teacher_scoring_s": statistics.median(extra["timing/teacher_scoring_s"]),
        # 0 when the weights come from the loss's own forward (see ScopeTrainer._weights_at_loss)
        "scope_old_logprob_s": statistics.median(extra["timing/old_logprob_s"] or [0.0]),
        "threads": torch.get_num_threads(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Other --field value flags override both recipes.")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the toy models are too small to gain from more)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    result = run(args.steps, args.warmup, args.rounds, overrides=overrides)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"toy recipe, 4 prompts x 8 rollouts a step, {args.threads} thread(s), {result['steps_measured']} "
          f"paired steps{', overrides ' + ' '.join(overrides) if overrides else ''}")
    print(f"  GRPO  step: median {result['grpo_step_s'] * 1e3:7.1f} ms")
    print(f"  SCOPE step: median {result['scope_step_s'] * 1e3:7.1f} ms  (teacher scoring "
          f"{result['scope_teacher_scoring_s'] * 1e3:.1f} ms, behaviour log-probs "
          f"{result['scope_old_logprob_s'] * 1e3:.1f} ms)")
    print(f"  SCOPE / GRPO: {result['ratio']:.2f}x median of paired steps, {result['ratio_of_medians']:.2f}x "
          "ratio of medians (goal <= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
