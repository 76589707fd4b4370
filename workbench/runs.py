"""Run folders and manifests, so every number on disk can be traced to the code and config that made it.

A manifest records the config, the seed, package versions, the git commit (and whether the tree was
dirty), the number of processes and start/end times. It is written when a run starts and rewritten when
it ends, so a crashed run is recognisable by its missing end time and status "running". A run launched as
several processes (torchrun, accelerate launch) has one folder and one manifest, written by rank 0.

A manifest also lists the sha256 of every file beside it (``files``). What a manifest describes is
its config, seed, status and those hashes; the rest (time, commit, command, versions, host, timings)
says when and how that was made. So a rerun that writes the same bytes with the same config leaves
the manifest as it was, byte for byte, still naming the run that first made those outputs, and a
rerun that changes any output's bytes rewrites it with its own time and commit. Paths inside the
repository are recorded relative to its root, so every clone writes the same manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.layout import REPO_ROOT

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# What a manifest describes; every other field says when and how it was made.
IDENTITY = ("config", "seed", "status", "files")
# Caches and half-written files that may sit in an output folder without being outputs.
UNLISTED_SUFFIXES = (".sqlite", ".sqlite-journal", ".sqlite-wal", ".sqlite-shm", ".tmp")
TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "accelerate", "datasets", "math-verify", "vllm",
    "numpy", "pandas", "pyarrow", "scipy", "matplotlib", "seaborn", "scope-workbench",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and dirtiness of the working tree; None values outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def launch_rank_and_world() -> tuple[int, int]:
    """(global rank, number of processes) as torchrun and accelerate launch export them (or as a joined
    world remembers them once their variables are scrubbed); (0, 1) alone."""
    from workbench.distributed import current_world

    world = current_world()
    return world.rank, world.size


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def repo_relative(value: str | os.PathLike) -> str:
    """A path inside the repository as a path relative to its root; anything else unchanged."""
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    try:
        return Path(text).relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return text


def _command() -> str:
    """How this process was started, the same in every clone: ``python -m pkg.mod args`` for a module,
    else the script's file name, with arguments inside the repository made relative."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        head = "python -m " + spec.name.removesuffix(".__main__")
    else:
        head = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return " ".join([head, *(repo_relative(arg) for arg in sys.argv[1:])])


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of each file directly in ``folder``, by name: not the manifest, hidden files or caches
    (subfolders with outputs of their own carry their own manifests)."""
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if (path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
                and not path.name.endswith(UNLISTED_SUFFIXES)):
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            out[path.name] = digest.hexdigest()
    return out


def _identity(manifest: Mapping[str, Any]) -> str:
    return json.dumps({key: manifest.get(key) for key in IDENTITY}, sort_keys=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, str):
        return repo_relative(obj)
    if isinstance(obj, os.PathLike):
        return repo_relative(obj)
    if isinstance(obj, (int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict
        return _jsonable(asdict(obj))
    return str(obj)


def write_manifest(folder: str | os.PathLike, config: Mapping[str, Any], seed: int | None,
                   **extra: Any) -> Path:
    """Write `folder/manifest.json` atomically, listing the files beside it, unless the one there
    already describes the same config, seed, status and file bytes (then it is left untouched)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    previous = read_manifest(folder) if path.exists() else {}
    resumed = previous.get("status") in ("running", "failed")
    manifest = {
        "config": _jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "git": git_state(),
        "command": _command(),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "world_size": launch_rank_and_world()[1],
        "started_at": previous["started_at"] if resumed and "started_at" in previous else _now(),
        **_jsonable(extra),
        "files": file_hashes(folder),
    }
    if previous and _identity(previous) == _identity(manifest):
        log.debug("%s: same config and outputs as recorded, manifest kept", path)
        return path
    _replace_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())


def is_finished(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run whose manifest says it finished (not running, failed or absent)."""
    return (Path(folder) / MANIFEST).is_file() and read_manifest(folder).get("status") == "finished"


@contextmanager
def run_folder(folder: str | os.PathLike, config: Mapping[str, Any], seed: int | None,
               **extra: Any) -> Iterator[Path]:
    """A folder whose manifest says "running" until the body finishes, then "finished" or "failed".

    Processes other than rank 0 of a multi-process launch write nothing: their body runs the same
    job, and a second writer could leave a manifest saying "finished" while rank 0 is still running.
    """
    folder = Path(folder)
    if launch_rank_and_world()[0] != 0:
        yield folder
        return
    before = (folder / MANIFEST).read_text() if (folder / MANIFEST).is_file() else None
    write_manifest(folder, config, seed, status="running", finished_at=None, **extra)
    try:
        yield folder
    except BaseException as exc:
        write_manifest(folder, config, seed, status="failed", finished_at=_now(), error=repr(exc), **extra)
        raise
    path = write_manifest(folder, config, seed, status="finished", finished_at=_now(), **extra)
    if before is not None and _identity(json.loads(before)) == _identity(read_manifest(folder)):
        _replace_text(path, before)  # a rerun that changed nothing: the earlier record stands
