"""Build the toy world's committed assets: tokenizer, teacher and student, bit for bit.

    python scripts/build_toy.py            # rebuild into workbench/toy/assets
    python scripts/build_toy.py --out DIR  # build elsewhere
    python scripts/build_toy.py --check    # rebuild into a temporary folder and compare bytes

Fixed seeds and deterministic algorithms make two builds identical; the student is stopped mid-learning so
on-policy training has room to improve it. How both train: docs/toy-world.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
import trl
from datasets import Dataset
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
from trl import SFTConfig, SFTTrainer

from workbench.errors import command_line
from workbench.layout import REPO_ROOT, TOY_ASSETS, TOY_MAX_NEW_TOKENS
from workbench.models import SamplingConfig
from workbench.models.hf import HFBackend
from workbench.records import Problem
from workbench.runs import git_state
from workbench.sampling import accuracy, sample_and_grade
from workbench.toy.task import (
    STYLES,
    TIERS,
    corrected_solution,
    hunch_solution,
    sample_prompts,
    solution_steps,
    styled_solution,
    toy_problems,
    trial_solution,
)
from workbench.toy.tokenizer import build_tokenizer

logger = logging.getLogger("build_toy")

# One thread: these models are too small to gain from more, a single thread cannot be slowed by
# its sibling being descheduled on a busy machine, and the result cannot depend on how a kernel
# splits work between threads.
NUM_THREADS = 1
# Files whose bytes a rebuild must reproduce (build_info.json holds wall times, so it cannot).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
REPRODUCIBLE_FILES = ("model.safetensors", "config.json", "generation_config.json", *TOKENIZER_FILES)


@dataclass(frozen=True)
class ModelSpec:
    """Shape of a Llama-style model; tiny enough to train and sample on two CPU cores."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    head_dim: int = 32
    """Set apart from ``hidden_size / num_heads`` because vLLM's CPU attention kernels take head
    sizes 32, 64, 80, 96, ... only; 32 keeps both toy models loadable by the vLLM backend."""


@dataclass(frozen=True)
class TrainSpec:
    """One SFT run: every example is seen at most once, drawn from the train split with a tier mix.

    With ``stop_at_accuracy`` set, ``max_steps`` is only a ceiling: training stops at the first
    check (every ``check_every`` steps) where the mean sampled accuracy over the tiers, on
    problems from the train split, reaches the target. A skill that appears abruptly (here,
    copying operands out of the prompt) makes a fixed step count a knife edge, while the
    criterion lands on the intended level of skill.
    """

    max_steps: int
    batch_size: int
    learning_rate: float
    tier_weights: tuple[float, ...]
    seed: int
    lr_scheduler: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.01
    stop_at_accuracy: float | None = None
    check_every: int = 25
    style_weights: tuple[float, ...] = (1.0, 0.0, 0.0)
    """How often each of ``task.STYLES`` writes a training response (or a step, see below)."""
    style_per_step: bool = False
    """Draw the style for every step rather than once a response: a writer with no fixed habit,
    whose rare forms stay isolated slips of style instead of whole responses."""
    correction_fraction: float = 0.0
    """Share of rows that teach self-correction: the prompt carries a flawed start
    (``task.corrected_solution``) and the completion is the correction marker and a fresh solution."""
    trial_fraction: float = 0.0
    """Share of rows written by trial and check (``task.trial_solution``): the spread dial's knob.
    Drawn from a random stream of its own, so 0 writes exactly the committed world's rows."""
    trials_per_step: int = 0
    """Rejected candidates a trial-and-check step writes before its result (the dial's other knob)."""
    trials_written: bool = False
    """Trial-and-check steps keep their operation in front of the candidates (``3+5=728;``)."""
    hunch_fraction: float = 0.0
    """Share of rows that guess before they derive (``task.hunch_solution``), from the trial rows' random stream."""
    hunches: int = 0
    """Bare guesses a hunch row writes before its derivation (the knob of the hunch worlds)."""
    init: str | None = None
    """Start from this committed checkpoint (a folder under the repository) instead of fresh weights."""


