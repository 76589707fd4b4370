"""Sequence-level knowledge distillation (the paper's KD baseline): SFT on teacher samples.

The teacher answers every training prompt ``kd_samples_per_prompt`` times (the training temperature /
top-p / top-k, at most ``max_completion_length`` new tokens), once per run and not on every rank: served
(``teacher_server_url``, one or several replicas) or in-process (workbench's HF sampler), the prompts
cut into units that the processes share out, every finished unit kept under
``<output_dir>/kd_samples/`` so that an interrupted run samples only what is missing. TRL's
SFTTrainer then fits the student to those sequences with completion-only loss. What is kept:

* samples the teacher did not finish (hit the length limit) are dropped: SFT would append EOS
  and teach the student to stop mid-solution;
* wrong samples are kept by default (``kd_keep_incorrect: true``), which is sequence-level KD as
  Kim & Rush define it; ``false`` keeps only the grader-approved ones (rejection-sampled KD). The
  paper does not say which it used.

The SFT run takes its optimisation settings (learning rate, schedule, steps, batch size, seed,
logging, precision) from the same ScopeConfig as the on-policy methods, so baselines differ in the
data they fit and not in the optimiser.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from train.config import ScopeConfig
from train.resources import hub_guard
from workbench.models import SamplingConfig, check_same_vocab
from workbench.records import Problem, ShardStore
from workbench.sampling import sample_and_grade

log = logging.getLogger(__name__)

KD_SAMPLES_DIR = "kd_samples"

# TrainingArguments fields the SFT run copies from the ScopeConfig.
SHARED_TRAINING_FIELDS = (
    "output_dir", "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "max_steps",
    "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed",
    "logging_steps", "logging_first_step", "report_to", "run_name", "save_strategy", "bf16", "fp16",
    "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "optim", "use_cpu", "disable_tqdm",
    "activation_checkpointing", "save_steps", "save_total_limit",
)


def _prompt_text(prompt: Any, tokenizer: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def _teacher(cfg: ScopeConfig, device: str) -> Any:
    """The teacher as a sampler: behind its server (replicas) when teacher_server_url is set, else in-process."""
    if cfg.teacher_server_url:
        from workbench.models.server import ServerBackend

        name = str(cfg.teacher_server_model)
        return ServerBackend(cfg.teacher_server_url, name, tokenizer=cfg.teacher_tokenizer or name,
                             timeout=cfg.teacher_server_timeout, max_retries=cfg.teacher_server_tries - 1,
                             concurrency=cfg.teacher_server_concurrency, progress=not cfg.disable_tqdm)
    from workbench.models.hf import HFBackend

    path = str(cfg.resolved_teacher())
    with hub_guard(f"teacher model {path}"):
        return HFBackend(path, device=device, dtype=cfg.teacher_dtype, tokenizer=cfg.teacher_tokenizer,
                         progress=not cfg.disable_tqdm)


def _unit_seed(seed: int, unit: int) -> int:
    """Each unit of prompts is sampled in one seeded call, so its samples depend on neither the number of
    processes nor on which of them sampled it, nor on an interruption."""
    return seed if unit == 0 else (seed * 1_000_003 + unit) % 2**31


def sample_teacher_units(cfg: ScopeConfig, problems: list[Problem], sampler: Any) -> pd.DataFrame:
    """The teacher's samples of every problem, made once and kept under <output_dir>/kd_samples.

    Problems are cut into units of kd_unit_prompts; process r of W samples units r, r + W, ...; after each
    round the main process gathers the round's samples and appends them to the store, so a run that stops
    keeps every finished round and a rerun (or --resume_from_checkpoint) samples only the units missing.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    store = ShardStore(Path(cfg.output_dir) / KD_SAMPLES_DIR)
    n, size = cfg.kd_samples_per_prompt, cfg.kd_unit_prompts
    units = [problems[i : i + size] for i in range(0, len(problems), size)]
    have = store.read() if store.shards() else None
    done_keys = set() if have is None else set(zip(have["benchmark"], have["problem_id"]))
    todo = [k for k, unit in enumerate(units) if any((p.benchmark, p.problem_id) not in done_keys for p in unit)]
    if len(todo) < len(units):
        log.info("kd: %d of %d units of teacher samples found in %s", len(units) - len(todo), len(units), store.path)
    for start in range(0, len(todo), world):
        mine = todo[start + rank] if start + rank < len(todo) else None
        part: list[dict[str, Any]] = []
        if mine is not None:
            sampling = dataclasses.replace(_sampling(cfg), seed=_unit_seed(cfg.seed, mine))
            frame = sample_and_grade(sampler, units[mine], sampling, prompts=[p.problem for p in units[mine]],
                                     grade_workers=cfg.grader_workers, grade_timeout=cfg.grader_timeout)
            part = frame.to_dict("records")
        parts: list[Any] | None = [None] * world if rank == 0 else None
        if distributed:
            dist.gather_object(part, parts, dst=0)
        else:
            parts = [part]
        if rank == 0:
            store.append([row for got in parts for row in got])
        if distributed:
            dist.barrier()
    frame = store.read()
    order = {(p.benchmark, p.problem_id): i for i, p in enumerate(problems)}
    frame = frame[[key in order for key in zip(frame["benchmark"], frame["problem_id"])]]
    frame = frame.assign(_order=[order[key] for key in zip(frame["benchmark"], frame["problem_id"])])
    frame = frame.sort_values(["_order", "sample_idx"]).drop(columns="_order").reset_index(drop=True)
    if len(frame) != n * len(problems):
        raise RuntimeError(f"kd: {len(frame)} teacher samples for {len(problems)} prompts x {n}")
    return frame


