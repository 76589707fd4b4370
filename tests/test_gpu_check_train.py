"""scripts/gpu_check_train.py: on a machine without CUDA it says so in one line and passes; with CUDA it
trains the toy steps both ways."""

from __future__ import annotations

import torch

from repo_scripts import load_script


def test_gpu_check_train_reports_what_it_could_run(capsys):
    check = load_script("scripts/gpu_check_train.py")
    assert check.main(["--steps", "1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    if torch.cuda.is_available():
        assert len(out) == 2 and all("ok=True" in line for line in out), out
    else:
        assert out == [f"gpu-check (training): skipped: no CUDA device (torch {torch.__version__}, built for CUDA none)"]
