"""Verdicts kept so a repeated answer is graded once, in memory or in a sqlite file."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import sqlite3
import threading

from workbench.data import BENCHMARKS, get_spec

logger = logging.getLogger(__name__)

CacheKey = tuple[str, str, str]  # (benchmark, gold as math-verify sees it, predictions as math-verify sees them)
Verdict = tuple[bool, "str | None"]  # (correct, error)


@functools.cache
def _library_versions() -> str:
    return "; ".join(importlib.metadata.version(p) for p in ("math-verify", "latex2sympy2_extended"))


def grader_version(benchmark: str) -> str:
    """What a verdict on ``benchmark`` depends on beyond its strings: the benchmark's rules version
    (``rules_version`` of its registry entry) and the math-verify libraries. Each benchmark has its
    own, so changing one benchmark's rules invalidates only that benchmark's cached verdicts."""
    return f"rules {get_spec(benchmark).rules_version}; math-verify {_library_versions()}"


class GradeCache:
    """Verdicts keyed by what math-verify compares, so a repeated answer is verified once.

    Samples repeat final answers a lot (32 samples of a problem share a handful of answers), and
    different spellings that normalise alike (``1 000`` and ``1{,}000``) share an entry. With
    ``path``, verdicts persist in a sqlite file across runs; a stored row counts only while its
    benchmark is registered and the row's version is the benchmark's current :func:`grader_version`.
    Only load-independent verdicts are stored: never a timeout or a crash.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._verdicts: dict[CacheKey, Verdict] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            current = {name: grader_version(name) for name in BENCHMARKS}
            with sqlite3.connect(self.path) as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS verdicts (version TEXT, benchmark TEXT, gold TEXT, "
                    "extracted TEXT, correct INTEGER, error TEXT, "
                    "PRIMARY KEY (version, benchmark, gold, extracted))"
                )
                rows = db.execute("SELECT version, benchmark, gold, extracted, correct, error FROM verdicts")
                for version, benchmark, gold, extracted, correct, error in rows:
                    if current.get(benchmark) == version:
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
                        [(grader_version(key[0]), *key, int(c), e) for key, (c, e) in verdicts.items()],
                    )


def cacheable(verdict: Verdict) -> bool:
    """Ordinary verdicts and parse errors depend only on the strings; timeouts, crashes and
    exceptions (a ``MemoryError`` can be the machine's state) may not."""
    error = verdict[1]
    return error is None or error.startswith("parse_error")