# The teacher converges (95-100% on every tier with this schedule); long chains get more weight
# because they are where a model fails last. It writes almost always in the full style, with an
# isolated step in another form now and then (``style_per_step``), so a student response written
# wholly in another style reads as implausible to it: the teacher-perplexity spread SCOPE's
# incorrect-path weights feed on. A quarter of its rows teach it to start again after a flawed
# start, so that it can recover from a wrong student prefix; it learns the habit only weakly (it
# starts again after about 7% of flawed student prefixes and 1-2% of clean ones: checking every
# written step against the prompt is more than this teacher learns in this schedule).
TEACHER_MODEL = ModelSpec(hidden_size=96, num_layers=3, num_heads=3, intermediate_size=384)
TEACHER_TRAIN = TrainSpec(
    max_steps=600,
    batch_size=64,
    learning_rate=2e-3,
    tier_weights=(1, 1, 1, 2, 2, 3),
    seed=1,
    style_weights=(0.96, 0.03, 0.01),
    style_per_step=True,
    correction_fraction=0.25,
)
# The student has the capacity to solve every tier but stops in the middle of learning to copy
# operands from the prompt: a snapshot of a run at constant learning rate, so further training keeps
# improving it. It writes each response wholly in one of the three styles, equally often, and learns
# them unevenly (the full style best), so its correct rollouts of one problem differ in its own
# perplexity and its wrong ones in the teacher's. Long chains weigh more in its data, so that when
# the stopping rule fires every tier from toy-2 to toy-6 sits between 20% and 70%.
STUDENT_MODEL = ModelSpec(hidden_size=48, num_layers=2, num_heads=2, intermediate_size=192)
STUDENT_TRAIN = TrainSpec(
    max_steps=1500,
    batch_size=64,
    learning_rate=2e-3,
    tier_weights=(1, 1, 1, 2, 3, 5),
    seed=2,
    lr_scheduler="constant_with_warmup",
    stop_at_accuracy=0.45,
    style_weights=(0.34, 0.33, 0.33),
)
# Problems the stopping rule measures: from the train split, so the test split stays unseen by
# every choice the build makes.
STOP_CHECK_PROBLEMS = 16
STOP_CHECK_SAMPLES = 4

# The spread dial: worlds that differ from the committed one only in how the student was taught to
# write. The committed student is trained further on the committed student's data mix in which a share
# of the responses are written by trial and check (``task.trial_solution``), so some of its correct
# rollouts wander through rejected candidates and others go straight, and the student-perplexity spread
# among correct rollouts (what SCOPE's MLE-path weights weigh) grows with the candidates per step. The
# teacher and tokenizer are the committed ones. Training from scratch with trial rows was tried first:
# such a student learns to copy operands much later (mean accuracy 0.08-0.15 after 850 steps, where the
# committed one reached 0.45 at 1350), which made each build 40+ minutes on shared cores. Going on from
# the committed student costs a few minutes, and the extra steps also raise its accuracy a little (each
# world's build_info.json and spread report give it). "low" is the committed world.
DIAL_FINETUNE = dataclasses.replace(STUDENT_TRAIN, max_steps=300, learning_rate=1e-3, warmup_steps=10,
                                    stop_at_accuracy=None, seed=3, init="workbench/toy/assets/student")
DIAL_WORLDS: dict[str, TrainSpec | None] = {
    "low": None,
    "mid": dataclasses.replace(DIAL_FINETUNE, trial_fraction=0.5, trials_per_step=4, trials_written=True),
    "high": dataclasses.replace(DIAL_FINETUNE, trial_fraction=0.5, trials_per_step=7, trials_written=True),
    "hunch12": dataclasses.replace(DIAL_FINETUNE, hunch_fraction=0.5, hunches=12),
    "hunch36": dataclasses.replace(DIAL_FINETUNE, hunch_fraction=0.5, hunches=36),
}


def make_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model whose weights depend only on ``spec`` and ``seed``."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=tokenizer.model_max_length,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def training_rows(spec: TrainSpec) -> Dataset:
    """Prompt/completion rows from the train split: a right response in the spec's styles, or, for
    a correction row, the prompt with a flawed start and the marker plus a fresh solution."""
    if len(spec.tier_weights) != len(TIERS):
        raise ValueError(f"tier_weights needs one weight per tier ({len(TIERS)})")
    rng = random.Random(f"toy-train/{spec.seed}")
    total = spec.max_steps * spec.batch_size
    weight_sum = sum(spec.tier_weights)
    prompts: list[str] = []
    for tier, weight in zip(TIERS, spec.tier_weights):
        prompts += sample_prompts(tier, round(total * weight / weight_sum), "train", rng)
    rng.shuffle(prompts)
    if len(spec.style_weights) != len(STYLES):
        raise ValueError(f"style_weights needs one weight per style {STYLES}")
    rows: dict[str, list[str]] = {"prompt": [], "completion": []}
    trial_rng = random.Random(f"toy-trials/{spec.seed}")
    for prompt in prompts:
        if spec.trial_fraction > 0 and trial_rng.random() < spec.trial_fraction:
            rows["prompt"].append(prompt)
            rows["completion"].append(trial_solution(prompt, spec.trials_per_step, trial_rng, spec.trials_written))
            continue
        n_steps = len(solution_steps(prompt))
        style = (rng.choices(STYLES, weights=spec.style_weights, k=n_steps) if spec.style_per_step
                 else rng.choices(STYLES, weights=spec.style_weights)[0])
        if rng.random() < spec.correction_fraction:
            prefix, completion = corrected_solution(prompt, style, rng)
            prompt += prefix
        elif spec.hunch_fraction > 0 and trial_rng.random() < spec.hunch_fraction:
            completion = hunch_solution(prompt, spec.hunches, style, trial_rng)
        else:
            completion = styled_solution(prompt, style, rng)
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
    return Dataset.from_dict(rows)


