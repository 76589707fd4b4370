"""Resumable stages: work cut into seeded units, each one atomic shard, refused when resumed with other settings.

Sampling or scoring at the paper's protocol takes hours, so a killed stage must resume to exactly the
rows of an uninterrupted run. How units, identities and shard checks do it: docs/faults.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.distributed import World, current_world
from workbench.errors import UserError
from workbench.layout import REPO_ROOT
from workbench.locking import folder_lock
from workbench.records import ShardStore
from workbench.runs import MANIFEST, read_manifest, run_folder

log = logging.getLogger(__name__)

IDENTITY = "identity"
"""The manifest config entry holding a stage's identity, unless the config lists it as its own fields."""
MAX_HASHED_WEIGHTS = 64 << 20


class ResumeMismatch(UserError):
    """The folder holds rows made with other settings; continuing would mix two runs."""


def derive_seed(*parts: object, bits: int = 31) -> int:
    """A seed from a sha256 of ``parts`` (as text, NUL-separated): the same parts give the same seed on
    every machine and rerun, whatever ran before.

    31 bits by default, because numpy's global seeding (used by transformers' ``set_seed``) takes at
    most 32; the leading ``ceil(bits / 4)`` hex digits of the digest, masked to ``bits``.
    """
    if not 1 <= bits <= 256:
        raise ValueError(f"bits must be in 1..256, got {bits}")
    digest = hashlib.sha256("\0".join(map(str, parts)).encode("utf-8")).hexdigest()
    return int(digest[: -(-bits // 4)], 16) & ((1 << bits) - 1)


def sha256_lines(lines: Sequence[str]) -> str:
    """sha256 of the lines, each followed by a NUL byte: a digest of a list that no regrouping of its
    text can imitate."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def model_name(backend: Any) -> str:
    """How a backend identifies its model in manifests (``name`` attribute, else the class).

    A local folder inside the repository is named relative to it, so committed outputs of a committed
    checkpoint still resume in a clone at another path.
    """
    return model_id(str(getattr(backend, "name", type(backend).__name__)))


def model_id(name: str) -> str:
    """A model's name as manifests record it (see :func:`model_name`), from the name alone."""
    path = Path(name)
    if not path.is_dir():
        return name
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def weights_sha256(name: str) -> str | None:
    """A digest of a local checkpoint's safetensors, when small enough to read in a moment.

    Retraining a toy model keeps its folder name; without the digest a rerun would silently keep the
    old model's outputs. Large (real) checkpoints are not hashed: None.
    """
    path = Path(name) if Path(name).is_dir() else REPO_ROOT / name
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files or sum(f.stat().st_size for f in files) > MAX_HASHED_WEIGHTS:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def check_identity(folder: str | os.PathLike, identity: Mapping[str, Any]) -> None:
    """Refuse to add to a stage folder whose manifest records another identity.

    The identity is read where :func:`stage` wrote it: the config's ``identity`` entry, or, in a
    folder whose manifest config describes more than its identity (a sample folder also lists its
    benchmarks and the caller's notes), the config's own fields named by ``identity``. A folder with
    shards but no manifest cannot be checked, so it is refused too.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        if ShardStore(folder).shards():
            raise ResumeMismatch(f"{folder} holds shards but no {MANIFEST}; use an empty folder")
        return
    config = read_manifest(folder).get("config", {})
    current = json.loads(json.dumps(dict(identity), default=str))
    if IDENTITY in config:
        recorded = config[IDENTITY] or {}
        names = sorted(set(recorded) | set(current))
    else:
        recorded, names = config, list(current)
    diffs = [f"{k}: on disk {recorded.get(k)!r}, now {current.get(k)!r}"
             for k in names if recorded.get(k) != current.get(k)]
    if diffs:
        raise ResumeMismatch(f"{folder} was made with other settings; use the same settings, another folder, "
                             "or delete it to start afresh.\n  " + "\n  ".join(diffs))


@contextmanager
def stage(folder: str | os.PathLike, identity: Mapping[str, Any], seed: int | None, *,
          config: Mapping[str, Any] | None = None, store: ShardStore | None = None,
          world: World | None = None, **extra: Any) -> Iterator[Path]:
    """A locked stage folder, checked against ``identity`` first, whose manifest says "running" until
    the body finishes, then "finished", "failed" or "interrupted".

    The manifest config is ``{"identity": identity}``, or ``config`` when given, which must then hold
    the identity's fields as its own (see :func:`check_identity`). ``extra`` goes into the manifest
    beside the config (e.g. a ``kind``). The shards of ``store`` (a store in ``folder``) are verified
    before the manifest is rewritten, and bad ones set aside (see :meth:`ShardStore.verify`). Among the
    workers of a distributed launch, rank 0 alone locks, verifies and writes the manifest; the others
    wait for it, then check the folder against their identity. ``world`` defaults to the joined one.
    """
    if config is not None:
        missing = [k for k in identity if k not in config or config[k] != identity[k]]
        if missing:
            raise ValueError(f"config must hold the identity fields {missing} as they are")
    manifest_config = {IDENTITY: dict(identity)} if config is None else config
    world = world or current_world()
    if not world.is_writer:
        world.barrier()  # rank 0 has locked, verified and written the manifest
        check_identity(folder, identity)
        yield Path(folder)
        return
    with folder_lock(folder):
        check_identity(folder, identity)
        if store is not None:
            recorded = read_manifest(folder).get("files", {}) if (Path(folder) / MANIFEST).is_file() else {}
            store.verify(recorded)
        with run_folder(folder, manifest_config, seed, **extra) as path:
            world.barrier()
            yield path


@dataclass(frozen=True)
class WorkUnit:
    """One shard's worth of work: the rows it must produce are named by ``keys`` (the store's key)."""

    index: int
    items: tuple[Any, ...]
    keys: tuple[tuple[Hashable, ...], ...]
    seed: int


def run_units(store: ShardStore, units: Sequence[WorkUnit], produce: Callable[[WorkUnit], pd.DataFrame], *,
              desc: str, progress: bool = True, unit: str = "row", world: World | None = None) -> None:
    """Produce and append every unit whose keys are not all on disk yet, one atomic shard each.

    Rows already stored are filtered out before appending, so a unit cut differently on a rerun can
    never write a key twice. With several workers (``world``), every worker lists what is on disk,
    waits for the others, then takes every ``size``-th unit still to do; each shard is named by its
    unit's index, so the folder ends the same whoever wrote which shard, and the call returns when all
    workers are done. The progress bar counts rows (named ``unit``), tokens per second and how many were
    graded and found correct (the grader's own per-batch summary is a debug line, so the bar stays one
    line); with several workers, rank 0's bar counts the units done by all of them.
    """
    world = world or World()
    on_disk = store.keys()
    todo = [u for u in units if not all(k in on_disk for k in u.keys)]
    if len(todo) < len(units) and world.is_writer:
        log.info("%s: %d of %d units already on disk, %d to do", desc, len(units) - len(todo), len(units), len(todo))
    world.barrier()  # nobody writes before every worker has listed the same units to do
    mine = world.share(todo)
    if world.size > 1:
        log.info("%s: worker %d of %d takes %d of %d units", desc, world.rank, world.size, len(mine), len(todo))
    watcher = _UnitsBar(store, len(units), len(units) - len(todo), desc, progress and world.is_writer) \
        if world.size > 1 else None
    total = sum(len(u.keys) for u in units)
    bar = tqdm(total=total, initial=total - sum(len(u.keys) for u in todo), unit=unit, desc=desc,
               disable=not progress or world.size > 1)
    tokens, graded, correct, start = 0, 0, 0, time.perf_counter()
    try:
        for work in mine:
            rows = produce(work)
            fresh = ~pd.Series([tuple(r) in on_disk for r in rows[list(store.key)].itertuples(index=False)],
                               index=rows.index, dtype=bool)
            store.append(rows[fresh], part=work.index)
            postfix = []
            if "correct" in rows:
                verdicts = rows["correct"].dropna()
                graded, correct = graded + len(verdicts), correct + int(verdicts.astype(bool).sum())
                postfix.append(f"{graded} graded, {correct} correct")
            if "n_tokens" in rows:
                tokens += int(rows["n_tokens"].sum())
                postfix.append(f"{tokens / max(time.perf_counter() - start, 1e-9):.0f} tok/s")
            if postfix:
                bar.set_postfix_str(", ".join(postfix), refresh=False)
            bar.update(len(work.keys))
        world.barrier()  # every share is on disk
    finally:
        bar.close()
        if watcher is not None:
            watcher.close()


class _UnitsBar:
    """Rank 0's view of a run spread over workers: units on disk, counted from the shard files."""

    def __init__(self, store: ShardStore, total: int, done: int, desc: str, enabled: bool) -> None:
        self.store, self.start_shards = store, len(store.shards())
        self.bar = tqdm(total=total, initial=done, unit="unit", desc=f"{desc} (all workers)", disable=not enabled)
        self.done, self.stop = done, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True) if enabled else None
        if self.thread is not None:
            self.thread.start()

    def _poll(self) -> None:
        now = min(self.bar.total, self.done + len(self.store.shards()) - self.start_shards)
        if now > self.bar.n:
            self.bar.update(now - self.bar.n)

    def _watch(self) -> None:
        while not self.stop.wait(2.0):
            self._poll()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self._poll()
        self.bar.close()
