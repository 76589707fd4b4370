"""The plan of a run before launch: ``python -m train.cli --config RECIPE --dry-run``.

Loads no model (it answers in the seconds that importing the config classes takes), so a run that cannot
fit the GPUs is refused before a node is booked. The batch and memory arithmetic: docs/training-at-scale.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

from train.config import ScopeConfig, check_command_line
from train.recipe import TOY_STUDENT, TOY_TEACHER
from train.sharding import (
    check_teacher_fits_sharding,
    sharding_from_environment,
    sharding_of_accelerate_config,
)
from workbench.errors import UserError

GIB = 1024**3
CUDA_SLACK_GIB = 2.0
DEFAULT_GPU_GB = 80.0
DEFAULT_WORLD = 8

def config_defaults() -> dict[str, Any]:
    """Every ScopeConfig field's default (GRPOConfig's and TrainingArguments' included): what a plan reads
    for a field the recipe and the flags leave unset."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(ScopeConfig)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder-only transformer the estimate needs."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    dtype_bytes: int = 2
    max_positions: int = 32768

    @property
    def params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (attn + mlp + 2 * self.hidden) + embed + self.hidden

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ModelShape:
        heads = int(cfg["num_attention_heads"])
        dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
        return cls(hidden=int(cfg["hidden_size"]), layers=int(cfg["num_hidden_layers"]),
                   intermediate=int(cfg["intermediate_size"]), heads=heads,
                   kv_heads=int(cfg.get("num_key_value_heads") or heads),
                   head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                   vocab=int(cfg["vocab_size"]), tied=bool(cfg.get("tie_word_embeddings", False)),
                   dtype_bytes=4 if "32" in dtype else 2, max_positions=int(cfg.get("max_position_embeddings", 32768)))


# The paper's students and teachers (their config.json), so a plan needs no download.
KNOWN_MODELS: dict[str, ModelShape] = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": ModelShape(1536, 28, 8960, 12, 2, 128, 151936, False,
                                                            max_positions=131072),
    "Skywork/Skywork-OR1-7B": ModelShape(3584, 28, 18944, 28, 4, 128, 152064, False, max_positions=131072),
    "Skywork/Skywork-OR1-Math-7B": ModelShape(3584, 28, 18944, 28, 4, 128, 152064, False, max_positions=131072),
    "Qwen/Qwen3-1.7B-Base": ModelShape(2048, 28, 6144, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-8B": ModelShape(4096, 36, 12288, 32, 8, 128, 151936, False),
}


def model_shape(name: str) -> ModelShape:
    """The shape of `name`: a toy sentinel, a local folder, the HF cache, or the table above."""
    if name in (TOY_STUDENT, TOY_TEACHER):
        from workbench.toy import STUDENT_DIR, TEACHER_DIR

        name = str(STUDENT_DIR if name == TOY_STUDENT else TEACHER_DIR)
    local = Path(name) / "config.json"
    if local.is_file():
        return ModelShape.from_config(json.loads(local.read_text()))
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 (a malformed repo id: treated as not cached)
        cached = None
    if isinstance(cached, str):
        return ModelShape.from_config(json.loads(Path(cached).read_text()))
    raise UserError(f"cannot size {name} without its config.json: pass a local model folder, or download it "
                    f"once (huggingface-cli download {name} config.json)")


# ---------------------------------------------------------------------------------------- plan
@dataclass
class Plan:
    rows: list[tuple[str, str]]
    total_gib: float
    gpu_gib: float
    shell: dict[str, str]
    biggest: list[str]


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def _int(values: Mapping[str, Any], name: str) -> int | None:
    value = values.get(name)
    return None if value in (None, "None", "none", "null") else int(value)


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")


