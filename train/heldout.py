"""Held-out accuracy of the policy during training, logged as `heldout/avg@n`.

On-policy reward curves (`frac_correct`) are measured on the training prompts the policy is being pushed
on; a fixed held-out set sampled every few steps shows whether the student actually gets better, which is
what a training-dynamics plot should compare across methods. Only the toy world is cheap enough to do this
inside the training loop on a CPU.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from workbench.models import SamplingConfig
from workbench.models.hf import HFBackend
from workbench.records import Problem
from workbench.sampling import accuracy, sample_and_grade

log = logging.getLogger(__name__)


class HeldOutAccuracy(TrainerCallback):
    """Sample `n` answers per held-out problem before training and every `every` steps; log their
    accuracy, graded as evaluation grades (a truncated answer is wrong)."""

    def __init__(self, problems: Sequence[Problem], tokenizer: Any, *, every: int, n: int,
                 max_new_tokens: int, temperature: float, seed: int) -> None:
        if every < 1 or n < 1 or not problems:
            raise ValueError(f"held-out evaluation needs every >= 1, n >= 1 and problems (got {every}, {n}, "
                             f"{len(problems)})")
        self.problems = list(problems)
        self.tokenizer = tokenizer
        self.every = every
        self.sampling = SamplingConfig.untruncated(n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                                                   seed=seed)
        self.key = f"heldout/avg@{n}"

    def _measure(self, model: Any, state: Any) -> None:
        was_training = model.training
        model.eval()
        backend = HFBackend.wrap(model, self.tokenizer, name="policy")
        # Sampling reseeds the global generators; restore them so training draws the same rollouts
        # with or without this measurement.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
            samples = sample_and_grade(backend, self.problems, self.sampling)
        random.setstate(py_state)
        np.random.set_state(np_state)
        if was_training:
            model.train()
        score = accuracy(samples)
        state.log_history.append({"step": state.global_step, self.key: score})
        log.info("step %d: %s = %.3f", state.global_step, self.key, score)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step == 0:  # a resumed run has its measurement before training in its log already
            self._measure(model, state)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.every == 0:
            self._measure(model, state)
