"""The lock files cover what pyproject.toml asks for, keep the holds, and every install path uses them;
the GPU-set check flags a broken requirement and lets the one documented override through."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
REQ = REPO / "requirements"


def _pins(*files: str) -> dict[str, str]:
    pins = {}
    for name in files:
        for line in (REQ / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                package, version = line.split("==")
                pins[canonicalize_name(package)] = version
    return pins


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _unsatisfied(requirements: list[str], pins: dict[str, str]) -> list[str]:
    bad = []
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            bad.append(f"{req} (lock: {pins.get(name)})")
    return bad


def _check_gpu_set():
    spec = importlib.util.spec_from_file_location("check_gpu_set", REPO / "scripts" / "check_gpu_set.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_satisfies_every_requirement_of_the_workbench_and_its_extras():
    core = _pins("lock.txt")
    project = _project()
    assert _unsatisfied(project["dependencies"] + project["optional-dependencies"]["dev"], core) == []
    assert _unsatisfied(project["optional-dependencies"]["lab"], core | _pins("lock-lab.txt")) == []
    assert not set(core) & set(_pins("lock-lab.txt")), "lock-lab.txt lists only what JupyterLab adds"
    assert "torch" not in core and "scope-workbench" not in core


def test_the_lock_keeps_the_holds():
    core = _pins("lock.txt")
    for name, version in _pins("holds.txt").items():
        assert core[name] == version, f"{name}: held at {version}, locked at {core[name]}"
    assert core["fonttools"] == "4.66.1"  # the release every committed PDF was written with


def test_torch_is_pinned_once_for_every_install_path():
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH_PIN := (\S+)", makefile, re.M).group(1)
    assert torch_pin in _project()["dependencies"]
    env = (REPO / "environment.yml").read_text()
    assert f"{torch_pin}+cpu" in env
    assert "-c requirements/lock.txt" in env and "-c requirements/lock-lab.txt" in env
    # make setup and lab install from the lock without resolving; setup-vllm where vLLM's pins allow
    assert makefile.count("$(call install_locked,") == 2 and "check_gpu_set.py --install-lock" in makefile
    assert "--no-deps $(foreach f,$(2),-r $(f))" in makefile


def test_the_gpu_set_check_finds_a_broken_requirement_and_allows_the_declared_override():
    check = _check_gpu_set()
    versions = {"vllm": "0.32.0", "transformers": "5.23.0", "trl": "1.16.0", "torch": "2.13.0", "numpy": "2.4.6"}
    requires = {
        "vllm": ["transformers<5.18.0,>=5.10.4", "torch==2.13.0", "numpy", "zentorch==2.13.0.1; extra == 'zen'"],
        "trl": ["transformers>=4.56.2", "vllm<=0.31.0,>=0.22.0; extra == 'vllm'", "deepspeed; extra == 'deepspeed'"],
        "torch": ["nvidia-nccl-cu13==2.29.7; platform_system == 'Linux'", "pywin32; sys_platform == 'win32'"],
        "numpy": [],
        "transformers": ["numpy>=3; python_version >= '3.20'"],
    }
    found = check.conflicts(versions, requires)
    assert found == ["trl 1.16.0 requires vllm<=0.31.0,>=0.22.0; extra == \"vllm\", the set has vllm 0.32.0"]
    assert check.conflicts({**versions, "vllm": "0.31.0"}, requires) == []
    assert check.conflicts({**versions, "vllm": "0.31.0", "torch": "2.14.0"}, requires) == [
        "vllm 0.31.0 requires torch==2.13.0, the set has torch 2.14.0"]


@pytest.mark.parametrize("name", ["lock.txt", "lock-lab.txt"])
def test_lock_files_say_how_they_are_made(name):
    head = (REQ / name).read_text().splitlines()[:3]
    assert any("make lock" in line for line in head)


def test_the_gpu_set_the_readme_and_docs_state_is_the_one_the_files_pin():
    makefile = (REPO / "Makefile").read_text()
    pins = _pins("lock.txt")
    expected = {
        "torch": re.search(r"^TORCH_PIN := torch==(\S+)", makefile, re.M).group(1),
        "vllm": re.search(r"^VLLM_VERSION := (\S+)", makefile, re.M).group(1),
        "transformers": pins["transformers"], "trl": pins["trl"], "accelerate": pins["accelerate"],
        "deepspeed": next(r.split("==")[1] for r in _project()["optional-dependencies"]["gpu"] if "deepspeed" in r),
    }
    docs = (REPO / "docs" / "installing.md").read_text()
    shown = dict(re.findall(r"^(torch|vllm|transformers|trl|accelerate|deepspeed) +(\S+) ", docs, re.M))
    assert shown == expected
    readme = " ".join((REPO / "README.md").read_text().split())
    names = {"torch": "torch", "vllm": "vLLM", "transformers": "transformers", "trl": "TRL",
             "accelerate": "accelerate", "deepspeed": "DeepSpeed"}
    line = readme[readme.index("**The GPU set**"):readme.index("## Make targets")]
    for package, version in expected.items():
        assert f"{names[package]} {version}" in line, package
