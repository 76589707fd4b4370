"""One model interface for every backend: a sampler and a scorer.

Eval needs samples; training and analysis need per-token log-probs of given tokens (the teacher scoring
the student's rollout). Keeping both behind one small interface lets the same experiment run on a
laptop (transformers on CPU), a GPU (transformers or vLLM) or against a served teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from workbench.errors import UserError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling knobs shared by all backends; defaults are the paper's evaluation protocol."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 32768
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. `token_ids` include the EOS token when finish_reason is "stop"."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Sampler(Protocol):
    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions for each prompt, in prompt order."""


@runtime_checkable
class Scorer(Protocol):
    def token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """log pi(completion token t | prompt, completion tokens < t) for each pair, float32, 1-D."""


@runtime_checkable
class Backend(Sampler, Scorer, Protocol):
    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt string, exactly as the backend would feed it to the model."""


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt shared by every backend: special tokens are added only when
    the text does not already carry them (a chat template writes its own BOS), so a templated prompt
    is not given a second BOS."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = bos is not None and text.startswith(bos)
    return list(tokenizer.encode(text, add_special_tokens=not (templated or has_bos)))


class TokenizerMismatch(UserError):
    """Teacher and student do not share a vocabulary, so per-token log-probs are not comparable."""


def check_same_vocab(student_tokenizer: Any, teacher_tokenizer: Any) -> None:
    """Raise TokenizerMismatch unless both tokenizers map every token string to the same id.

    SCOPE's teacher scores the student's own sampled token ids; with another vocabulary those ids mean
    other strings and every log-ratio is silently wrong. Special tokens are part of the check because
    EOS is scored too.
    """
    sv, tv = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if sv == tv:
        return
    only_s = sorted(set(sv) - set(tv))[:5]
    only_t = sorted(set(tv) - set(sv))[:5]
    moved = sorted(k for k in set(sv) & set(tv) if sv[k] != tv[k])[:5]
    raise TokenizerMismatch(
        f"student and teacher vocabularies differ (sizes {len(sv)} vs {len(tv)}); "
        f"only in student: {only_s}; only in teacher: {only_t}; same token, other id: {moved}. "
        "SCOPE needs a shared tokenizer: pick a teacher from the student's model family."
    )
