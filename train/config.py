"""One training config for every method, read from a YAML recipe with command-line overrides.

ScopeConfig extends TRL's GRPOConfig, so every TRL option keeps its name and meaning; its three departures from
GRPOConfig and where each rule is checked: docs/training.md.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, get_args

from trl import GRPOConfig, TrlParser

from train import recipe
from train.recipe import (
    CONFIG_FLAG,
    TOY_STUDENT,
    TOY_TEACHER,
    CommandLine,
    check_names,
    check_values,
    split_config_flag,
)
from train.scope import ABLATIONS, Aggregation, LossForm, PathMode, TruncatedRule, WeightConfig, WeightScale
from train.sharding import check_teacher_fits_sharding, sharding_from_environment
from workbench.data import BENCHMARKS, get_spec
from workbench.errors import UserError, did_you_mean
from workbench.layout import METHODS, ROUTED_METHODS, TOY_TIERS

log = logging.getLogger(__name__)

TOY_DATASET = "toy"
TRAIN_SET = get_spec("deepmath")
"""The paper's training data (its registry entry), whose fields and grading rules are the defaults
for hub data."""


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class ScopeConfig(GRPOConfig):
    """GRPOConfig plus the SCOPE workbench's fields (see each field's help)."""

    # ------------------------------------------------------------------------ method
    method: str = field(
        default="scope",
        metadata={"help": "Training method: 'scope' (correctness-routed MLE/OPD with dual-path weights), "
                          "'opd' (uniform on-policy distillation on every rollout), 'grpo' (TRL's GRPO loss on "
                          "the grader's 0/1 reward) or 'kd' (sequence-level KD: SFT on teacher samples).",
                  "choices": list(METHODS)},
    )
    model_name_or_path: str = field(
        default=TOY_STUDENT,
        metadata={"help": f"Student: hub id or local folder; '{TOY_STUDENT}' is the toy world's base student."},
    )
    ablation: str = field(
        default="scope",
        metadata={"help": "Weighting preset from train.scope.ABLATIONS (method scope only).",
                  "choices": list(ABLATIONS)},
    )
    tau: float | None = field(
        default=None, metadata={"help": "Softmax temperature of both paths' weights; None keeps the preset's."}
    )
    student_weight: str | None = field(
        default=None,
        metadata={"help": f"Override the correct path's weight mode, one of {get_args(PathMode)}; None keeps "
                          "the preset's."},
    )
    teacher_weight: str | None = field(
        default=None,
        metadata={"help": f"Override the incorrect path's weight mode, one of {get_args(PathMode)}; None keeps "
                          "the preset's."},
    )
    weight_scale: str | None = field(
        default=None,
        metadata={"help": f"Override the weight scale, one of {get_args(WeightScale)} ('sum1' paper, 'mean1' "
                          "authors' code); None keeps the preset's."},
    )
    loss_aggregation: str = field(
        default="sum",
        metadata={"help": "How tokens and rollouts become one loss (train.scope.scope_objective): 'sum' (the "
                          "paper: per-sequence token sum, weighted sum over rollouts, mean over prompts), "
                          "'seq_mean' (per-sequence token mean instead of sum) or 'token_mean' (token losses summed "
                          "and divided by the response tokens of the whole optimizer step, TRL's 'dapo' "
                          "normalisation). Each divides by a count of the whole step, so the micro-batch layout does "
                          "not change the gradient. The released code's own loss is scope_loss 'authors'.",
                  "choices": list(get_args(Aggregation))},
    )
    scope_loss: str = field(
        default="paper",
        metadata={"help": "The routed loss (methods scope and opd): 'paper' (Eqs. 2-3, aggregated as loss_aggregation "
                          "says) or 'authors' (the released code's, train.scope.authors_objective: -w log pi averaged "
                          "over each micro-batch's correct-path tokens, plus OPD as a PPO loss, clip epsilon and dual "
                          "clip 3, on the advantage w (log pi_T - log pi_old), averaged over each micro-batch's "
                          "tokens; loss_aggregation is not read). The released code's whole setup is --ablation "
                          "authors_code --scope_loss authors.",
                  "choices": list(get_args(LossForm))},
    )
    truncated_rollouts: str = field(
        default="wrong",
        metadata={"help": "A rollout that reached max_completion_length without EOS: 'wrong' (reward 0, so the "
                          "incorrect path, as evaluation counts it) or 'grade' (its text graded like any other, as the "
                          "released code does: a complete box before the cut can make it correct). Every method.",
                  "choices": list(get_args(TruncatedRule))},
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Drop training prompts longer than this many tokens (after the chat template), as "
                          "verl's filter_overlong_prompts does; None keeps all."},
    )

    # ----------------------------------------------------------------------- teacher
    teacher_model: str | None = field(
        default=None,
        metadata={"help": f"Local teacher: hub id or folder, loaded once on the training device; "
                          f"'{TOY_TEACHER}' is the toy teacher. Exclusive with teacher_server_url."},
    )
    teacher_server_url: str | None = field(
        default=None,
        metadata={"help": "Base URL of an OpenAI-compatible vLLM server holding the teacher (scored with prompt "
                          "logprobs), or several replicas of it: comma-separated on the command line, a list in a "
                          "recipe. Requests go round-robin; a replica that stops answering is passed over and "
                          "reported once. The API key is read from $SCOPE_TEACHER_API_KEY."},
    )
    teacher_server_model: str | None = field(
        default=None, metadata={"help": "Model name the teacher server serves (required with teacher_server_url)."}
    )
    teacher_server_timeout: float = field(
        default=300.0,
        metadata={"help": "Seconds a teacher server may take to answer one scoring request before it is tried "
                          "again (a request holds teacher_server_batch_size rollouts)."},
    )
    teacher_server_tries: int = field(
        default=3,
        metadata={"help": "Tries of one teacher request (timeouts, HTTP 408/429/5xx), each on the next replica, "
                          "with backoff 1, 2, 4 ... s between them; an unreachable replica is passed over at once."},
    )
    teacher_server_concurrency: int = field(
        default=4, metadata={"help": "Teacher requests in flight per replica and process."}
    )
    teacher_server_batch_size: int = field(
        default=32,
        metadata={"help": "Rollouts per teacher scoring request (within the server's VLLM_MAX_COMPLETION_PROMPTS)."},
    )
    teacher_tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer to check the teacher's vocabulary against the student's; defaults to "
                          "teacher_model or teacher_server_model."},
    )
    teacher_dtype: str | None = field(
        default=None, metadata={"help": "Local teacher dtype (e.g. 'bfloat16'); None: bf16 on GPU, fp32 on CPU."}
    )
    teacher_on_correct: bool = field(
        default=False,
        metadata={"help": "Also score correct rollouts with the teacher (method scope). The loss never reads "
                          "those log-probs; they add the correct path's teacher PPL to the logs and snapshots "
                          "at the price of teacher work on every rollout instead of the incorrect ones only."},
    )
    teacher_score_tokens: int = field(
        default=16384, metadata={"help": "Padded tokens per local-teacher scoring forward pass."}
    )

    # -------------------------------------------------------------------------- data
    dataset_name: str = field(
        default=TOY_DATASET,
        metadata={"help": f"Training prompts: '{TOY_DATASET}' (toy train split) or a hub dataset id, e.g. "
                          f"{TRAIN_SET.hf_id} ({TRAIN_SET.display}, the paper's)."},
    )
    dataset_config: str | None = field(default=TRAIN_SET.hf_config, metadata={"help": "Hub dataset config name."})
    dataset_split: str = field(default=str(TRAIN_SET.hf_split), metadata={"help": "Hub dataset split."})
    question_field: str = field(default=TRAIN_SET.problem_field,
                                metadata={"help": "Hub dataset field holding the question."})
    answer_field: str = field(default=TRAIN_SET.answer_field, metadata={"help": "Hub dataset field holding the answer."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep this many training prompts (after a seeded shuffle); None: all."}
    )
    grader_benchmark: str = field(
        default=TRAIN_SET.name,
        metadata={"help": "Registered benchmark (workbench/data.py) whose prompt style and grading rules hub data "
                          "takes; toy data takes each tier's own.",
                  "choices": list(BENCHMARKS)},
    )
    toy_tiers: list[str] = field(
        default_factory=lambda: list(TOY_TIERS), metadata={"help": "Toy tiers whose train split is used."}
    )
    toy_problems_per_tier: int = field(default=16, metadata={"help": "Toy training problems drawn per tier."})
    toy_data_seed: int = field(
        default=0, metadata={"help": "Toy problems are drawn with seed toy_data_seed (fixed across run seeds)."}
    )
    grader_workers: int | None = field(
        default=None, metadata={"help": "Grading processes for math-verify (None: min(cpus, 8))."}
    )
    grader_timeout: float = field(default=5.0, metadata={"help": "Seconds of math-verify per answer."})

    # --------------------------------------------------------------------- snapshots
    snapshot_every: int = field(
        default=1,
        metadata={"help": "Write the rollouts' weights every this many generation batches under "
                          "<output_dir>/snapshots (0: never)."},
    )
    snapshot_token_logps: bool = field(
        default=True,
        metadata={"help": "Store per-token student and teacher log-probs in the snapshots (large for long "
                          "completions; the per-rollout log-PPLs are always stored)."},
    )

    # ------------------------------------------------------------------------ held-out
    heldout_every: int = field(
        default=0,
        metadata={"help": "Sample the policy on toy test problems before training and every this many steps, "
                          "logged as heldout/avg@<heldout_samples> (0: never; toy data only)."},
    )
    heldout_problems_per_tier: int = field(default=10, metadata={"help": "Held-out toy test problems per tier."})
    heldout_samples: int = field(default=4, metadata={"help": "Samples per held-out problem."})

    # ----------------------------------------------------------------------------- kd
    kd_samples_per_prompt: int = field(
        default=1, metadata={"help": "Teacher samples per training prompt for method kd."}
    )
    kd_unit_prompts: int = field(
        default=256,
        metadata={"help": "Method kd: prompts per unit of teacher sampling (one seeded call; units are shared out "
                          "over the processes and kept under <output_dir>/kd_samples as they finish)."},
    )
    kd_teacher_engine: str = field(
        default="hf",
        metadata={"help": "Method kd, local teacher: sample with transformers in the training launch ('hf'), or "
                          "with a vLLM engine per GPU in a sampling launch of its own ('vllm': `torchrun "
                          "--nproc_per_node N -m train.kd` with the training arguments, then train).",
                  "choices": ["hf", "vllm"]},
    )
    kd_keep_incorrect: bool = field(
        default=True,
        metadata={"help": "Keep teacher samples the grader marks wrong (plain sequence-level KD). False keeps "
                          "only correct ones (rejection-sampled KD). Truncated samples are always dropped."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.teacher_server_url, (list, tuple)):  # a recipe's list of replicas
            self.teacher_server_url = ",".join(str(u) for u in self.teacher_server_url)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_values(values)
        check_choices(values)
        if self.teacher_server_timeout <= 0:
            raise UserError(f"teacher_server_timeout must be > 0 seconds, got {self.teacher_server_timeout}")
        if self.bf16 is None:
            self.bf16 = not self.fp16 and _bf16_supported()
        if self.teacher_model and self.teacher_server_url:
            raise UserError("set teacher_model (local) or teacher_server_url (served), not both")
        if self.teacher_server_url and not self.teacher_server_model:
            raise UserError("teacher_server_url needs teacher_server_model (the name the server serves)")
        if self.method in ("scope", "opd", "kd") and not (self.teacher_model or self.teacher_server_url):
            raise UserError(f"method {self.method!r} needs a teacher: set teacher_model or teacher_server_url")
        check_teacher_fits_sharding({"teacher_model": self.teacher_model},
                                    sharding_from_environment({"deepspeed": self.deepspeed}))
        if self.heldout_every and self.dataset_name != TOY_DATASET:
            raise UserError("heldout_every evaluates on toy test problems; it needs dataset_name 'toy'")
        unknown = sorted(set(self.toy_tiers) - set(TOY_TIERS))
        if unknown:
            raise UserError(f"unknown toy tiers {unknown}; expected some of {', '.join(TOY_TIERS)}")
        self.weight_config()  # validate the weighting options now, not mid-training
        if self.scope_loss == "authors" and self.loss_aggregation != "sum":
            log.info("scope_loss 'authors' has its own aggregation; loss_aggregation %r is not read",
                     self.loss_aggregation)
        if self.method in ROUTED_METHODS and self.beta != 0.0:
            log.info("beta=%g is GRPO's KL coefficient; method %s has no reference-model KL and ignores it",
                     self.beta, self.method)
            self.beta = 0.0
        if self.num_generations == 1 and self.method in ROUTED_METHODS:
            self._post_init_single_rollout()
        else:
            super().__post_init__()

    def _post_init_single_rollout(self) -> None:
        """Run GRPOConfig's checks with a stand-in group size, then restore one rollout per prompt.

        The stand-in is the per-device batch (it divides every generation batch, which is a multiple
        of it), or 2 when that is 1; only GRPOConfig's "at least 2 generations" rule is bypassed.
        """
        stand_in = max(2, self.per_device_train_batch_size)
        if self.num_generations_eval is None:
            self.num_generations_eval = 1
        self.num_generations = stand_in
        try:
            super().__post_init__()
        finally:
            self.num_generations = 1

    def weight_config(self) -> WeightConfig:
        """The SCOPE weighting: the ablation preset with any per-field overrides applied."""
        return weighting(self.ablation, {name: getattr(self, name) for name in WEIGHT_FIELDS})

    def resolved_student(self) -> str:
        return _resolve_toy(self.model_name_or_path)

    def resolved_teacher(self) -> str | None:
        return _resolve_toy(self.teacher_model) if self.teacher_model else None


WEIGHT_FIELDS = {"tau": "tau", "student_weight": "student_mode", "teacher_weight": "teacher_mode",
                 "weight_scale": "scale"}
"""ScopeConfig's weighting overrides and the WeightConfig field each sets."""


