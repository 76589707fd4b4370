"""One exception for mistakes a user can fix, and the guard every command line runs its main under.

A wrong flag, a typo in a recipe or a missing folder should cost the user one line naming what to
change, not a traceback from deep inside a library minutes later. Code raises ``UserError`` as soon
as it can tell (before any model loads); ``main_guard`` prints it as ``error: <message>`` and exits 2,
the status argparse uses for usage errors. Ctrl-C exits 130 (128 + SIGINT) with one line, which a
command can make say what was kept by raising ``KeyboardInterrupt(message)``; otherwise the line says
that finished work is kept and gives the exact command that resumes. A disk that is full or read-only
is the user's to fix too: one line naming the file and the cause, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from workbench.layout import REPO_ROOT

USAGE_EXIT = 2
INTERRUPT_EXIT = 130
TERMINATE_EXIT = 143  # 128 + SIGTERM
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class UserError(ValueError):
    """A mistake in the command line, a recipe or the files it names; the message says what to change."""


class FieldError(UserError):
    """A config field holding a value no run can use; ``field`` names it, so a command line can name
    its own option instead (``argument --rollouts: must be at least 1, got 0``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


class UserArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors, printed by ``main_guard`` as one line, not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def did_you_mean(word: str, choices: Iterable[str], fmt: str = "'{}'") -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` to a mistyped ``word``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {fmt.format(close[0])}?" if close else ""


def check_model_name(what: str, name: str) -> None:
    """A model named by a path that can only be local (absolute, ``./``, ``~``, deeper than the hub's
    ``org/name``, or under a folder that exists here) must exist; anything else may be a hub id."""
    path = Path(name).expanduser()
    if path.exists():
        return
    parts = Path(name).parts
    local = (path.is_absolute() or name.startswith((".", "~")) or len(parts) > 2
             or (len(parts) == 2 and Path(parts[0]).is_dir()))
    if local:
        raise UserError(f"{what}: {name} does not exist; give an existing model folder or a hub id (org/name)")


def repo_relative(value: str | os.PathLike) -> str:
    """A path inside the repository as a path relative to its root; anything else unchanged."""
    text = os.fspath(value)
    if not os.path.isabs(text):
        return text
    try:
        return Path(text).relative_to(REPO_ROOT).as_posix() or "."
    except ValueError:
        return text


def command_line(runnable: bool = False) -> str:
    """How this process was started, the same in every clone: ``python -m pkg.mod args`` for a module,
    else the script's file name (``runnable``: ``python`` and its path), with arguments inside the
    repository made relative."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    elif not (sys.argv and sys.argv[0]):
        head = ["python"]
    else:
        head = ["python", repo_relative(os.path.abspath(sys.argv[0]))] if runnable else [Path(sys.argv[0]).name]
    return shlex.join([*head, *(repo_relative(arg) for arg in sys.argv[1:])])


def disk_error(exc: OSError) -> str | None:
    """One line for a write that failed because the disk is full or read-only, else None."""
    where = f" writing {repo_relative(exc.filename)}" if exc.filename else ""
    if exc.errno in FULL_ERRNOS:
        return (f"disk full{where} ({exc.strerror}); free some space, then run the same command again: "
                "finished work is kept and resumes")
    if exc.errno in READ_ONLY_ERRNOS:
        return (f"read-only{where} ({exc.strerror}); make the folder writable or write elsewhere, then run "
                "the same command again")
    return None


class Terminated(SystemExit):
    """SIGTERM (a scheduler's preemption, ``kill``), raised in the main thread so that a run records
    itself as interrupted and removes its temp files on the way out, as after Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(TERMINATE_EXIT)


def main_guard(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a UserError, a full or read-only disk or Ctrl-C becomes one line on stderr
    and exit status 2 or 130; SIGTERM, where nothing else handles it, exits 143 with one line."""
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return main(argv)
    except Terminated:
        print(f"interrupted: stopped by SIGTERM; finished work is kept; run the same command to resume: "
              f"{command_line(runnable=True)}", file=sys.stderr)
        return TERMINATE_EXIT
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_EXIT
    except OSError as exc:
        line = disk_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt as exc:
        said = str(exc) or (f"stopped by Ctrl-C; finished work is kept; run the same command to resume: "
                            f"{command_line(runnable=True)}")
        print(f"interrupted: {said}", file=sys.stderr)
        return INTERRUPT_EXIT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
