"""One exception for mistakes a user can fix, and the guard every command line runs its main under.

A wrong flag, a typo in a recipe or a missing folder should cost the user one line naming what to
change, not a traceback from deep inside a library minutes later. Code raises ``UserError`` as soon
as it can tell (before any model loads); ``main_guard`` prints it as ``error: <message>`` and exits 2,
the status argparse uses for usage errors. Ctrl-C exits 130 (128 + SIGINT) with one line, which a
command can make say what was kept by raising ``KeyboardInterrupt(message)``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

USAGE_EXIT = 2
INTERRUPT_EXIT = 130


class UserError(ValueError):
    """A mistake in the command line, a recipe or the files it names; the message says what to change."""


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


def main_guard(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; a UserError or Ctrl-C becomes one line on stderr and exit status 2 or 130."""
    try:
        return main(argv)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt as exc:
        print(f"interrupted: {exc or 'stopped by Ctrl-C'}", file=sys.stderr)
        return INTERRUPT_EXIT
