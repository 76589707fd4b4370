"""Recipes and command-line overrides checked without importing TRL, so a mistake costs a second.

Importing TRL pulls in transformers and torch: seconds on a fast machine, tens of seconds on a busy
one, and every typo would pay it before its error. So the training command line first reads the
YAML recipe and the ``--field value`` flags as plain data and checks what a single value can get
wrong: an unknown field (with the nearest real name suggested), a batch size or group size that is
not positive, a temperature that is not, a model folder that does not exist. Checks that relate
fields to each other stay in ``ScopeConfig.__post_init__``, which also runs ``check_values`` so a
config built in a notebook gets the same messages.

The field names come from the source of the config classes (``ScopeConfig`` -> TRL's ``GRPOConfig``
-> ``_BaseConfig`` -> transformers' ``TrainingArguments``), read with ``ast``; if that chain of
classes ever changes shape, the names come from importing ``ScopeConfig`` instead (slow, still right).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench.data import BENCHMARKS
from workbench.errors import UserError, check_model_name, did_you_mean
from workbench.layout import METHODS

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
    "top_p": (0.0, False, 1.0, True, "nucleus sampling mass"),
    "min_p": (0.0, True, 1.0, True, "min-p sampling floor"),
    "repetition_penalty": (0.0, False, INF, False, "1.0 is none"),
    "weight_scale": (0.0, False, INF, False, "the SCOPE weights' scale"),
}
GROUP_METHODS = ("scope",)
"""Methods whose weights are a softmax inside each prompt's group of rollouts: with one rollout a
prompt every weight is exactly 1, and the run would be plain OPD/MLE labelled scope."""

# (package, file inside it, class, its single base class as written there)
_CONFIG_CHAIN = (
    ("train", "config.py", "ScopeConfig", "GRPOConfig"),
    ("trl", "trainer/grpo_config.py", "GRPOConfig", "_BaseConfig"),
    ("trl", "trainer/base_config.py", "_BaseConfig", "TrainingArguments"),
    ("transformers", "training_args.py", "TrainingArguments", None),
)


# Fields taking a name, and where train/scope.py defines the names (it imports torch, so it is read).
_NAMED_IN_SCOPE = {"ablation": "ABLATIONS", "loss_aggregation": "Aggregation", "student_weight": "PathMode",
                   "teacher_weight": "PathMode", "weight_scale": "WeightScale"}


@dataclass
class CommandLine:
    """A training command line read as data: the recipe's values, then the flags over them."""

    recipe: Path | None
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # field -> where its value came from


def _package_dir(package: str) -> Path | None:
    if package == "train":
        return Path(__file__).resolve().parent
    spec = importlib.util.find_spec(package)  # a top-level package: located, not imported
    locations = spec.submodule_search_locations if spec is not None else None
    return Path(list(locations)[0]) if locations else None


def _keyword(call: ast.expr | None, name: str) -> ast.expr | None:
    if isinstance(call, ast.Call):
        return next((kw.value for kw in call.keywords if kw.arg == name), None)
    return None


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _class_fields(package: str, relative: str, name: str, base: str | None) -> dict[str, bool] | None:
    """One class's own init fields, each mapped to whether it is a bool defaulting to True (those get a
    ``--no_`` option), or None if the class is not where and what the chain expects."""
    folder = _package_dir(package)
    if folder is None or not (folder / relative).is_file():
        return None
    tree = ast.parse((folder / relative).read_text(encoding="utf-8"))
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if node is None or [ast.unparse(b) for b in node.bases] != ([base] if base else []):
        return None
    fields: dict[str, bool] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = ast.unparse(stmt.annotation)
        init = _keyword(stmt.value, "init")
        if "ClassVar" in annotation or (isinstance(init, ast.Constant) and init.value is False):
            continue
        metadata = _keyword(stmt.value, "metadata")
        if isinstance(metadata, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "aliases"
                                                  for k in metadata.keys):
            return None  # extra option strings this reader does not model
        default = _keyword(stmt.value, "default") if isinstance(stmt.value, ast.Call) else stmt.value
        fields[stmt.target.id] = annotation in ("bool", "bool | None", "Optional[bool]") and _is_true(default)
    return fields