def _sampling(cfg: ScopeConfig) -> SamplingConfig:
    return SamplingConfig(
        n=cfg.kd_samples_per_prompt, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or 0,
        max_new_tokens=cfg.max_completion_length, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed,
    )


def teacher_samples(cfg: ScopeConfig, tokenizer: Any, dataset: Dataset) -> Dataset:
    """Prompt/completion rows sampled from the teacher, filtered as the module docstring says."""
    teacher = _teacher(cfg, str(cfg.device))
    check_same_vocab(tokenizer, teacher.tokenizer)
    prompts = list(dataset["prompt"])
    problems = [Problem(bench, pid, _prompt_text(prompt, tokenizer), answer) for prompt, answer, bench, pid
                in zip(prompts, dataset["answer"], dataset["benchmark"], dataset["problem_id"], strict=True)]
    samples = sample_teacher_units(cfg, problems, teacher)
    n = cfg.kd_samples_per_prompt
    finished = samples["finish_reason"] == "stop"
    keep = finished & (samples["correct"] | cfg.kd_keep_incorrect)
    rows = []
    for i, text in samples.loc[keep, "response"].items():
        prompt = prompts[i // n]  # samples come n per problem, in problem order
        rows.append({"prompt": prompt,
                     "completion": text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]})
    n_total, n_correct, n_truncated = len(samples), int(samples["correct"].sum()), int((~finished).sum())
    log.info("kd: %d teacher samples, %d correct, %d truncated; %d kept for SFT", n_total, n_correct,
             n_truncated, len(rows))
    if not rows:
        raise ValueError("kd: no teacher sample survived the filters; nothing to train on")
    return Dataset.from_list(rows)


def build_kd_trainer(cfg: ScopeConfig, tokenizer: Any, dataset: Dataset) -> Any:
    """TRL SFTTrainer on the teacher's samples, with the run's shared optimisation settings."""
    from trl import SFTConfig, SFTTrainer

    data = teacher_samples(cfg, tokenizer, dataset)
    sft_args = SFTConfig(
        **{name: getattr(cfg, name) for name in SHARED_TRAINING_FIELDS},
        max_length=None, completion_only_loss=True, packing=False,
        model_init_kwargs=cfg.model_init_kwargs,
    )
    from train.checkpoints import ExactResume

    class KDTrainer(ExactResume, SFTTrainer):
        """SFTTrainer whose resumed run ends as the uninterrupted one."""

    return KDTrainer(model=cfg.resolved_student(), args=sft_args, train_dataset=data, processing_class=tokenizer)