def weighting(ablation: str, overrides: Mapping[str, Any]) -> WeightConfig:
    """The ablation preset with the overrides that are set (not None) applied. WeightConfig judges each
    value; the message names the ScopeConfig field that set it."""
    cfg = ABLATIONS[ablation]
    for name, attr in WEIGHT_FIELDS.items():
        value = overrides.get(name)
        if value is None:
            continue
        try:
            cfg = dataclasses.replace(cfg, **{attr: value})
        except UserError as exc:
            raise UserError(str(exc) if name == attr else f"{name}: {exc}") from None
    return cfg


def _resolve_toy(name: str) -> str:
    """Map the toy sentinels to the committed checkpoints, so recipes carry no absolute paths."""
    if name in (TOY_STUDENT, TOY_TEACHER):
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        path = STUDENT_DIR if name == TOY_STUDENT else TEACHER_DIR
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{name}: no toy checkpoint at {path}; build it with make toy-models")
        return str(path)
    return name


def _usage_error(message: str) -> NoReturn:
    raise UserError(message)


def config_parser(config_class: type[ScopeConfig] | None = None) -> TrlParser:
    """TRL's parser for ScopeConfig (or a subclass), whose mistakes raise UserError instead of printing
    its whole usage."""
    parser = TrlParser((config_class or ScopeConfig,), prog="python -m train.cli")
    parser.error = _usage_error  # type: ignore[method-assign]
    return parser