@functools.cache
def _static_options() -> tuple[frozenset[str], frozenset[str]] | None:
    fields: dict[str, bool] = {}
    for package, relative, name, base in _CONFIG_CHAIN:
        found = _class_fields(package, relative, name, base)
        if found is None:
            return None
        fields = {**found, **fields}  # a subclass's redefinition wins
    options = {option for name, negatable in fields.items()
               for option in ((name, name.replace("_", "-"))
                              + ((f"no_{name}", f"no-{name.replace('_', '-')}") if negatable else ()))}
    return frozenset(fields), frozenset(options)


@functools.cache
def config_options() -> tuple[frozenset[str], frozenset[str]]:
    """(field names, every ``--`` option string without its dashes) of ScopeConfig's parser."""
    static = _static_options()
    if static is not None:
        return static
    from train.config import ScopeConfig, config_parser

    fields = frozenset(f.name for f in dataclasses.fields(ScopeConfig) if f.init)
    options = frozenset(s[2:] for a in config_parser()._actions for s in a.option_strings if s.startswith("--"))
    return fields, options - {"help"}


@functools.cache
def _scope_names() -> dict[str, tuple[str, ...]]:
    """The ``Literal`` types and ABLATIONS' keys of train/scope.py, read from its source."""
    tree = ast.parse(Path(__file__).with_name("scope.py").read_text(encoding="utf-8"))
    names: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                  else node.target if isinstance(node, ast.AnnAssign) else None)
        if not isinstance(target, ast.Name):
            continue
        value = node.value
        if isinstance(value, ast.Subscript) and ast.unparse(value.value) == "Literal":
            items = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            names[target.id] = tuple(e.value for e in items if isinstance(e, ast.Constant))
        elif isinstance(value, ast.Dict) and target.id == "ABLATIONS":
            names[target.id] = tuple(k.value for k in value.keys if isinstance(k, ast.Constant))
    return names


def named_choices() -> dict[str, tuple[str, ...]]:
    """The names each name-valued field accepts: the methods, the registered benchmarks whose grading
    rules a hub dataset takes (workbench.data), and the ablation presets, weight modes, scales and
    aggregations as train/scope.py spells them (its ``Literal`` types and ABLATIONS' keys)."""
    names = _scope_names()
    return {"method": METHODS, "grader_benchmark": tuple(BENCHMARKS),
            **{f: names[n] for f, n in _NAMED_IN_SCOPE.items() if names.get(n)}}


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
    """The recipe and the flags as data; unknown fields and stray words raise UserError."""
    fields, options = config_options()
    recipe, rest = split_config_flag(argv)
    line = CommandLine(recipe)
    if recipe is not None:
        data = _read_recipe(recipe)
        unknown = [k for k in data if k not in fields and k != "env"]
        if unknown:
            raise UserError(f"recipe {recipe}: " + "; ".join(
                f"unknown field {k!r}{did_you_mean(str(k), fields)}" for k in unknown))
        for key, value in data.items():
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
        if name not in options:
            hint = did_you_mean(name, options, fmt="--{}") or "; python -m train.cli --help-all lists every field"
            raise UserError(f"unknown option --{name}{hint}")
        if name.startswith(("no_", "no-")) and name.replace("-", "_") not in fields:
            name, values = name[3:], ["false"]
        key = name.replace("-", "_")
        line.values[key] = values[0] if len(values) == 1 else values
        line.origin[key] = f"--{name}"
    return line


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
    for name, allowed in named_choices().items():
        value = values.get(name)
        if isinstance(value, str) and value not in allowed and value not in _NULLS:
            raise UserError(f"{name} {value!r}{where(name)} is not one of {', '.join(allowed)}"
                            f"{did_you_mean(value, allowed)}")
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
    if values.get("method") in GROUP_METHODS and values.get("num_generations") not in (None, *_NULLS):
        number = _number(values["num_generations"], int)
        if number is not None and number < 2:
            raise UserError(f"method {values['method']} weighs the rollouts of a prompt against each other, so it "
                            f"needs num_generations >= 2, got {values['num_generations']}{where('num_generations')}; "
                            "use method opd for one rollout a prompt")
    if "tau" in values and values["tau"] not in _NULLS:
        number = _number(values["tau"], float)
        if number is not None and not (number > 0 and math.isfinite(number)):
            raise UserError(f"tau must be a finite number > 0, got {values['tau']}{where('tau')}")
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
    """Read and check a training command line without importing TRL (see the module docstring)."""
    line = read_command_line(argv)
    check_values(line.values, line.origin)
    return line
