"""Resumable stages shared by the perplexity analyses: student rollouts with token ids, and scoring.

The corrective and boundary experiments start from the same graded student rollouts and need the
exact token ids the student sampled, because the teacher must score the student's own tokens (a
re-tokenised response is not what the student produced). ``eval.generate`` does not keep token
ids, so the rollout stage here follows its unit layout, seeds and grading rules
(``plan_units``, ``grade_rows``: a truncated sample never counts as solved) and adds a
``token_ids`` column. Every stage writes atomic parquet shards one unit at a time and refuses to
resume a folder made with other settings, so a killed run rerun continues where it stopped and
reproduces the uninterrupted result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from eval.generate import (
    ResumeMismatch, check_resume, grade_rows, model_name, plan_units, render_prompts, run_config, weights_sha256,
)
from workbench.errors import UserError
from workbench.grading import GradeCache
from workbench.models import Backend, SamplingConfig, Scorer
from workbench.perplexity import log_perplexity, pad_logprobs
from workbench.records import SAMPLE_KEY, SAMPLE_SCHEMA, Problem, ShardStore
from workbench.runs import MANIFEST, read_manifest, run_folder

log = logging.getLogger(__name__)

ANALYSIS_KIND = "perplexity-analysis"
"""Marks an analysis run's manifest, so its sample stores are not mistaken for evaluations."""

TOKEN_SAMPLE_SCHEMA = pa.schema(list(SAMPLE_SCHEMA) + [("token_ids", pa.list_(pa.int32()))])

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


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from a hash of ``parts``: the same unit gets the same seed on every rerun."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def check_identity(folder: Path, identity: Mapping[str, Any]) -> None:
    """Refuse to add to a stage folder whose manifest records other settings."""
    if not (folder / MANIFEST).is_file():
        if ShardStore(folder).shards():
            raise ResumeMismatch(f"{folder} holds shards but no {MANIFEST}; use an empty folder")
        return
    previous = read_manifest(folder).get("config", {}).get("identity")
    current = json.loads(json.dumps(identity, default=str))
    if previous != current:
        diffs = [f"{k}: on disk {(previous or {}).get(k)!r}, now {current.get(k)!r}"
                 for k in sorted(set(previous or {}) | set(current)) if (previous or {}).get(k) != current.get(k)]
        raise ResumeMismatch(f"{folder} was made with other settings; use another folder.\n  " + "\n  ".join(diffs))


