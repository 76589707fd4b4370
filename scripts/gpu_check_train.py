"""The training half of `make gpu-check`: on one CUDA GPU, a few toy SCOPE steps in bf16 through the trainer,
then the same through a 1-GPU `torchrun` (NCCL) launch, each printed as one summary row.

    python scripts/gpu_check_train.py [--steps 3]

Without a CUDA device (or without TRL) it says so and exits 0: the check is for GPU machines, and the
CPU test suite covers the rest. `check_training()` returns the rows for the evaluation side's script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "train" / "recipes" / "toy_scope.yaml"


def missing() -> str | None:
    """Why the check cannot run here, or None."""
    for package in ("torch", "trl"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (make setup)"
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})"
    return None


def overrides(folder: Path, steps: int) -> list[str]:
    return ["--config", str(RECIPE), "--use_cpu", "false", "--bf16", "true", "--max_steps", str(steps),
            "--heldout_every", "0", "--output_dir", str(folder)]


def trainer_row(folder: Path, steps: int) -> dict[str, object]:
    """Toy SCOPE steps in bf16 in this process, through train.methods (the trainer every recipe uses)."""
    import torch

    from train.config import parse_config
    from train.methods import train_run

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = train_run(parse_config(overrides(folder, steps)))
    return {"check": "trainer, bf16", "steps": summary["global_step"], "seconds": round(time.perf_counter() - started, 1),
            "train_loss": summary["train_loss"], "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "ok": summary["global_step"] == steps}


def torchrun_row(folder: Path, steps: int) -> dict[str, object]:
    """The same steps launched by torchrun on one GPU (NCCL process group), as multi-GPU launches run."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "train.cli",
               *overrides(folder, steps), "--ddp_backend", "nccl"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    row: dict[str, object] = {"check": "torchrun 1 GPU, nccl", "steps": None,
                              "seconds": round(time.perf_counter() - started, 1), "ok": done.returncode == 0}
    if done.returncode == 0:
        row |= {k: v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()
                if k in ("global_step", "train_loss")}
        row["steps"] = row.pop("global_step")
    else:
        row["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return row


def check_training(steps: int = 3) -> list[dict[str, object]]:
    """The two rows, or one row saying why nothing ran."""
    reason = missing()
    if reason:
        return [{"check": "training", "ok": None, "skipped": reason}]
    with tempfile.TemporaryDirectory(prefix="gpu-check-train-") as tmp:
        return [trainer_row(Path(tmp) / "trainer", steps), torchrun_row(Path(tmp) / "torchrun", steps)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = check_training(args.steps)
    for row in rows:
        if row.get("skipped"):
            print(f"gpu-check (training): skipped: {row['skipped']}")
        else:
            print("gpu-check (training): " + "  ".join(f"{k}={v}" for k, v in row.items()))
    return 0 if all(row.get("ok") in (True, None) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
