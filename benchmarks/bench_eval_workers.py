"""Benchmark: toy evaluation by 1 process against 2 torchrun workers (transformers on the CPU).

The base toy student samples 10 problems of each of the six tiers, 8 samples each, in units of 4
problems, once with one process and once with two workers (each its own engine and its own share of
the units); both wall times include start-up, and the tables must be byte-identical. On a 2-core laptop
each worker gets one core, so the ratio shows what the split itself costs or gains, nothing more.

    .venv/bin/python benchmarks/bench_eval_workers.py [--toy-size 10] [--n 8] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def evaluate(workers: int, out: Path, toy_size: int, n: int) -> float:
    args = ["--toy-size", str(toy_size), "--num-samples", str(n), "--unit-size", "4", "--runs-root",
            str(out / "none"), "--samples-dir", str(out / "samples"), "--tables-dir", str(out / "tables"),
            "--no-figure", "--quiet"]
    launch = ([sys.executable, "-m", "eval.reproduce"] if workers == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(workers),
               "-m", "eval.reproduce"])
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    start = time.perf_counter()
    subprocess.run(launch + args, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toy-size", type=int, default=10)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1, help="runs of each; the best is reported")
    args = p.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for workers in (1, 2):
                times[workers].append(evaluate(workers, Path(tmp) / f"w{workers}-{r}", args.toy_size, args.n))
        same = all((Path(tmp) / "w1-0" / "tables" / name).read_bytes()
                   == (Path(tmp) / "w2-0" / "tables" / name).read_bytes() for name in
                   (f"toy_avg@{args.n}.csv", f"toy_pass@{args.n}.csv", f"toy_pass@{args.n}_unbiased.csv"))
    one, two = min(times[1]), min(times[2])
    print(f"toy evaluation, 6 tiers x {args.toy_size} problems x {args.n} samples, {os.cpu_count()} CPUs:")
    print(f"  1 process : {one:6.1f} s")
    print(f"  2 workers : {two:6.1f} s")
    print(f"  speed-up  : {one / two:.2f}x (2 workers vs 1), tables {'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
