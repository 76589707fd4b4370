"""How a launch shards the student (DDP, ZeRO-1/2/3, FSDP2) and the one rule that depends on it.

Read from an accelerate config file (the dry run's ``--accelerate_config``), from the environment
``accelerate launch`` sets, or from TrainingArguments' ``deepspeed`` value; used both by the plan
(train.plan) and by ScopeConfig, so a local teacher under ZeRO-3 is refused the same way by each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from workbench.errors import UserError

LAUNCH_DIR = Path(__file__).resolve().parent / "launch"


def sharding_of_accelerate_config(path: str | Path) -> str:
    """ddp / zero1-3 / fsdp2 as an accelerate config file sets it."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"accelerate config {path} not found (the shipped ones: {LAUNCH_DIR}/*.yaml)")
    data = yaml.safe_load(file.read_text()) or {}
    kind = str(data.get("distributed_type", "NO")).upper()
    if kind == "DEEPSPEED":
        ds = data.get("deepspeed_config") or {}
        if ds.get("deepspeed_config_file"):
            return _sharding_of_deepspeed_json(ds["deepspeed_config_file"])
        return f"zero{int(ds.get('zero_stage', 2))}"
    return "fsdp2" if kind == "FSDP" else "ddp"


def _sharding_of_deepspeed_json(path: str | Path | Mapping[str, Any]) -> str:
    data = path if isinstance(path, Mapping) else json.loads(Path(path).read_text())
    stage = (data.get("zero_optimization") or {}).get("stage", 0)
    return f"zero{int(stage)}" if stage else "ddp"


def sharding_from_environment(values: Mapping[str, Any] | None = None) -> str:
    """The sharding `accelerate launch` (its environment) or TrainingArguments.deepspeed sets for this process."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            return _sharding_of_deepspeed_json(env["ACCELERATE_DEEPSPEED_CONFIG_FILE"])
        return f"zero{int(env.get('ACCELERATE_DEEPSPEED_ZERO_STAGE', '2'))}"
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2"
    deepspeed = (values or {}).get("deepspeed")
    if deepspeed not in (None, "", "None", "none", "null"):
        return _sharding_of_deepspeed_json(deepspeed if isinstance(deepspeed, Mapping) else str(deepspeed))
    return "ddp"


def check_teacher_fits_sharding(values: Mapping[str, Any], sharding: str) -> None:
    """A local teacher is loaded whole with from_pretrained(...).to(device); under ZeRO-3, zero.Init would
    partition that load and the teacher's forward would see empty weights. The served teacher has none
    of this, so a local one is refused there with the alternative named."""
    if sharding == "zero3" and values.get("teacher_model") not in (None, "", "None", "none", "null"):
        raise UserError("a local teacher_model cannot run under DeepSpeed ZeRO-3 (zero.Init partitions its load); "
                        "serve it (vllm serve TEACHER) and pass --teacher_server_url http://HOST:8000 "
                        "--teacher_server_model TEACHER, or use train/launch/zero2.yaml or fsdp2.yaml")