@functools.cache
def config_options(config_class: type[ScopeConfig] | None = None) -> tuple[frozenset[str], frozenset[str]]:
    """(field names, every ``--`` option string without its dashes) of ScopeConfig (or a subclass) and
    its parser: the dataclass's fields, and the options TRL's parser derives from them."""
    config_class = config_class or ScopeConfig
    fields = frozenset(f.name for f in dataclasses.fields(config_class) if f.init)
    options = frozenset(s[2:] for a in config_parser(config_class)._actions for s in a.option_strings
                        if s.startswith("--"))
    return fields, options - {"help"}


def named_choices() -> dict[str, tuple[str, ...]]:
    """The names each of ScopeConfig's own name-valued fields accepts: its ``choices``."""
    own = set(ScopeConfig.__dataclass_fields__) - set(GRPOConfig.__dataclass_fields__)
    return {f.name: tuple(f.metadata["choices"]) for f in dataclasses.fields(ScopeConfig)
            if f.name in own and "choices" in f.metadata}


def check_choices(values: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> None:
    """Refuse a name a field does not take, suggesting the closest one it does."""
    for name, allowed in named_choices().items():
        value = values.get(name)
        if value is not None and value not in allowed:
            where = f" ({origin[name]})" if origin and name in origin else ""
            raise UserError(f"{name} {value!r}{where} is not one of {', '.join(allowed)}"
                            f"{did_you_mean(str(value), allowed)}")


def _check_weighting(values: Mapping[str, Any], origin: Mapping[str, str]) -> None:
    """The weighting a raw command line asks for, judged as ScopeConfig will judge it."""
    ablation = values.get("ablation", ScopeConfig.ablation)
    if ablation not in ABLATIONS:
        return  # check_choices has said so
    for name in WEIGHT_FIELDS:
        value = values.get(name)
        if value in (None, "None", "none", "null"):
            continue
        if name == "tau" and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                continue  # not a number: the parser says so
        try:
            weighting(ablation, {name: value})
        except UserError as exc:
            raise UserError(f"{exc} ({origin[name]})" if name in origin else str(exc)) from None


def check_command_line(argv: Sequence[str]) -> CommandLine:
    """Read and check a training command line before any model loads: its values one at a time
    (train.recipe, before TRL was imported), its names against ScopeConfig's fields and options, the
    names its fields take, and the weighting."""
    line = recipe.check_command_line(argv)
    check_names(line, *config_options())
    check_choices(line.values, line.origin)
    _check_weighting(line.values, line.origin)
    return line


def parse_config(argv: Sequence[str] | None = None) -> ScopeConfig:
    """``--config recipe.yaml`` plus ``--field value`` overrides -> a validated ScopeConfig.

    Everything a user can get wrong raises UserError: :func:`check_command_line` first, then the
    parser's and the configs' own (TRL's ValueErrors included, since at this point they can only be
    about the values given).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    check_command_line(argv)
    recipe, rest = split_config_flag(argv)
    args = ([CONFIG_FLAG, str(recipe)] if recipe is not None else []) + rest
    try:
        (config,) = config_parser().parse_args_and_config(args=args)
    except UserError:
        raise
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    return config
