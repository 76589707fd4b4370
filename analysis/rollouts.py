"""The stages both perplexity analyses start from: the student's graded rollouts with their token ids,
and scoring them.

The corrective and boundary experiments need the exact token ids the student sampled, because the
teacher must score the student's own tokens (a re-tokenised response is not what the student
produced). The rollouts are ``eval.generate``'s samples (same units, seeds and grading, so a
truncated rollout never counts as solved) with the optional ``token_ids`` column kept; scoring runs
on the stage engine of :mod:`workbench.stages`. Both write atomic shards one unit at a time and
refuse to resume a folder made with other settings, so a killed run rerun continues where it
stopped and reproduces the uninterrupted result.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from eval.generate import generate_samples
from workbench.models import Backend, SamplingConfig, Scorer
from workbench.perplexity import log_perplexity, pad_logprobs
from workbench.records import SAMPLE_KEY, Problem, ShardStore
from workbench.stages import WorkUnit, run_units, stage, weights_sha256

ANALYSIS_KIND = "perplexity-analysis"
"""Marks an analysis run's manifest, so its sample stores are not mistaken for evaluations."""

SCORE_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("logps", pa.list_(pa.float32())),
        ("log_ppl", pa.float64()),
        ("n_scored", pa.int32()),
    ]
)


def sample_rollouts(backend: Backend, problems: Sequence[Problem], sampling: SamplingConfig,
                    out_dir: str | os.PathLike, *, unit_size: int = 8, grade_workers: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """``sampling.n`` graded rollouts per problem with the sampled token ids, resumable.

    These are the samples ``eval.generate.generate_samples`` draws with the same arguments; rows carry
    SAMPLE_SCHEMA columns plus ``token_ids`` and ``answer``, in problem order.
    """
    return generate_samples(backend, problems, sampling, out_dir, unit_size=unit_size, grade_workers=grade_workers,
                            progress=progress, extra={"token_ids": True}, token_ids=True)


def score_rollouts(scorer: Scorer, encode: Callable[[str], list[int]], rollouts: pd.DataFrame,
                   out_dir: str | os.PathLike, *, model: str, unit_size: int = 64,
                   progress: bool = True) -> pd.DataFrame:
    """Per-token log-probs of each rollout's own ``token_ids`` under ``scorer``, and its log-PPL.

    Only response tokens are scored (the prompt is context), so log-PPL is the mean token NLL over
    the response, as in the paper's PPL(y|x). Returns one row per rollout: the sample key,
    ``logps``, ``log_ppl`` and ``n_scored``.
    """
    missing = [c for c in (*SAMPLE_KEY, "prompt", "token_ids") if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollouts lack columns {missing}")
    out = Path(out_dir)
    keys = [tuple(k) for k in rollouts[list(SAMPLE_KEY)].itertuples(index=False)]
    identity = {"model": model, "weights_sha256": weights_sha256(model),
                "rollouts_sha256": hashlib.sha256(repr(sorted(keys)).encode()).hexdigest(), "unit_size": unit_size}
    store = ShardStore(out, SCORE_SCHEMA, SAMPLE_KEY)
    records = rollouts.reset_index(drop=True)
    units = [
        WorkUnit(i, tuple(range(start, min(start + unit_size, len(records)))),
                 tuple(keys[start : start + unit_size]), 0)
        for i, start in enumerate(range(0, len(records), unit_size))
    ]
    encoded: dict[str, list[int]] = {}

    def produce(unit: WorkUnit) -> pd.DataFrame:
        part = records.iloc[list(unit.items)]
        prompt_ids = [encoded.setdefault(p, encode(p)) for p in part["prompt"]]
        completion_ids = [list(map(int, t)) for t in part["token_ids"]]
        empty = [i for i, c in enumerate(completion_ids) if not c]
        if empty:
            raise ValueError(f"rollout {keys[unit.items[empty[0]]]} has no response tokens to score")
        logps = scorer.token_logprobs(prompt_ids, completion_ids)
        padded, mask = pad_logprobs(logps)
        log_ppl = log_perplexity(padded, mask).double().tolist()
        return pd.DataFrame({
            **{c: part[c].to_numpy() for c in SAMPLE_KEY},
            "logps": [lp.float().tolist() for lp in logps], "log_ppl": log_ppl,
            "n_scored": [len(lp) for lp in logps],
        })

    with stage(out, identity, None, store=store):
        run_units(store, units, produce, desc=f"scoring {model}", progress=progress)
    scores = store.read()
    wanted = set(keys)
    scores = scores[[tuple(k) in wanted for k in scores[list(SAMPLE_KEY)].itertuples(index=False)]]
    if len(scores) != len(keys):
        raise RuntimeError(f"{out}: expected {len(keys)} scored rollouts, found {len(scores)}")
    return scores.reset_index(drop=True)

