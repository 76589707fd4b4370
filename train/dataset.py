"""Training prompts as the dataset TRL's trainers read: prompt, answer, benchmark, problem_id.

Prompts follow workbench.prompts in the prompt style of each row's registered benchmark, so
training asks exactly the question evaluation asks. With a chat template the prompt is a one-turn
conversation and TRL applies the template (so special tokens such as BOS are written once, by the
template); without one (the toy models) it is plain text. The answer and benchmark columns travel
with each row to the reward function, which grades with the shared grader under that benchmark's
rules: each toy tier's own, ``grader_benchmark``'s for hub data.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from datasets import Dataset

from train.config import TOY_DATASET, ScopeConfig
from train.resources import ResourceUnavailable, hub_guard
from workbench.data import get_spec, load_benchmark
from workbench.prompts import PromptStyle, question_text

log = logging.getLogger(__name__)


def _prompt(question: str, tokenizer: Any, style: PromptStyle) -> Any:
    text = question_text(question, style)
    if style == "raw" or not getattr(tokenizer, "chat_template", None):
        return text
    return [{"role": "user", "content": text}]


def _toy_rows(cfg: ScopeConfig) -> list[dict[str, Any]]:
    rows = [
        {"question": p.problem, "answer": p.answer, "benchmark": p.benchmark, "problem_id": p.problem_id}
        for tier in cfg.toy_tiers
        for p in load_benchmark(tier, toy_size=cfg.toy_problems_per_tier, seed=cfg.toy_data_seed, toy_split="train")
    ]
    # Interleave tiers so every batch mixes difficulties, whatever the sampler does.
    random.Random(cfg.toy_data_seed).shuffle(rows)
    return rows


def _hub_rows(cfg: ScopeConfig) -> list[dict[str, Any]]:
    from datasets import load_dataset

    with hub_guard(f"training data {cfg.dataset_name}"):
        data = load_dataset(cfg.dataset_name, cfg.dataset_config, split=cfg.dataset_split)
    for name in (cfg.question_field, cfg.answer_field):
        if name not in data.column_names:
            raise ResourceUnavailable(
                f"{cfg.dataset_name}[{cfg.dataset_split}] has no field {name!r}; fields: {data.column_names}"
            )
    if cfg.max_train_samples is not None:
        data = data.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(data))))
    return [
        {"question": str(row[cfg.question_field]), "answer": str(row[cfg.answer_field]),
         "benchmark": cfg.grader_benchmark, "problem_id": f"{cfg.dataset_name}/{i}"}
        for i, row in enumerate(data)
    ]


def build_train_dataset(cfg: ScopeConfig, tokenizer: Any) -> Dataset:
    """The training prompts of a config, rendered for ``tokenizer`` and length-filtered."""
    rows = _toy_rows(cfg) if cfg.dataset_name == TOY_DATASET else _hub_rows(cfg)
    records = [
        {"prompt": _prompt(r["question"], tokenizer, get_spec(r["benchmark"]).prompt_style), "answer": r["answer"],
         "benchmark": r["benchmark"], "problem_id": r["problem_id"]}
        for r in rows
    ]
    if cfg.max_prompt_length is not None:
        kept = [r for r in records if _prompt_tokens(r["prompt"], tokenizer) <= cfg.max_prompt_length]
        if len(kept) < len(records):
            log.info("dropped %d of %d prompts longer than %d tokens", len(records) - len(kept), len(records),
                     cfg.max_prompt_length)
        records = kept
    if not records:
        raise ValueError(f"no training prompts left from {cfg.dataset_name!r}")
    return Dataset.from_list(records)


def _prompt_tokens(prompt: Any, tokenizer: Any) -> int:
    if isinstance(prompt, str):
        return len(tokenizer(prompt)["input_ids"])
    encoded = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    return len(encoded["input_ids"])


def load_student_tokenizer(cfg: ScopeConfig) -> Any:
    """The student's tokenizer, left-padded for generation as TRL expects; also probes availability."""
    from transformers import AutoConfig, AutoTokenizer

    name = cfg.resolved_student()
    with hub_guard(f"student model {name}"):
        AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left", truncation_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