@dataclass(frozen=True)
class RolloutConfig:
    """The student's graded rollouts that both experiments start from.

    unit_sequences: sequences sampled per ``generate`` call and shard, as in the experiments'
        configs (unit_sequences // n problems per unit); it fixes the unit layout and so the seeds.
    """

    n: int = 4
    temperature: float = 0.6
    max_new_tokens: int = 4096
    seed: int = 0
    unit_sequences: int = 128

    def __post_init__(self) -> None:
        for name in ("n", "max_new_tokens", "unit_sequences"):
            if getattr(self, name) < 1:
                raise UserError(f"rollouts: {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.temperature < float("inf"):
            raise UserError(f"rollouts: temperature must be 0 (greedy) or more, got {self.temperature}")

    def sampling(self) -> SamplingConfig:
        # Untruncated (top_p 1, top_k 0), as the experiments' continuations and fresh samples are by default.
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=1.0, top_k=0,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)

    def items_per_unit(self) -> int:
        return max(1, self.unit_sequences // self.n)


@dataclass(frozen=True)
class WorkUnit:
    """One shard's worth of work: the rows it must produce are named by ``keys``."""

    index: int
    items: tuple[Any, ...]
    keys: tuple[tuple[Hashable, ...], ...]
    seed: int


def run_units(store: ShardStore, units: Sequence[WorkUnit], produce: Callable[[WorkUnit], pd.DataFrame], *,
              desc: str, progress: bool = True) -> None:
    """Produce and append every unit whose keys are not all on disk yet, one atomic shard each.

    Rows already stored are filtered out before appending, so a unit cut differently on a
    rerun can never write a key twice.
    """
    on_disk = store.keys()
    todo = [u for u in units if not all(k in on_disk for k in u.keys)]
    if len(todo) < len(units):
        log.info("%s: %d of %d units already on disk", desc, len(units) - len(todo), len(units))
    for unit in tqdm(todo, desc=desc, unit="unit", disable=not progress):
        rows = produce(unit)
        key = list(store.key)
        fresh = ~pd.Series([tuple(r) in on_disk for r in rows[key].itertuples(index=False)], index=rows.index)
        store.append(rows[fresh])


def sample_rollouts(backend: Backend, problems: Sequence[Problem], sampling: SamplingConfig,
                    out_dir: str | os.PathLike, *, unit_size: int = 8, grade_workers: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """``sampling.n`` graded rollouts per problem with the sampled token ids, resumable.

    Units and seeds are ``eval.generate``'s (``plan_units``), so the rollouts equal what
    ``generate_samples`` would draw; rows carry SAMPLE_SCHEMA columns plus ``token_ids`` and
    ``answer``, in problem order.
    """
    if not problems:
        raise ValueError("no problems to sample")
    out = Path(out_dir)
    prompts = render_prompts(backend, problems)
    units = plan_units(problems, prompts, sampling, unit_size)
    config = run_config(backend, problems, prompts, sampling, unit_size, True, {"token_ids": True})
    check_resume(out, config)
    store = ShardStore(out, TOKEN_SAMPLE_SCHEMA, SAMPLE_KEY)
    answers = {(p.benchmark, p.problem_id): p.answer for p in problems}
    work = [WorkUnit(index, tuple(zip(u.problems, u.prompts)),
                     tuple((p.benchmark, p.problem_id, i) for p in u.problems for i in range(sampling.n)), u.seed)
            for index, u in enumerate(units)]
    cache = GradeCache()

    def produce(unit: WorkUnit) -> pd.DataFrame:
        groups = backend.generate([prompt for _, prompt in unit.items], replace(sampling, seed=unit.seed))
        if len(groups) != len(unit.items) or any(len(g) != sampling.n for g in groups):
            raise RuntimeError(f"backend returned {[len(g) for g in groups]} completions for "
                               f"{len(unit.items)} prompts x n={sampling.n}")
        rows = [
            {"benchmark": p.benchmark, "problem_id": p.problem_id, "sample_idx": i, "prompt": prompt,
             "response": c.text, "n_tokens": c.n_tokens, "finish_reason": c.finish_reason,
             "answer": p.answer, "token_ids": list(c.token_ids)}
            for (p, prompt), group in zip(unit.items, groups) for i, c in enumerate(group)
        ]
        grade_rows(rows, workers=grade_workers, cache=cache, progress=False)
        return pd.DataFrame(rows)

    with run_folder(out, config, sampling.seed):
        run_units(store, work, produce, desc=f"rollouts {model_name(backend)}", progress=progress)
    frame = store.read()
    frame["answer"] = [answers.get(k) for k in zip(frame["benchmark"], frame["problem_id"])]
    frame = frame[frame["answer"].notna()]
    order = {k: i for i, k in enumerate(answers)}
    frame = frame.assign(_pos=[order[k] for k in zip(frame["benchmark"], frame["problem_id"])])
    frame = frame.sort_values(["_pos", "sample_idx"]).drop(columns="_pos").reset_index(drop=True)
    if len(frame) != len(problems) * sampling.n:
        raise RuntimeError(f"{out}: expected {len(problems) * sampling.n} rollouts on disk, found {len(frame)}")
    log.info("%s: %d rollouts, %.1f%% correct", out, len(frame), 100.0 * frame["correct"].mean())
    return frame


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
    check_identity(out, identity)
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

    with run_folder(out, {"identity": identity}, None):
        run_units(store, units, produce, desc=f"scoring {model}", progress=progress)
    scores = store.read()
    wanted = set(keys)
    scores = scores[[tuple(k) in wanted for k in scores[list(SAMPLE_KEY)].itertuples(index=False)]]
    if len(scores) != len(keys):
        raise RuntimeError(f"{out}: expected {len(keys)} scored rollouts, found {len(scores)}")
    return scores.reset_index(drop=True)

