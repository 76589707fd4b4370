"""Benchmark: wall time of a SCOPE training step against a GRPO step on the toy recipe.

``python -m train.bench_step`` trains both methods from the toy base student with the same batch
(4 prompts x 8 rollouts, toy_scope.yaml / toy_grpo.yaml) in one process, alternating short runs so
that load from other processes falls on both alike, and reports the median optimizer-step wall
time of each and their ratio (goal: SCOPE <= 1.25x GRPO; the paper's step-time table has
1.40x). A step is everything between the trainer's step-begin and step-end callbacks: generation,
grading, scoring, the update. SCOPE's extra work is the teacher scoring every rollout and one
no-grad student forward for the behaviour log-probs (TRL's GRPO skips it when one update per
batch makes them equal to the current ones). GRPO runs without its KL reference model
(``beta 0``), the cheaper GRPO, so the ratio is not flattered by a reference forward. Both run
with learning rate 0, so the policy never moves and both methods sample the same rollouts step
for step: the times compare equal work, not whichever method happened to write longer answers.
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
from transformers import PrinterCallback, TrainerCallback

from train.config import parse_config
from train.methods import build_trainer
from train.toy_suite import recipe_path

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
    cfg = parse_config(["--config", str(recipe_path(method)), "--max_steps", str(steps), "--seed", str(seed),
                        "--output_dir", str(folder), "--logging_steps", "1", "--learning_rate", "0",
                        *extra, *overrides])
    trainer = build_trainer(cfg)
    trainer.remove_callback(PrinterCallback)
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times, trainer.state.log_history


def run(steps: int = 8, warmup: int = 2, rounds: int = 2, seed: int = 0,
        overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Median step time of grpo and scope over ``rounds`` alternating runs of ``steps`` steps each,
    dropping each run's first ``warmup`` steps; also SCOPE's median teacher-scoring and behaviour
    log-prob times per step. ``overrides`` are config flags given to both recipes (e.g.
    ``["--teacher_on_correct", "true"]``)."""
    if steps <= warmup:
        raise ValueError(f"steps ({steps}) must exceed warmup ({warmup})")
    times: dict[str, list[float]] = {"grpo": [], "scope": []}
    extra: dict[str, list[float]] = {"timing/teacher_scoring_s": [], "timing/old_logprob_s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for method in ("grpo", "scope"):
                step_times, history = _timed_run(method, steps, Path(tmp) / f"{method}{r}", seed, overrides)
                times[method] += step_times[warmup:]
                if method == "scope":
                    logged = [h for h in history if "loss" in h][warmup:]
                    for key in extra:
                        extra[key] += [h[key] for h in logged if key in h]
    grpo, scope = statistics.median(times["grpo"]), statistics.median(times["scope"])
    return {
        "steps_measured": {k: len(v) for k, v in times.items()},
        "grpo_step_s": grpo,
        "scope_step_s": scope,
        "ratio": scope / grpo,
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
    parser.add_argument("--rounds", type=int, default=2)
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
    print(f"toy recipe, 4 prompts x 8 rollouts a step, {args.threads} threads, "
          f"median of {result['steps_measured']} steps{', overrides ' + ' '.join(overrides) if overrides else ''}")
    print(f"  GRPO  step: {result['grpo_step_s'] * 1e3:8.1f} ms")
    print(f"  SCOPE step: {result['scope_step_s'] * 1e3:8.1f} ms  (teacher scoring "
          f"{result['scope_teacher_scoring_s'] * 1e3:.1f} ms, behaviour log-probs "
          f"{result['scope_old_logprob_s'] * 1e3:.1f} ms)")
    print(f"  ratio SCOPE / GRPO: {result['ratio']:.2f}x (goal <= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