def tier_problems(tier: str, n: int, split: str = "test", seed: int = 0) -> list[Problem]:
    """``n`` problems of one tier and split, as the workbench's problem records."""
    return [Problem(tier, row["problem_id"], row["problem"], row["answer"])
            for row in toy_problems(tier, n, split=split, seed=seed)]


def sample_tier(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    problems: list[Problem],
    n_samples: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """``n_samples`` sampled and graded responses per problem of one tier (a build-time measure), at
    the protocol's temperature, untruncated.

    All prompts of a tier have the same length, so one unpadded batch holds them all; the batch
    is part of the random stream, so it stays one batch whatever the backend's default.
    """
    if len({len(p.problem) for p in problems}) != 1:
        raise ValueError("sample_tier expects prompts of one length (one tier)")
    model.eval()
    backend = HFBackend.wrap(model, tokenizer, max_batch_sequences=len(problems) * n_samples)
    sampling = SamplingConfig.untruncated(n=n_samples, max_new_tokens=TOY_MAX_NEW_TOKENS, seed=seed)
    return sample_and_grade(backend, problems, sampling)


def evaluate(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, n_problems: int, n_samples: int = 8
) -> dict[str, dict[str, float]]:
    """Per-tier mean accuracy and fraction of groups that mix right and wrong answers."""
    report = {}
    for tier in TIERS:
        frame = sample_tier(model, tokenizer, tier_problems(tier, n_problems), n_samples)
        hits = frame.groupby("problem_id", sort=False)["correct"].sum()
        report[tier] = {
            "accuracy": round(accuracy(frame), 4),
            "mixed_groups": round(float(((hits > 0) & (hits < n_samples)).mean()), 4),
        }
    return report


@contextmanager
def private_rng() -> Iterator[None]:
    """Sampling reseeds torch's, numpy's and Python's generators; all three are put back afterwards,
    so measuring never changes what training does next."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


class StopAtAccuracy(TrainerCallback):
    """Stop SFT once the model's mean sampled accuracy over the tiers reaches a target."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast, target: float, every: int, seed: int) -> None:
        self.tokenizer, self.target, self.every = tokenizer, target, every
        self.problems = [tier_problems(tier, STOP_CHECK_PROBLEMS, split="train", seed=seed) for tier in TIERS]
        self.history: list[tuple[int, float]] = []
        self.reached = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.every:
            return control
        with private_rng():
            frames = [sample_tier(model, self.tokenizer, problems, STOP_CHECK_SAMPLES, seed=step)
                      for problems in self.problems]
        model.train()
        score = accuracy(pd.concat(frames, ignore_index=True))
        self.history.append((step, round(score, 4)))
        logger.info("step %d: mean sampled accuracy %.3f (target %.2f)", step, score, self.target)
        if score >= self.target:
            self.reached = True
            control.should_training_stop = True
        return control


def train_model(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, spec: TrainSpec, rows: Dataset, work_dir: Path
) -> dict:
    """Run one deterministic SFT pass; return its final metrics, steps taken and stop checks."""
    args = SFTConfig(
        output_dir=str(work_dir),
        max_steps=spec.max_steps,
        per_device_train_batch_size=spec.batch_size,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        warmup_steps=spec.warmup_steps,
        weight_decay=spec.weight_decay,
        seed=spec.seed,
        data_seed=spec.seed,
        full_determinism=True,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        max_length=tokenizer.model_max_length,
        completion_only_loss=True,
    )
    stopper = None
    if spec.stop_at_accuracy is not None:
        stopper = StopAtAccuracy(tokenizer, spec.stop_at_accuracy, spec.check_every, seed=spec.seed)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        processing_class=tokenizer,
        callbacks=[stopper] if stopper else None,
    )
    result = trainer.train()
    if stopper is not None and not stopper.reached:
        logger.warning("accuracy never reached %.2f; trained the full %d steps", spec.stop_at_accuracy, spec.max_steps)
    return {
        **result.metrics,
        "steps": trainer.state.global_step,
        "stop_checks": stopper.history if stopper else [],
    }


