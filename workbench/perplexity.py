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


def log_perplexity(logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of each row's unmasked tokens: log PPL, the quantity SCOPE's
    softmax acts on (PPL is its exponential)."""
    if logps.shape != mask.shape:
        raise ValueError(f"log-probs {tuple(logps.shape)} and mask {tuple(mask.shape)} differ in shape")
    mask = mask.to(torch.bool)
    n = mask.sum(-1)
    total = torch.where(mask, logps, torch.zeros_like(logps)).sum(-1)
    return -torch.where(n > 0, total / n.clamp(min=1), torch.full_like(total, float("nan")))