def build_plan(argv: Sequence[str], *, world_size: int | None = None, gpu_memory_gb: float | None = None,
               accelerate_config: str | None = None) -> Plan:
    """The plan of the training command line `argv` (recipe and overrides, without the plan's own flags)."""
    values = config_defaults() | check_command_line(argv).values
    world_note = ""
    if world_size is None:
        env_world = os.environ.get("WORLD_SIZE")
        world_size, world_note = ((int(env_world), " (from $WORLD_SIZE)") if env_world
                                  else (DEFAULT_WORLD, " (assumed; pass --world_size N)"))
    if world_size < 1:
        raise UserError(f"--world_size must be at least 1, got {world_size}")
    gpu_gib = DEFAULT_GPU_GB if gpu_memory_gb is None else float(gpu_memory_gb)
    sharding = (sharding_of_accelerate_config(accelerate_config) if accelerate_config
                else sharding_from_environment(values))
    check_teacher_fits_sharding(values, sharding)

    method = str(values["method"])
    per_device = int(values["per_device_train_batch_size"])
    accumulation = int(values["gradient_accumulation_steps"])
    per_generation = _int(values, "steps_per_generation") or accumulation
    generations = 1 if method == "kd" else int(values["num_generations"])
    completion = int(values["max_completion_length"])
    student = model_shape(str(values["model_name_or_path"]))
    prompt = _int(values, "max_prompt_length")
    prompt_note = ""
    if prompt is None:
        prompt = student.max_positions - completion
        prompt_note = " (max_prompt_length unset: bounded by the student's context)"
    rollouts_per_step = per_device * accumulation * world_size
    rows: list[tuple[str, str]] = [
        ("method", method),
        ("world size", f"{world_size} processes{world_note}; sharding {sharding}"
                       + (f" ({accelerate_config})" if accelerate_config else "")),
        ("optimizer step", f"{per_device} per device x {accumulation} accumulation x {world_size} processes = "
                           f"{rollouts_per_step} sequences"
                           + (f" = {rollouts_per_step // generations} prompts x {generations} rollouts"
                              if method != "kd" else "")),
        ("generation batch", f"{per_device * per_generation * world_size} rollouts every {per_generation} "
                             f"micro-batches, {values['num_iterations']} update(s) each" if method != "kd"
                             else "teacher samples made once before training"),
        ("micro-batch, worst case", f"{per_device} x ({prompt} prompt + {completion} completion) = "
                                    f"{per_device * (prompt + completion)} tokens{prompt_note}"),
    ]
    if method != "kd" and rollouts_per_step % generations:
        raise UserError(f"{rollouts_per_step} sequences per step (per_device_train_batch_size x "
                        f"gradient_accumulation_steps x world size) is not a multiple of num_generations "
                        f"{generations}; change gradient_accumulation_steps")
    tokens = per_device * (prompt + completion)

    # --------------------------------------------------------------------- memory per device
    init = values.get("model_init_kwargs") or {}
    dtype = str(init.get("dtype") or init.get("torch_dtype") or "auto") if isinstance(init, Mapping) else "auto"
    pbytes = student.dtype_bytes if dtype == "auto" else (4 if "32" in dtype else 2)
    params = student.params
    shard_w = world_size if sharding in ("zero3", "fsdp2") else 1
    shard_g = world_size if sharding in ("zero2", "zero3", "fsdp2") else 1
    if sharding.startswith("zero"):
        optim = 12 * params / world_size
        optim_note = "fp32 master + 2 AdamW states, 12 B/param, sharded"
    else:
        optim = 2 * pbytes * params / (world_size if sharding == "fsdp2" else 1)
        optim_note = f"2 AdamW states in the weights' dtype{', sharded' if sharding == 'fsdp2' else ''}"
    weights = pbytes * params / shard_w
    grads = pbytes * params / shard_g
    act_checkpointing = values.get("activation_checkpointing")
    checkpointing = _bool(values["gradient_checkpointing"] if act_checkpointing in (None, "None", "null")
                          else act_checkpointing)
    scale = pbytes / 2  # the 34-byte figure is for 16-bit activations
    per_layer = 34 * tokens * student.hidden * scale
    layers = (pbytes * tokens * student.hidden * student.layers + per_layer if checkpointing
              else per_layer * student.layers)
    logits = 2 * tokens * student.vocab * pbytes
    on_gpu_vllm = _bool(values["use_vllm"]) and values["vllm_mode"] == "colocate"
    sleep = _bool(values["vllm_enable_sleep_mode"])
    vllm = float(values["vllm_gpu_memory_utilization"]) * gpu_gib * GIB if on_gpu_vllm and not sleep else 0.0
    terms = {
        "weights": (weights, f"{_count(params)} params x {pbytes} B" + (", sharded" if shard_w > 1 else "")),
        "gradients": (grads, f"{pbytes} B/param" + (", sharded" if shard_g > 1 else "")),
        "optimizer": (optim, optim_note),
        "activations": (layers + logits, f"{'with' if checkpointing else 'without'} checkpointing, "
                                         f"{tokens} tokens; logits + grad {logits / GIB:.1f} GiB"),
        "vLLM (colocated)": (vllm, f"{values['vllm_gpu_memory_utilization']} of {gpu_gib:g} GiB" if on_gpu_vllm and not sleep
                             else ("asleep while training" if on_gpu_vllm else "no colocated vLLM")),
    }
    teacher_model = values.get("teacher_model")
    if teacher_model not in (None, "None", "null") and method != "grpo":
        teacher = model_shape(str(teacher_model))
        tbytes = 4 if values.get("teacher_dtype") and "32" in str(values["teacher_dtype"]) else 2
        if str(teacher_model) == TOY_TEACHER and values.get("teacher_dtype") is None:
            tbytes = teacher.dtype_bytes
        work = 34 * int(values["teacher_score_tokens"]) * teacher.hidden * tbytes / 2
        terms["local teacher"] = (teacher.params * tbytes + work,
                                  f"{_count(teacher.params)} params x {tbytes} B, unsharded on every GPU")
    terms["CUDA context, slack"] = (CUDA_SLACK_GIB * GIB, "fixed allowance")
    total = sum(v for v, _ in terms.values())
    for name, (value, note) in terms.items():
        rows.append((f"  {name}", f"{value / GIB:7.1f} GiB  ({note})"))
    rows.append(("GPU memory per device", f"{total / GIB:7.1f} GiB of {gpu_gib:g} GiB"
                                          + (" (assumed; pass --gpu_memory_gb)" if gpu_memory_gb is None else "")))

    shell = {"GRAD_ACC_STEPS": str(accumulation), "WORLD_SIZE": str(world_size)}
    served = values.get("teacher_server_url") not in (None, "None", "null")
    if served and method != "grpo":
        need = prompt + completion + 1
        rows.append(("teacher server", f"vllm serve {values.get('teacher_server_model')} --max-model-len {need} "
                                       f"(prompt {prompt} + completion {completion} + 1 generated token)"))
        shell |= {"TEACHER_MODEL": str(values.get("teacher_server_model")), "TEACHER_MAX_MODEL_LEN": str(need)}
    if on_gpu_vllm:
        vlen = _int(values, "vllm_max_model_length")
        if vlen is not None and vlen < prompt + completion:
            raise UserError(f"vllm_max_model_length {vlen} is below prompt {prompt} + completion {completion}; "
                            f"set it to at least {prompt + completion}")
    biggest = sorted(terms, key=lambda k: -terms[k][0])[:3]
    return Plan(rows, total / GIB, gpu_gib, shell, biggest)


