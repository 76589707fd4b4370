"""One command that proves the GPU path on a CUDA machine with no internet, using only the repository
(the toy models), and prints one summary table: `make gpu-check` (GPU_PY=... picks the Python).

Checks, each a row: the environment (torch, CUDA, vLLM, TRL); transformers sampling in bfloat16 on the
GPU; teacher scoring in bfloat16 against float32 on the same tokens (the gap is reported); a 2-worker
torchrun evaluation sharing one GPU whose tables must equal a 1-worker run's; and the training checks
of scripts/gpu_check_train.py when it is there. A check whose packages are missing says so and the
others still run; without CUDA the script says so and exits 0 after the environment row.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ROWS: list[tuple[str, str, str]] = []
DEVICE = "cuda"


def row(check: str, status: str, detail: str) -> None:
    ROWS.append((check, status, detail))
    print(f"[gpu-check] {check}: {status} - {detail}", flush=True)


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def environment() -> bool:
    import torch

    have = {m: ("yes" if not missing(m) else "no") for m in ("transformers", "vllm", "trl", "pandas", "math_verify")}
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    row("environment", "ok" if cuda else "no GPU",
        f"torch {torch.__version__}, {name}, bf16 {'yes' if cuda and torch.cuda.is_bf16_supported() else 'no'}, "
        + ", ".join(f"{k} {v}" for k, v in have.items()))
    return cuda


def sampling_bf16():
    need = missing("transformers", "pandas", "math_verify")
    if need:
        return row("sampling bf16", "skipped", f"needs {', '.join(need)}")
    from dataclasses import replace

    from workbench.data import TOY_PROTOCOL, load_benchmark
    from workbench.models.hf import HFBackend
    from workbench.sampling import accuracy, sample_and_grade
    from workbench.toy import STUDENT_DIR

    backend = HFBackend(str(STUDENT_DIR), device=DEVICE, dtype="bfloat16", progress=False)
    problems = load_benchmark("toy-6", toy_size=64)
    start = time.perf_counter()
    frame = sample_and_grade(backend, problems, replace(TOY_PROTOCOL, n=8), token_ids=True)
    seconds = time.perf_counter() - start
    row("sampling bf16", "ok", f"toy student on {DEVICE}, {len(problems)} toy-6 problems x 8: "
        f"{frame['n_tokens'].sum() / seconds:,.0f} tok/s, accuracy {100 * accuracy(frame):.1f}%")
    return backend, frame


def scoring_gap(samples) -> None:
    if samples is None:
        return
    import torch

    from workbench.models.hf import HFBackend
    from workbench.toy import TEACHER_DIR

    student, frame = samples
    prompt_ids = [student.encode(p) for p in frame["prompt"]]
    completion_ids = [list(ids) for ids in frame["token_ids"]]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        teacher = HFBackend(str(TEACHER_DIR), device=DEVICE, dtype=dtype, progress=False)
        scores[dtype] = torch.cat(teacher.token_logprobs(prompt_ids, completion_ids))
    gap = (scores["bfloat16"] - scores["float32"]).abs()
    row("scoring bf16 vs fp32", "ok", f"teacher on {gap.numel():,} tokens: max |diff| {gap.max():.3g} nats, "
        f"mean {gap.mean():.3g}")


def workers_on_one_gpu() -> None:
    need = missing("pandas", "pyarrow", "math_verify", "scipy", "matplotlib", "tabulate")
    if need:
        return row("2 workers, 1 GPU", "skipped", f"needs {', '.join(need)}")
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            out = Path(tmp) / f"w{workers}"
            args = ["--toy-size", "4", "--num-samples", "8", "--unit-size", "2", "--device", DEVICE, "--dtype",
                    "bfloat16", "--runs-root", str(out / "none"), "--samples-dir", str(out / "samples"),
                    "--tables-dir", str(out / "tables"), "--no-figure", "--quiet"]
            launch = ([sys.executable, "-m", "eval.reproduce"] if workers == 1 else
                      [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                       "-m", "eval.reproduce"])
            start = time.perf_counter()
            done = subprocess.run(launch + args, cwd=REPO, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                return row("2 workers, 1 GPU", "FAILED", (done.stderr or done.stdout).strip().splitlines()[-1])
            tables[workers] = ((out / "tables" / "toy_avg@8.csv").read_bytes(), time.perf_counter() - start)
    same = tables[1][0] == tables[2][0]
    row("2 workers, 1 GPU", "ok" if same else "FAILED",
        f"tables {'identical' if same else 'DIFFER'}; 1 worker {tables[1][1]:.0f} s, 2 workers {tables[2][1]:.0f} s")


def training() -> None:
    """The rows of scripts/gpu_check_train.py: toy SCOPE steps in bf16 through the trainer, and a 1-GPU
    torchrun (NCCL) launch of the same."""
    spec = importlib.util.spec_from_file_location("gpu_check_train", REPO / "scripts" / "gpu_check_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for result in module.check_training():
        if result.get("skipped"):
            row(str(result["check"]), "skipped", str(result["skipped"]))
            continue
        detail = ", ".join(f"{k} {v}" for k, v in result.items() if k not in ("check", "ok"))
        row(str(result["check"]), "ok" if result["ok"] else "FAILED", detail)


def main() -> int:
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu runs the same checks on the CPU (to test this script without a GPU)")
    DEVICE = parser.parse_args().device
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    if environment() or DEVICE == "cpu":
        for check in (lambda: scoring_gap(sampling_bf16()), workers_on_one_gpu, training):
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - a failed check is a row; the others still run
                row(getattr(check, "__name__", "check"), "FAILED", f"{type(exc).__name__}: {exc}")
    else:
        print("[gpu-check] no CUDA device: nothing on the GPU path can be checked on this machine")
    width = max(len(r[0]) for r in ROWS)
    print(f"\nGPU check ({time.perf_counter() - start:.0f} s)")
    for check, status, detail in ROWS:
        print(f"  {check:<{width}}  {status:<8} {detail}")
    return 1 if any(status == "FAILED" for _, status, _ in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
