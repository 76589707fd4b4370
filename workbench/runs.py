"""Run folders and manifests, so every number on disk can be traced to the code and config that made it.

A manifest records the config, the seed, package versions, the git commit (and whether the tree was
dirty) and start/end times. It is written when a run starts and rewritten when it ends, so a crashed run
is recognisable by its missing end time and status "running".
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict
        return _jsonable(asdict(obj))
    return str(obj)


def write_manifest(folder: str | os.PathLike, config: Mapping[str, Any], seed: int | None,
                   **extra: Any) -> Path:
    """Write (or overwrite) `folder/manifest.json` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST
    previous = read_manifest(folder) if path.exists() else {}
    manifest = {
        "config": _jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "git": git_state(),
        "command": " ".join(sys.argv),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "started_at": previous.get("started_at", _now()),
        **_jsonable(extra),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())


@contextmanager
def run_folder(folder: str | os.PathLike, config: Mapping[str, Any], seed: int | None,
               **extra: Any) -> Iterator[Path]:
    """A folder whose manifest says "running" until the body finishes, then "finished" or "failed"."""
    folder = Path(folder)
    write_manifest(folder, config, seed, status="running", finished_at=None, **extra)
    try:
        yield folder
    except BaseException as exc:
        write_manifest(folder, config, seed, status="failed", finished_at=_now(), error=repr(exc), **extra)
        raise
    write_manifest(folder, config, seed, status="finished", finished_at=_now(), **extra)
