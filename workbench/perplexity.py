"""Sequence log-probabilities and perplexities from per-token log-probs, with masking.

Both SCOPE weights are functions of length-normalised perplexity over response tokens only,
PPL(y|x) = exp(-(1/|y|) sum_t log pi(a_t|x,a_<t)). Masked positions are ignored even when they hold
NaN or -inf (padding often does), so the rules for bad values are explicit:
- an unmasked -inf log-prob gives log-PPL = +inf and PPL = inf (the model ruled the token out);
- an unmasked NaN gives NaN;
- a sequence with no unmasked token gives NaN (perplexity of nothing is undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_logprobs(seqs: Sequence[torch.Tensor | Sequence[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-token log-probs -> (padded [B, T] float tensor, bool mask)."""
    tensors = [torch.as_tensor(s, dtype=torch.float32).reshape(-1) for s in seqs]
    width = max((len(t) for t in tensors), default=0)
    out = torch.zeros(len(tensors), width)
    mask = torch.zeros(len(tensors), width, dtype=torch.bool)
    for i, t in enumerate(tensors):
        out[i, : len(t)] = t
        mask[i, : len(t)] = True
    return out, mask


def _check(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if logps.shape != mask.shape:
        raise ValueError(f"log-probs {tuple(logps.shape)} and mask {tuple(mask.shape)} differ in shape")
    return mask.to(torch.bool)


def sequence_logprob(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of unmasked log-probs per row (log pi(y|x)); 0 for an empty row."""
    mask = _check(logps, mask)
    return torch.where(mask, logps, torch.zeros_like(logps)).sum(-1)


def token_count(mask: torch.Tensor) -> torch.Tensor:
    return mask.to(torch.bool).sum(-1)


def mean_logprob(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = token_count(_check(logps, mask))
    total = sequence_logprob(logps, mask)
    return torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))


def log_perplexity(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per token: log PPL, the quantity SCOPE's softmax acts on."""
    return -mean_logprob(logps, mask)


def perplexity(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_perplexity(logps, mask))