def check_fits(plan: Plan) -> None:
    if plan.total_gib > plan.gpu_gib:
        raise UserError(f"the plan needs ~{plan.total_gib:.0f} GiB per GPU, more than --gpu_memory_gb {plan.gpu_gib:g} "
                        f"(largest: {', '.join(plan.biggest)}); lower per_device_train_batch_size (raise "
                        "gradient_accumulation_steps to keep the step), vllm_gpu_memory_utilization, or shard "
                        "with --accelerate_config train/launch/zero3.yaml")


def render(plan: Plan) -> str:
    width = max(len(k) for k, _ in plan.rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in plan.rows) + "\n"


def render_shell(plan: Plan) -> str:
    return "".join(f"{k}={json.dumps(v)}\n" for k, v in plan.shell.items())


DRY_RUN_FLAG = "--dry-run"
PLAN_FORMATS = ("text", "shell")


@dataclass(frozen=True)
class PlanOptions:
    """The dry run's own options; each field is an option, ``--name VALUE`` or ``--name-with-dashes VALUE``."""

    world_size: int | None = None  # processes of the launch (None: $WORLD_SIZE, else DEFAULT_WORLD)
    gpu_memory_gb: float | None = None  # GiB per GPU the plan must fit (None: DEFAULT_GPU_GB)
    accelerate_config: str | None = None  # the launch's accelerate config, for its sharding
    plan_format: str = "text"  # one of PLAN_FORMATS: "text" for people, "shell" for the launch scripts

    def __post_init__(self) -> None:
        if self.plan_format not in PLAN_FORMATS:
            raise UserError(f"--plan-format {self.plan_format!r} is not one of {', '.join(PLAN_FORMATS)}")


_PLAN_UNITS = {int: "a whole number", float: "a number", str: "a value"}


def split_plan_flags(argv: Sequence[str]) -> tuple[PlanOptions, list[str]]:
    """The dry run's own options (PlanOptions' fields, and --dry-run itself) and the training arguments left."""
    names = {f"--{spelling}": f.name for f in dataclasses.fields(PlanOptions)
             for spelling in (f.name, f.name.replace("_", "-"))}
    kinds = {name: next(a for a in (get_args(hint) or (hint,)) if a is not type(None))
             for name, hint in get_type_hints(PlanOptions).items() if name in names.values()}
    values: dict[str, Any] = {}
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        flag, has_inline, inline = items[i].partition("=")
        if flag == DRY_RUN_FLAG:
            i += 1
            continue
        if flag not in names:
            rest.append(items[i])
            i += 1
            continue
        if has_inline:
            text, i = inline, i + 1
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            text, i = items[i + 1], i + 2
        else:
            raise UserError(f"{flag} needs a value")
        kind = kinds[names[flag]]
        try:
            values[names[flag]] = kind(text)
        except ValueError:
            raise UserError(f"{flag} takes {_PLAN_UNITS[kind]}, got {text!r}") from None
    return PlanOptions(**values), rest


def dry_run(argv: Sequence[str]) -> str:
    """The text ``--dry-run`` prints for the command line `argv` (with the plan's flags)."""
    options, rest = split_plan_flags(argv)
    plan = build_plan(rest, world_size=options.world_size, gpu_memory_gb=options.gpu_memory_gb,
                      accelerate_config=options.accelerate_config)
    check_fits(plan)
    return render_shell(plan) if options.plan_format == "shell" else render(plan)
