"""One writer per output folder: an advisory lock that a second run meets at once, not after hours.

``fcntl.flock`` dies with its process, so a killed run's lock is simply taken over; :func:`replace_set`
swaps a set of files that belong together whole or not at all. How, and the limits: docs/faults.md.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from workbench.errors import UserError, command_line

log = logging.getLogger(__name__)

LOCK_FILE = ".scope.lock"
TEMP_PREFIXES = (".tmp-", ".staging-")
"""Names of half-written files and folders a writer makes and renames or removes when done."""
TEMP_SUFFIX = ".tmp"
PENDING = ".pending-set"
"""A complete new file set, committed but not yet moved into place (see :func:`replace_set`)."""
LAST = "manifest.json"


class FolderLocked(UserError):
    """Another live process writes this folder."""


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def _key(folder: str | os.PathLike) -> Path:
    return Path(folder).resolve()


def holder(folder: str | os.PathLike) -> dict | None:
    """Who holds (or last held, if it died) the lock of ``folder``, as recorded in its lock file."""
    try:
        text = (Path(folder) / LOCK_FILE).read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether a live process (this one included) holds the lock of ``folder``."""
    if _key(folder) in _held:
        return True
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')} "
            f"({info.get('command')})")


def _acquire(folder: Path) -> int:
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLocked(f"{folder} is being written by {_describe(holder(folder))}; wait for it to "
                               "finish, or pass another output folder") from None
        except BaseException:
            os.close(fd)
            raise
        # The previous holder removes the file on release: if it did so between our open and our
        # flock, we locked an unlinked file that nobody else will ever see, so try again.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the write lock of ``folder`` (created if missing) for the body; a folder held by another
    live process raises :class:`FolderLocked` at once, naming the holder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(folder)
    with _guard:
        held = _held.get(key)
        if held is not None:
            held.count += 1
        else:
            fd = _acquire(folder)
            previous = holder(folder)
            if previous and previous.get("pid") != os.getpid():
                log.info("%s: taking over the lock left by %s, which is no longer running", folder,
                         _describe(previous))
            info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
                    "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            _held[key] = _Held(fd, 1)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
                install_pending(folder)
                clean_temp_files(folder)
            except BaseException:
                _release(folder, key)
                raise
    try:
        yield folder
    finally:
        with _guard:
            _release(folder, key)


def _release(folder: Path, key: Path) -> None:
    """Drop one hold of ``folder``; the last one removes the lock file and unlocks it."""
    held = _held[key]
    held.count -= 1
    if held.count == 0:
        del _held[key]
        try:
            os.unlink(folder / LOCK_FILE)  # while still locked: the next taker sees a fresh file
        except OSError:
            pass
        os.close(held.fd)


def clean_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the half-written files and staging folders a killed writer left directly in ``folder``.

    Only call with the folder's lock held: a live writer's temp files look the same.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        name = path.name
        if not (name.startswith(TEMP_PREFIXES) or (name.startswith(".") and name.endswith(TEMP_SUFFIX))):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            continue
        removed.append(path)
    if removed:
        log.info("%s: removed %d temp file(s) left by an interrupted writer: %s", folder, len(removed),
                 ", ".join(p.name for p in removed))
    return removed


def install_pending(folder: str | os.PathLike) -> bool:
    """Move a committed pending set (left by a writer killed while installing it) into place, its
    manifest last; returns whether there was one. Only call with the folder's lock held."""
    folder = Path(folder)
    pending = folder / PENDING
    if not pending.is_dir():
        return False
    names = sorted((p.name for p in pending.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda name: (name == LAST, name))
    for name in names:
        os.replace(pending / name, folder / name)
    shutil.rmtree(pending)  # whatever else a writer left in its staging folder (temp files)
    log.info("%s: installed a new file set (%d files)", folder, len(names))
    return True


@contextmanager
def replace_set(folder: str | os.PathLike) -> Iterator[Path]:
    """A staging folder holding the files of ``folder`` (hard links, so nothing is copied), in which
    the body writes a new set, always through temp files renamed into place (never in place: that
    would change the old set through its links); when the body ends, the staging folder's files
    replace the folder's together (see the module note). An exception leaves the folder as it was."""
    folder = Path(folder)
    with folder_lock(folder):
        staging = folder / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    try:
                        os.link(path, staging / path.name)
                    except OSError:
                        shutil.copy2(path, staging / path.name)
            yield staging
            os.replace(staging, folder / PENDING)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        install_pending(folder)
