"""A small evaluation run for the fault tests: seeded fake samples of six toy problems, graded, written
as resumable units into SAMPLES, then tables into TABLES, under the same guard as every command.

    python tests/fault_worker.py SAMPLES TABLES [--delay SECONDS] [--ready FILE [--hold FILE]]

``--delay`` sleeps before each unit; ``--ready`` is touched once a shard is on disk, and from then on
the run waits before each unit for as long as the ``--hold`` file exists, so a test can act on a run
that is certainly in the middle of its work, however slow the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.errors import main_guard  # noqa: E402
from workbench.models import Completion, SamplingConfig  # noqa: E402
from workbench.stages import derive_seed  # noqa: E402

SAMPLING = SamplingConfig(n=4, max_new_tokens=32, seed=0)
TIERS = ("toy-1", "toy-3")
PER_TIER = 3
UNIT_SIZE = 1


class SeededFake:
    """Answers each prompt right or wrong by a hash of (seed, prompt, sample): reruns agree exactly."""

    name = "fault-fake"
    tokenizer = None

    def __init__(self, answers: dict[str, str], delay: float = 0.0, ready: Path | None = None,
                 samples: Path | None = None, hold: Path | None = None) -> None:
        self.answers, self.delay, self.ready, self.samples, self.hold = answers, delay, ready, samples, hold

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        if self.ready is not None and self.samples is not None and any(self.samples.glob("part-*.parquet")):
            self.ready.touch()
            deadline = time.monotonic() + 600
            while self.hold is not None and self.hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(self.delay)
        out = []
        for prompt in prompts:
            answer = self.answers[prompt]
            group = []
            for j in range(sampling.n):
                right = derive_seed(sampling.seed, prompt, j) % 3 != 0
                text = f"so \\boxed{{{answer if right else answer + '1'}}}"
                group.append(Completion(text, (1, 2, 3, 0), "stop"))
            out.append(group)
        return out


def problems():
    from workbench.data import load_benchmark

    return [p for tier in TIERS for p in load_benchmark(tier, toy_size=PER_TIER)]


def run(samples: Path, tables: Path, delay: float = 0.0, ready: Path | None = None,
        hold: Path | None = None) -> dict:
    from eval.generate import generate_samples
    from eval.table_sets import rebuild
    from workbench.sampling import render_prompts

    todo = problems()
    fake = SeededFake({}, delay, ready, samples, hold)
    fake.answers = dict(zip(render_prompts(fake, todo), (p.answer for p in todo)))
    generate_samples(fake, todo, SAMPLING, samples, unit_size=UNIT_SIZE, progress=False, grade_workers=1,
                     extra={"suite": "toy", "method": "base", "seed": 0})
    return rebuild([samples], tables, figure=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("samples", type=Path)
    parser.add_argument("tables", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--hold", type=Path)
    args = parser.parse_args(argv)
    run(args.samples, args.tables, args.delay, args.ready, args.hold)
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
