"""A training command line read as data, and the checks of one value at a time, before TRL is imported.

Importing TRL pulls in transformers and torch: seconds on a fast machine, tens of seconds on a busy
one. So the training command line first reads the YAML recipe and the ``--field value`` flags as
plain data and checks what a single value can get wrong: a batch size or group size that is not
positive, a real number out of range, a temperature that is not positive, a model folder that does
not exist. Which names exist is the config classes' to say: train.config imports them and calls
:func:`check_names` with their fields (``dataclasses.fields``) and their parser's options. Checks
that relate fields to each other stay in ``ScopeConfig.__post_init__``, which also runs
:func:`check_values`, so a config built in a notebook gets the same messages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import FieldError, UserError, check_model_name, did_you_mean

CONFIG_FLAG = "--config"
TOY_STUDENT = "toy:student"
TOY_TEACHER = "toy:teacher"
MODEL_FIELDS = ("model_name_or_path", "teacher_model", "teacher_tokenizer")
# Counts that must be >= 1 when set, and what each counts (the message says it).
POSITIVE_COUNTS = {
    "num_generations": "rollouts per prompt",
    "num_generations_eval": "rollouts per prompt in evaluation",
    "per_device_train_batch_size": "rollouts per device and micro-batch",
    "per_device_eval_batch_size": "rollouts per device and evaluation batch",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "generation_batch_size": "rollouts generated at once",
    "steps_per_generation": "optimizer steps per generation batch",
    "num_iterations": "updates per generation batch",
    "max_completion_length": "new tokens per rollout",
    "max_prompt_length": "prompt tokens",
    "max_train_samples": "training prompts",
    "teacher_score_tokens": "tokens per teacher scoring pass",
    "teacher_server_tries": "tries of one teacher request",
    "teacher_server_concurrency": "teacher requests in flight per replica",
    "teacher_server_batch_size": "rollouts per teacher request",
    "toy_problems_per_tier": "toy training problems per tier",
    "heldout_problems_per_tier": "held-out toy problems per tier",
    "heldout_samples": "samples per held-out problem",
    "kd_samples_per_prompt": "teacher samples per prompt",
    "kd_unit_prompts": "prompts per unit of teacher sampling",
}
# Counts where 0 means "never" but a negative number means nothing.
NON_NEGATIVE_COUNTS = {"snapshot_every": "generation batches between weight snapshots",
                       "heldout_every": "steps between held-out evaluations"}
_NULLS = (None, "None", "none", "null")

# Real-valued fields and the range a run can use: (low, low allowed, high, high allowed, meaning). A
# NaN or infinite value is never allowed: inf as a learning rate turns the weights into NaN in one step.
INF = math.inf
REAL_RANGES = {
    "learning_rate": (0.0, False, INF, False, "the optimizer's step size"),
    "weight_decay": (0.0, True, INF, False, "AdamW's decay"),
    "adam_beta1": (0.0, True, 1.0, False, "Adam's first-moment decay"),
    "adam_beta2": (0.0, True, 1.0, False, "Adam's second-moment decay"),
    "adam_epsilon": (0.0, False, INF, False, "Adam's denominator floor"),
    "max_grad_norm": (0.0, True, INF, False, "gradient clipping; 0 turns it off"),
    "num_train_epochs": (0.0, False, INF, False, "passes over the prompts"),
    "beta": (0.0, True, INF, False, "GRPO's KL coefficient"),
    "epsilon": (0.0, True, INF, False, "the ratio clip"),
    "epsilon_high": (0.0, True, INF, False, "the upper ratio clip"),
    "min_p": (0.0, True, 1.0, True, "min-p sampling floor"),
}
SAMPLING_RULES = ("top_p", "repetition_penalty")
"""Rollout sampling values whose rules are the sampling type's (workbench.models.SamplingConfig); the
temperature has a training rule of its own (it must be > 0: rollouts are scored at it)."""
GROUP_METHODS = ("scope",)
"""Methods whose weights are a softmax inside each prompt's group of rollouts: with one rollout a
prompt every weight is exactly 1, and the run would be plain OPD/MLE labelled scope."""


@dataclass
class CommandLine:
    """A training command line read as data: the recipe's values, then the flags over them."""

    recipe: Path | None
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # field -> where its value came from


