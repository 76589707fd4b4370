"""Sequence-level knowledge distillation (the paper's KD baseline): SFT on teacher samples.

The teacher answers every training prompt ``kd_samples_per_prompt`` times (workbench's HF sampler,
the training temperature / top-p / top-k, at most ``max_completion_length`` new tokens); TRL's
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

import logging
from typing import Any

from datasets import Dataset

from train.config import ScopeConfig
from train.resources import hub_guard
from workbench.models import SamplingConfig, check_same_vocab
from workbench.records import Problem
from workbench.sampling import sample_and_grade

log = logging.getLogger(__name__)

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


def teacher_samples(cfg: ScopeConfig, tokenizer: Any, dataset: Dataset) -> Dataset:
    """Prompt/completion rows sampled from the teacher, filtered as the module docstring says."""
    from workbench.models.hf import HFBackend

    path = str(cfg.resolved_teacher())
    with hub_guard(f"teacher model {path}"):
        teacher = HFBackend(path, dtype=cfg.teacher_dtype, tokenizer=cfg.teacher_tokenizer,
                            progress=not cfg.disable_tqdm)
    check_same_vocab(tokenizer, teacher.tokenizer)
    sampling = SamplingConfig(
        n=cfg.kd_samples_per_prompt, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or 0,
        max_new_tokens=cfg.max_completion_length, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed,
    )
    prompts = list(dataset["prompt"])
    problems = [Problem(bench, pid, _prompt_text(prompt, tokenizer), answer) for prompt, answer, bench, pid
                in zip(prompts, dataset["answer"], dataset["benchmark"], dataset["problem_id"], strict=True)]
    samples = sample_and_grade(teacher, problems, sampling, prompts=[p.problem for p in problems],
                               grade_workers=cfg.grader_workers, grade_timeout=cfg.grader_timeout)
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
