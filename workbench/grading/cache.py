"""Verdicts kept so a repeated answer is graded once, in memory or in a sqlite file."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sqlite3
import threading

logger = logging.getLogger(__name__)

RULES_VERSION = "2"
"""Bump when answer handling changes, so persisted verdicts from older rules are ignored."""

CacheKey = tuple[str, str, str]  # (benchmark, gold as math-verify sees it, predictions as math-verify sees them)
Verdict = tuple[bool, "str | None"]  # (correct, error)


def grader_version() -> str:
    versions = (importlib.metadata.version(p) for p in ("math-verify", "latex2sympy2_extended"))
    return f"rules {RULES_VERSION}; math-verify {'; '.join(versions)}"


class GradeCache:
    """Verdicts keyed by what math-verify compares, so a repeated answer is verified once.

    Samples repeat final answers a lot (32 samples of a problem share a handful of answers), and
    different spellings that normalise alike (``1 000`` and ``1{,}000``) share an entry. With
    ``path``, verdicts persist in a sqlite file across runs; rows written under other grading
    rules or library versions are ignored. Only load-independent verdicts are stored: never a
    timeout or a crash.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.version = grader_version()
        self._verdicts: dict[CacheKey, Verdict] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            with sqlite3.connect(self.path) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS verdicts (version TEXT, benchmark TEXT, gold TEXT, "
                    "extracted TEXT, correct INTEGER, error TEXT, "
                    "PRIMARY KEY (version, benchmark, gold, extracted))"
                )
                rows = db.execute(
                    "SELECT benchmark, gold, extracted, correct, error FROM verdicts WHERE version = ?",
                    (self.version,),
                )
                for benchmark, gold, extracted, correct, error in rows:
                    self._verdicts[(benchmark, gold, extracted)] = (bool(correct), error)
            logger.info("grade cache %s: %d verdicts loaded", self.path, len(self._verdicts))

    def __len__(self) -> int:
        return len(self._verdicts)

    def get(self, key: CacheKey) -> Verdict | None:
        """The cached (correct, error) for a key, or None."""
        with self._lock:
            return self._verdicts.get(key)

    def put_many(self, verdicts: dict[CacheKey, Verdict]) -> None:
        """Store load-independent verdicts (and write them to the sqlite file, if any) in one transaction."""
        verdicts = {key: verdict for key, verdict in verdicts.items() if cacheable(verdict)}
        with self._lock:
            self._verdicts.update(verdicts)
            if self.path is not None and verdicts:
                with sqlite3.connect(self.path) as db:
                    db.executemany(
                        "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                        [(self.version, *key, int(c), e) for key, (c, e) in verdicts.items()],
                    )


def cacheable(verdict: Verdict) -> bool:
    """Ordinary verdicts and parse errors depend only on the strings; timeouts, crashes and
    exceptions (a ``MemoryError`` can be the machine's state) may not."""
    error = verdict[1]
    return error is None or error.startswith("parse_error")
