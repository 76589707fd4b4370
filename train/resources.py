"""Clear failures for what a recipe needs but this machine lacks: hub downloads and a GPU.

The paper recipes name multi-GB models and a hub dataset and generate with vLLM. On a laptop, in
CI or offline, building them should stop at the first missing piece with a message that says what
is missing and how to provide it, not with a stack of HTTP or import errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class ResourceUnavailable(RuntimeError):
    """A model, dataset or device the config asks for is not available on this machine."""


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


def require_cuda(what: str) -> None:
    """Fail before any model is built when a GPU-only path (vLLM generation) is configured."""
    import torch

    if not torch.cuda.is_available():
        raise ResourceUnavailable(
            f"{what} needs a CUDA GPU and none is visible; run this recipe on a GPU node, or override "
            "--use_vllm false to generate with transformers"
        )