def save_model(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """Save like a hub checkpoint: safetensors weights, config, generation config and tokenizer."""
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=TOY_MAX_NEW_TOKENS,
    )
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.use_cache = True  # SFTTrainer switches it off for training
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out_dir: Path, n_eval_problems: int = 50, run_eval: bool = True,
          student_train: TrainSpec = STUDENT_TRAIN, teacher: bool = True) -> dict:
    """Build tokenizer, teacher and student into ``out_dir`` and return the build record; without
    ``teacher`` only the student (a dial world's, whose teacher is the committed one)."""
    torch.set_num_threads(NUM_THREADS)
    # Deterministic mode also fills every fresh allocation with NaN to expose reads of
    # uninitialised memory; that debugging aid, not the training, dominated a step here (6x slower)
    # and has no effect on the values computed.
    torch.utils.deterministic.fill_uninitialized_memory = False
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(out_dir / "tokenizer")
    info: dict = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "threads": NUM_THREADS,
        "command": command_line(),
        "git": git_state(),
        "models": {},
    }
    total_start = time.perf_counter()
    models = [("teacher", TEACHER_MODEL, TEACHER_TRAIN)] if teacher else []
    for name, model_spec, train_spec in (*models, ("student", STUDENT_MODEL, student_train)):
        logger.info("training the %s", name)
        start, cpu_start = time.perf_counter(), time.process_time()
        if train_spec.init:
            torch.manual_seed(train_spec.seed)
            model = LlamaForCausalLM.from_pretrained(REPO_ROOT / train_spec.init)
        else:
            model = make_model(model_spec, tokenizer, train_spec.seed)
        with tempfile.TemporaryDirectory() as work:
            metrics = train_model(model, tokenizer, train_spec, training_rows(train_spec), Path(work))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        save_model(model, tokenizer, out_dir / name)
        record = {
            "model": dataclasses.asdict(model_spec),
            "train": dataclasses.asdict(train_spec),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu_seconds, 1),
            "train_loss": round(metrics.get("train_loss", float("nan")), 4),
            "steps": metrics["steps"],
            "stop_checks": metrics["stop_checks"],
            "safetensors_bytes": (out_dir / name / "model.safetensors").stat().st_size,
            "sha256": {f: sha256_of(out_dir / name / f) for f in REPRODUCIBLE_FILES},
        }
        if run_eval:
            logger.info("evaluating the %s", name)
            record["eval"] = evaluate(model, tokenizer, n_eval_problems)
            logger.info("%s: %s", name, record["eval"])
        info["models"][name] = record
    info["total_seconds"] = round(time.perf_counter() - total_start, 1)
    info["eval_protocol"] = {"temperature": 0.6, "samples": 8, "problems_per_tier": n_eval_problems, "split": "test"}
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def check(reference_dir: Path) -> bool:
    """Rebuild into a temporary folder and compare every reproducible file's bytes."""
    files = [f"{name}/{f}" for name in ("teacher", "student") for f in REPRODUCIBLE_FILES]
    files += [f"tokenizer/{f}" for f in TOKENIZER_FILES]
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), run_eval=False)
        same = True
        for f in files:
            ours, theirs = sha256_of(Path(tmp) / f), sha256_of(reference_dir / f)
            if ours != theirs:
                logger.error("%s differs: rebuilt %s, committed %s", f, ours, theirs)
                same = False
            else:
                logger.info("%s identical (sha256 %s)", f, ours)
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TOY_ASSETS, help="where to write the assets")
    parser.add_argument(
        "--check", action="store_true", help="rebuild in a temporary folder and compare with --out byte for byte"
    )
    parser.add_argument("--eval-problems", type=int, default=50, help="test problems per tier for build_info.json")
    parser.add_argument("--dial", choices=[name for name, spec in DIAL_WORLDS.items() if spec is not None],
                        help="build only the student of this spread-dial world (into --out; the teacher is the "
                             "committed one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("workbench.grading").setLevel(logging.WARNING)  # a batch summary per accuracy check
    if args.check:
        return 0 if check(args.out) else 1
    if args.dial:
        build(args.out, n_eval_problems=args.eval_problems, student_train=DIAL_WORLDS[args.dial], teacher=False)
        return 0
    build(args.out, n_eval_problems=args.eval_problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
