"""Checks at the boundaries where numbers and text enter the workbench from outside.

A teacher's log-probs come from another program (a served vLLM, an in-process engine, a checkpoint
whose weights may have turned to NaN). A NaN would silently drop a rollout out of the OPD path, and a
positive one would take almost all of its group's weight, so every log-prob is checked where it
arrives: it must be a finite number <= :data:`LOGPROB_TOLERANCE`. The tolerance admits the float
rounding of a token whose probability is 1 (log-softmax in float16/bfloat16 can give +1e-6 or so) and
nothing a real distribution can produce.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from workbench.errors import UserError

LOGPROB_TOLERANCE = 1e-4
"""Largest log-prob accepted: log p <= 0 for any probability, plus float rounding."""


class ImpossibleLogprob(UserError):
    """A log-prob that no probability has (not a number, NaN, infinite, or clearly above 0)."""


def logprob_value(raw: Any, where: str, position: int) -> float:
    """``raw`` as a float if it is a possible log-prob (a finite number <= LOGPROB_TOLERANCE); -inf is
    refused too: an engine that clamps it (vLLM's -9999.0) passes."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise ImpossibleLogprob(f"{where}: position {position}: log-prob {raw!r} is not a number; "
                                "check that the server runs the teacher model and returns log-probs")
    value = float(raw)
    if not math.isfinite(value) or value > LOGPROB_TOLERANCE:
        raise ImpossibleLogprob(f"{where}: position {position}: log-prob {value!r} is impossible (must be finite "
                                f"and <= {LOGPROB_TOLERANCE}); check the model's weights and the server's "
                                "--logprobs-mode (raw_logprobs)")
    return value


def check_logprobs(values: torch.Tensor | Iterable[float], where: str) -> torch.Tensor:
    """``values`` (one sequence's log-probs) as a float32 tensor, each checked by :func:`logprob_value`."""
    tensor = torch.as_tensor(values, dtype=torch.float32)
    bad = ~torch.isfinite(tensor) | (tensor > LOGPROB_TOLERANCE)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        logprob_value(float(tensor.flatten()[k]), where, k)
    return tensor
