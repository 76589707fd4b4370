"""Run folders and manifests, so every number on disk can be traced to the code and config that made it.

A rerun that writes the same bytes leaves the manifest as it was, so unchanged outputs stay unchanged in
git. What a manifest records and how a killed run reads: docs/faults.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from workbench.errors import FULL_ERRNOS, READ_ONLY_ERRNOS, UserError, command_line, repo_relative
from workbench.layout import REPO_ROOT
from workbench.locking import folder_lock, is_locked

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# What a manifest describes; every other field says when and how it was made.
IDENTITY = ("config", "seed", "status", "files")
UNFINISHED = ("running", "failed", "interrupted")
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
    """Commit and dirtiness of the working tree's code; None values outside a git checkout. Changes under
    results/ do not count: a make target that writes several result folders in turn still records the
    code of a clean commit for each."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def launch_rank_and_world() -> tuple[int, int]:
    """(global rank, number of processes) as torchrun and accelerate launch export them (or as a joined
    world remembers them once their variables are scrubbed); (0, 1) alone."""
    from workbench.distributed import current_world

    world = current_world()
    return world.rank, world.size


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of each file directly in ``folder``, by name: not the manifest, hidden files or caches
    (subfolders with outputs of their own carry their own manifests)."""
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if (path.is_file() and path.name != MANIFEST and not path.name.startswith(".")
                and not path.name.endswith(UNLISTED_SUFFIXES)):
            out[path.name] = sha256_file(path)
    return out


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_recorded(path: str | os.PathLike, remedy: str) -> Path:
    """``path``, refused in one line (a UserError naming it and ``remedy``) when its bytes are not the
    ones its folder's manifest recorded, so a damaged committed file cannot change what is drawn from it."""
    path = Path(path)
    if (path.parent / MANIFEST).is_file():
        recorded = read_manifest(path.parent).get("files", {}).get(path.name)
        if recorded is not None and sha256_file(path) != recorded:
            raise UserError(f"{repo_relative(path.resolve())} is not the file its manifest recorded (sha256 differs); "
                            f"{remedy}")
    return path


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
    resumed = previous.get("status") in UNFINISHED
    manifest = {
        "config": _jsonable(config),
        "seed": seed,
        "versions": package_versions(),
        "git": git_state(),
        "command": command_line(),
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
    """Write ``path`` whole or not at all, through a temp file of this writer's own (pid and a random
    part, so two processes never share one), removed if the write fails.

    On a full disk, where even the temp file finds no room, a file whose blocks already hold the new
    text is rewritten in place instead: that needs no new space, so a run stopped by a full disk can
    still record that it was interrupted.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    data = text.encode("utf-8")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno not in FULL_ERRNOS or not path.is_file() or path.stat().st_blocks * 512 < len(data):
            raise
        with open(path, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    finally:
        tmp.unlink(missing_ok=True)


class CorruptManifest(UserError):
    """A manifest that is not the JSON object a run wrote (cut short, overwritten, bad bytes)."""


def producer(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The run that made a folder's outputs: what a redraw of them kept (``produced_by``), else the manifest's own
    command, commit and times."""
    return manifest.get("produced_by") or {k: manifest.get(k) for k in ("command", "git", "started_at", "finished_at")}


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``folder``; one that is not a JSON object raises :class:`CorruptManifest` naming it."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptManifest(f"{repo_relative(path.resolve())} is not a readable manifest ({exc}); restore it "
                              "(git checkout, a backup) or delete its folder to start afresh") from None
    if not isinstance(data, dict):
        raise CorruptManifest(f"{repo_relative(path.resolve())} is not a manifest (a JSON {type(data).__name__}, "
                              "not an object); restore it or delete its folder to start afresh")
    return data


def run_status(folder: str | os.PathLike) -> str | None:
    """What a folder's manifest says about its run (None without one), with a "running" run that no
    live process holds read as "interrupted" (it was killed before it could say so)."""
    if not (Path(folder) / MANIFEST).is_file():
        return None
    status = read_manifest(folder).get("status")
    if status == "running" and not is_locked(folder):
        return "interrupted"
    return status


def is_finished(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a run whose manifest says it finished (not running, failed or absent)."""
    return (Path(folder) / MANIFEST).is_file() and read_manifest(folder).get("status") == "finished"


def run_lock(folder: str | os.PathLike) -> AbstractContextManager[Any]:
    """The write lock of ``folder`` on rank 0 of a launch (or a single process), nothing on the other
    ranks: they write only their own shard files, while rank 0 holds the folder and its manifest."""
    return folder_lock(folder) if launch_rank_and_world()[0] == 0 else nullcontext()


@contextmanager
def run_folder(folder: str | os.PathLike, config: Mapping[str, Any], seed: int | None,
               **extra: Any) -> Iterator[Path]:
    """A folder whose manifest says "running" until the body finishes, then "finished", "failed" or
    "interrupted" (Ctrl-C, SIGTERM, a full or read-only disk: what a rerun can resume after).

    The folder's lock (:func:`workbench.locking.folder_lock`) is held throughout, so a second run on
    it is refused at once. Processes other than rank 0 of a multi-process launch write nothing and
    take no lock: their body runs the same job, and a second writer could leave a manifest saying
    "finished" while rank 0 is still running.
    """
    folder = Path(folder)
    if launch_rank_and_world()[0] != 0:
        yield folder
        return
    with run_lock(folder):
        before = (folder / MANIFEST).read_text() if (folder / MANIFEST).is_file() else None
        write_manifest(folder, config, seed, status="running", finished_at=None, **extra)
        try:
            yield folder
        except BaseException as exc:
            status = "interrupted" if interrupted(exc) else "failed"
            try:
                write_manifest(folder, config, seed, status=status, finished_at=_now(),
                               error=repr(exc) if status == "failed" else (str(exc) or type(exc).__name__),
                               **extra)
            except OSError as again:  # the disk that failed the body may fail this too: the lock tells
                log.warning("%s: could not record status %r (%s); the manifest says 'running', "
                            "which reads as interrupted once this process ends", folder, status, again)
            raise
        path = write_manifest(folder, config, seed, status="finished", finished_at=_now(), **extra)
        if before is not None and _identity(json.loads(before)) == _identity(read_manifest(folder)):
            _replace_text(path, before)  # a rerun that changed nothing: the earlier record stands


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` stopped a run from outside (Ctrl-C, SIGTERM as SystemExit, a full or read-only
    disk) rather than a fault of the run itself: rerunning the same command resumes it."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return True
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS | READ_ONLY_ERRNOS