def split_config_flag(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """The recipe path given with ``--config PATH`` or ``--config=PATH``, and the other arguments."""
    rest = list(argv)
    recipe = None
    for i, token in enumerate(rest):
        if token == CONFIG_FLAG or token.startswith(CONFIG_FLAG + "="):
            if token == CONFIG_FLAG:
                if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
                    raise UserError("--config needs a recipe file, e.g. --config train/recipes/toy_scope.yaml")
                recipe, rest = Path(rest[i + 1]), rest[:i] + rest[i + 2:]
            else:
                recipe, rest = Path(token.split("=", 1)[1]), rest[:i] + rest[i + 1:]
            break
    if any(t == CONFIG_FLAG or t.startswith(CONFIG_FLAG + "=") for t in rest):
        raise UserError("--config is given twice; give one recipe and override its fields with --field value")
    return recipe, rest


def _read_recipe(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"recipe {path} not found (the recipes shipped are in train/recipes/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"recipe {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of field: value lines")
    return data


def read_command_line(argv: Sequence[str]) -> CommandLine:
    """The recipe and the flags as data (names as given: :func:`check_names` judges them); stray words
    raise UserError."""
    recipe, rest = split_config_flag(argv)
    line = CommandLine(recipe)
    if recipe is not None:
        for key, value in _read_recipe(recipe).items():
            line.values[key], line.origin[key] = value, f"recipe {recipe}"
    i = 0
    while i < len(rest):
        token = rest[i]
        if not token.startswith("--") or token == "--":
            raise UserError(f"unexpected argument {token!r}: set fields as --field value (see --help)")
        name, has_inline, inline = token[2:].partition("=")
        values = [inline] if has_inline else []
        i += 1
        while not has_inline and i < len(rest) and not rest[i].startswith("--"):
            values.append(rest[i])
            i += 1
        key = name.replace("-", "_")
        line.values[key] = values[0] if len(values) == 1 else values
        line.origin[key] = f"--{name}"
    return line


def check_names(line: CommandLine, fields: Iterable[str], options: Iterable[str]) -> None:
    """Refuse a recipe field or option the config does not have, naming the closest real one, and turn a
    ``--no_FIELD`` switch into ``FIELD: false``. ``fields``: the config's field names; ``options``: its
    parser's option strings without the dashes (train.config.config_options gives both)."""
    fields, options = frozenset(fields), frozenset(options)
    recipe_keys = [k for k, where in line.origin.items() if not where.startswith("--")]
    unknown = [k for k in recipe_keys if k not in fields and k != "env"]
    if unknown:
        raise UserError(f"recipe {line.recipe}: " + "; ".join(
            f"unknown field {k!r}{did_you_mean(str(k), fields)}" for k in unknown))
    for key, where in list(line.origin.items()):
        if not where.startswith("--"):
            continue
        name = where[2:]
        if name not in options:
            hint = did_you_mean(name, options, fmt="--{}") or "; python -m train.cli --help-all lists every field"
            raise UserError(f"unknown option --{name}{hint}")
        if key.startswith("no_") and key not in fields:  # a --no_FIELD switch of a bool that defaults to True
            del line.values[key], line.origin[key]
            line.values[key[3:]], line.origin[key[3:]] = "false", where


def _number(value: Any, kind: type) -> float | None:
    """``value`` as a number when it is one (YAML number or flag text), else None for the parser to judge."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(kind(value))
        except ValueError:
            return None
    return None


def check_values(values: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> None:
    """Raise UserError for the first value no run can use: counts below 1, a temperature that is not
    positive (sampling and the log-probs divide the logits by it), a local model folder that is not there."""
    def where(name: str) -> str:
        return f" ({origin[name]})" if origin and name in origin else ""

    for name, meaning in POSITIVE_COUNTS.items():
        if name in values and values[name] not in _NULLS:
            number = _number(values[name], int)
            if number is not None and number < 1:
                raise UserError(f"{name} ({meaning}) must be at least 1, got {values[name]}{where(name)}")
    for name, meaning in NON_NEGATIVE_COUNTS.items():
        number = _number(values.get(name), int)
        if number is not None and number < 0:
            raise UserError(f"{name} ({meaning}) must be 0 (never) or more, got {values[name]}{where(name)}")
    for name, (low, low_ok, high, high_ok, meaning) in REAL_RANGES.items():
        if name not in values or values[name] in _NULLS:
            continue
        number = _number(values[name], float)
        if number is None:
            continue
        inside = (math.isfinite(number) and (number > low or (low_ok and number == low))
                  and (number < high or (high_ok and number == high)))
        if not inside:
            span = (f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}".replace("inf", "∞"))
            raise UserError(f"{name} ({meaning}) must be a finite number in {span}, got {values[name]}{where(name)}")
    given = {name: _number(values[name], float) for name in SAMPLING_RULES
             if name in values and values[name] not in _NULLS}
    given = {name: number for name, number in given.items() if number is not None}
    if given:
        from workbench.models.base import SamplingConfig

        try:
            SamplingConfig(**given)
        except FieldError as err:
            raise UserError(f"{err}{where(err.field)}") from None
    if values.get("method") in GROUP_METHODS and values.get("num_generations") not in (None, *_NULLS):
        number = _number(values["num_generations"], int)
        if number is not None and number < 2:
            raise UserError(f"method {values['method']} weighs the rollouts of a prompt against each other, so it "
                            f"needs num_generations >= 2, got {values['num_generations']}{where('num_generations')}; "
                            "use method opd for one rollout a prompt")
    if "temperature" in values:
        number = _number(values["temperature"], float)
        if number is not None and not (number > 0 and math.isfinite(number)):
            raise UserError(f"temperature must be > 0 (rollouts are sampled and scored at it), "
                            f"got {values['temperature']}{where('temperature')}")
    for name in MODEL_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and value not in (TOY_STUDENT, TOY_TEACHER, *_NULLS):
            check_model_name(f"{name}{where(name)}", value)


def check_command_line(argv: Sequence[str]) -> CommandLine:
    """Read a training command line and check its values one at a time, without importing TRL; its
    names are checked by train.config.check_command_line."""
    line = read_command_line(argv)
    check_values(line.values, line.origin)
    return line
