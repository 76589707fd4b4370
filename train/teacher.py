"""The teacher as a scorer: per-token log-probs of the student's own sampled tokens.

SCOPE and OPD need log pi_T(a_t | x, a_<t) on each rollout, EOS included, and nothing else from
the teacher. Held locally, it is workbench's HF scorer (loaded once, frozen, projecting to the
vocabulary a chunk at a time); served, it is workbench's ServerScorer over a vLLM
OpenAI-compatible endpoint, as TRL's ServerDistillationTrainer keeps its teacher on its own node.
Either way the vocabularies are compared first: scoring another tokenizer's ids would silently
give every log-ratio the wrong meaning.

Teacher log-probs are the teacher's own distribution (temperature 1), as a scorer returns them;
the student's side uses TRL's log-probs of the sampling policy (logits divided by the sampling
temperature), the policy that generated the rollout and that the importance ratio is taken
against. Where the two temperatures differ, OPD pulls the student's sampling distribution towards
the teacher's untempered one.
"""

from __future__ import annotations

import logging
from typing import Any

from train.config import ScopeConfig
from train.resources import hub_guard
from workbench.models import Scorer, check_same_vocab

log = logging.getLogger(__name__)


def _teacher_tokenizer_name(cfg: ScopeConfig) -> str:
    return cfg.teacher_tokenizer or cfg.resolved_teacher() or str(cfg.teacher_server_model)


def load_teacher(cfg: ScopeConfig, student_tokenizer: Any, device: str) -> Scorer:
    """Check the vocabulary, then build the configured teacher scorer (local model or server)."""
    from transformers import AutoTokenizer

    name = _teacher_tokenizer_name(cfg)
    with hub_guard(f"teacher tokenizer {name}"):
        teacher_tokenizer = AutoTokenizer.from_pretrained(name)
    check_same_vocab(student_tokenizer, teacher_tokenizer)
    if cfg.teacher_server_url:
        from workbench.models.server import ServerScorer

        log.info("teacher: %s served at %s", cfg.teacher_server_model, cfg.teacher_server_url)
        return ServerScorer(cfg.teacher_server_url, str(cfg.teacher_server_model), timeout=cfg.teacher_server_timeout,
                            max_retries=cfg.teacher_server_tries - 1, batch_size=cfg.teacher_server_batch_size,
                            concurrency=cfg.teacher_server_concurrency, progress=False)
    from workbench.models.hf import HFBackend

    path = cfg.resolved_teacher()
    log.info("teacher: %s on %s", path, device)
    with hub_guard(f"teacher model {path}"):
        backend = HFBackend(
            str(path), device=device, dtype=cfg.teacher_dtype, tokenizer=name,
            score_tokens_per_batch=cfg.teacher_score_tokens, progress=False,
        )
    backend.model.requires_grad_(False)
    return backend
