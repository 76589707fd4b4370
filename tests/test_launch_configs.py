"""The shipped accelerate configs (train/launch/*.yaml) load as accelerate loads them and name only
settings `accelerate launch` knows; the slurm script is valid bash. No GPU is needed for either."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

LAUNCH = Path(__file__).resolve().parents[1] / "train" / "launch"
CONFIGS = sorted(LAUNCH.glob("*.yaml"))
# What each config is for, as the docs and the recipes name them.
EXPECTED = {"multi_gpu": ("MULTI_GPU", None), "zero2": ("DEEPSPEED", 2), "zero3": ("DEEPSPEED", 3),
            "fsdp2": ("FSDP", None)}


def launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def test_every_expected_config_is_shipped():
    assert sorted(p.stem for p in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_names_known_settings(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(path))  # raises on a top-level key accelerate does not know
    kind, stage = EXPECTED[path.stem]
    assert config.distributed_type == DistributedType[kind]
    assert config.num_processes == 8 and config.num_machines == 1 and config.mixed_precision == "bf16"
    options = launch_options()
    raw = yaml.safe_load(path.read_text())
    # accelerate launch copies each nested key onto its own option of that name (fsdp_ keys as they are)
    nested = {**raw.get("deepspeed_config", {}), **raw.get("fsdp_config", {})}
    unknown = sorted(set(nested) - options)
    assert not unknown, f"{path.name}: settings accelerate launch does not know: {unknown}"
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2


def test_slurm_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(LAUNCH / "scope.slurm")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
