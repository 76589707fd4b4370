"""One model interface for every backend: a sampler and a scorer.

Eval needs samples; training and analysis need per-token log-probs of given tokens (the teacher scoring
the student's rollout). Keeping both behind one small interface lets the same experiment run on a
laptop (transformers on CPU), a GPU (transformers or vLLM) or against a served teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from workbench.errors import FieldError, UserError

if TYPE_CHECKING:  # only for annotations: the config and the interface load without torch
    import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingConfig:
    """How completions are sampled: the one home of every sampling setting.

    The field defaults are the paper's evaluation protocol (32 samples a problem, temperature 0.6,
    top-p 0.95, top-k 20, up to 32768 new tokens), which is what the benchmark registry
    (:mod:`workbench.data`) registers for the real benchmarks; a setting that deliberately differs
    is a named preset below, so each default is found in one place. Every validity rule is checked
    here, once, whoever builds the config.
    """

    n: int = field(default=32, metadata={"help": "samples per prompt"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature (0: greedy)"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass (1: off)"})
    top_k: int = field(default=20, metadata={"help": "sample among the k likeliest tokens (0: off)"})
    max_new_tokens: int = field(default=32768, metadata={"help": "most new tokens a completion may have; one "
                                                                 "cut off there is graded wrong"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "penalty on repeated tokens (1: none)"})
    seed: int = field(default=0, metadata={"help": "random seed of every sampling stage"})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise FieldError("n", f"must be at least 1, got {self.n}")
        if not 0 <= self.temperature < float("inf"):
            raise FieldError("temperature", f"must be 0 (greedy) or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise FieldError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise FieldError("top_k", f"must be 0 (off) or more, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise FieldError("max_new_tokens", f"must be at least 1, got {self.max_new_tokens}")
        if not 0 < self.repetition_penalty < float("inf"):
            raise FieldError("repetition_penalty", f"must be > 0, got {self.repetition_penalty}")
        if self.seed < 0:
            raise FieldError("seed", f"must be a whole number >= 0, got {self.seed}")

    @classmethod
    def untruncated(cls, **settings: Any) -> SamplingConfig:
        """Sampling from the model's whole distribution (top-p 1, top-k 0 = off): where a sample's
        perplexity is measured (the perplexity analyses) or its rate of success under the policy
        itself (the toy world's build-time measure, held-out curves during training), truncation
        would sample another distribution than the one scored."""
        return cls(**{"top_p": 1.0, "top_k": 0, **settings})


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
