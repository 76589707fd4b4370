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

BACKENDS = ("hf",)


def load_backend(kind: str, model: str, **kwargs: Any) -> Backend:
    """Build a backend: "hf" (transformers, CPU or GPU)."""
    if kind == "hf":
        from workbench.models.hf import HFBackend

        return HFBackend(model, **kwargs)
    raise ValueError(f"unknown backend {kind!r}; available: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS", "Backend", "Completion", "SamplingConfig", "Sampler", "Scorer", "TokenizerMismatch",
    "check_same_vocab", "load_backend",
]
