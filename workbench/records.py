"""One schema for everything the workbench writes about problems, samples and rollouts.

Evaluation samples and training rollouts share one parquet layout so that eval tables, training logs and
the analyses can read each other's files. Writes are append-only shards renamed into place atomically: a
job killed at any instant leaves only whole shards behind, and a rerun skips the keys already on disk, so
nothing is lost or written twice. A shard changed on disk afterwards (a flipped bit, a file cut short or
overwritten) is found by :meth:`ShardStore.verify` against the sha256 its folder's manifest recorded, or,
for a shard written since, by reading it whole against the schema. Rows are read back in key order, so
what is computed from them does not depend on the shards' names or the order a disk lists them in.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A benchmark item; `answer` is the reference answer exactly as the source gives it."""

    benchmark: str
    problem_id: str
    problem: str
    answer: str
    meta: Mapping[str, Any] = field(default_factory=dict)


SAMPLE_KEY = ("benchmark", "problem_id", "sample_idx")

SAMPLE_SCHEMA = pa.schema(
    [
        ("benchmark", pa.string()),
        ("problem_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("n_tokens", pa.int32()),
        ("finish_reason", pa.string()),
        ("correct", pa.bool_()),
        ("extracted", pa.string()),
        ("grade_error", pa.string()),
    ]
)

TOKEN_IDS = pa.field("token_ids", pa.list_(pa.int32()))
"""The sampled token ids: an optional column of samples and rollouts, kept when a stage needs the exact
tokens (a teacher scoring the student's own tokens, not a re-tokenised text)."""
OPTIONAL_FIELDS = pa.schema([TOKEN_IDS])
"""Columns no schema requires that keep their declared type whenever a store writes them."""

ROLLOUT_SCHEMA = pa.schema(
    list(SAMPLE_SCHEMA)
    + [
        ("group_id", pa.int64()),
        ("student_logps", pa.list_(pa.float32())),
        ("teacher_logps", pa.list_(pa.float32())),
        ("weight", pa.float32()),
        ("path", pa.string()),
    ]
)


def _table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"records are missing required columns {missing}; have {list(df.columns)}")
    extra = [c for c in df.columns if c not in schema.names]
    table = pa.Table.from_pandas(df[schema.names + extra], preserve_index=False)
    fields = [schema.field(c) if c in schema.names else OPTIONAL_FIELDS.field(c) if c in OPTIONAL_FIELDS.names
              else table.schema.field(c) for c in table.column_names]
    return table.cast(pa.schema(fields))


PART = re.compile(r"part-(\d+)")
CORRUPT_DIR = ".corrupt"
"""Where a shard that failed verification is moved (not deleted: it is the user's file)."""


class CorruptShard(ValueError):
    """A shard that does not match its recorded hash or cannot be read as the store's schema."""


class ShardStore:
    """A folder of parquet shards holding rows of one schema, keyed for resumption.

    Each `append` writes one new shard under a temporary name and renames it into place, so readers
    never see half a file. Reading concatenates the shards and drops repeated keys (first write wins),
    which makes an interrupted-then-rerun job idempotent even if it re-appended rows. Columns beyond
    the schema are kept, an optional one (``OPTIONAL_FIELDS``, e.g. ``token_ids``) with its declared type.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema = SAMPLE_SCHEMA, key: Sequence[str] = SAMPLE_KEY):
        self.path = Path(path)
        self.schema = schema
        self.key = tuple(key)
        unknown = [k for k in self.key if k not in schema.names]
        if unknown:
            raise ValueError(f"key columns {unknown} are not in the schema")

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet")) if self.path.is_dir() else []

    def next_part(self) -> int:
        """One more than the highest part number on disk (or set aside as corrupt), so a shard written
        after one was removed never reuses its number."""
        names = [p.name for p in self.shards()]
        corrupt = self.path / CORRUPT_DIR
        if corrupt.is_dir():
            names += [p.name for p in corrupt.glob("part-*.parquet")]
        numbers = [int(m.group(1)) for m in map(PART.match, names) if m]
        return max(numbers, default=-1) + 1

    def append(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]], *, part: int | None = None) -> Path | None:
        """Write ``rows`` as one new shard, whole or not at all; ``part`` (default :meth:`next_part`)
        numbers it. Only one process may choose part numbers in a folder (the one holding its lock);
        other writers beside it (ranks of a distributed run) pass parts of their own, e.g. unit indices.
        The temp file is this writer's own and is removed if the write fails."""
        table = _table(rows, self.schema)
        if table.num_rows == 0:
            return None
        self.path.mkdir(parents=True, exist_ok=True)
        seq = self.next_part() if part is None else part
        final = self.path / f"part-{seq:06d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.path / f".tmp-{os.getpid()}-{final.name}"
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:  # pyarrow's errors name no file
                raise OSError(exc.errno, os.strerror(exc.errno), str(final)) from exc
            raise
        finally:
            tmp.unlink(missing_ok=True)
        log.debug("wrote %d rows to %s", table.num_rows, final)
        return final

    def check_shard(self, path: Path, recorded: str | None = None) -> None:
        """Raise :class:`CorruptShard` unless ``path`` has the ``recorded`` sha256 (when one is given)
        and reads whole as a table holding this store's schema."""
        if recorded is not None:
            from workbench.runs import sha256_file

            actual = sha256_file(path)
            if actual != recorded:
                raise CorruptShard(f"its sha256 {actual[:12]}... is not the {recorded[:12]}... its manifest "
                                   "recorded")
        try:
            table = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise CorruptShard(f"unreadable as parquet ({' '.join(str(exc).split())[:120]})") from None
        for want in self.schema:
            if want.name not in table.schema.names:
                raise CorruptShard(f"has no column {want.name!r}")
            got = table.schema.field(want.name).type
            if got != want.type and not (pa.types.is_null(got) and want.nullable):
                raise CorruptShard(f"column {want.name!r} is {got}, not {want.type}")

    def verify(self, recorded: Mapping[str, str] | None = None, *, set_aside: bool = True) -> list[Path]:
        """Check every shard (against ``recorded``, name -> sha256, where it lists the shard) and
        return the bad ones, each named in one warning line; ``set_aside`` moves them to ``.corrupt/``
        so that their units are produced again."""
        bad = []
        for path in self.shards():
            try:
                self.check_shard(path, (recorded or {}).get(path.name))
            except CorruptShard as exc:
                bad.append(path)
                if set_aside:
                    (self.path / CORRUPT_DIR).mkdir(exist_ok=True)
                    os.replace(path, self.path / CORRUPT_DIR / path.name)
                    log.warning("%s: %s; moved to %s/ and its unit is produced again", path, exc, CORRUPT_DIR)
                else:
                    log.warning("%s: %s", path, exc)
        return bad

    def read(self) -> pd.DataFrame:
        """Every stored row once (the first shard in part order wins a repeated key), in key order."""
        shards = self.shards()
        if not shards:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in self.schema.names})
        df = pd.concat([pq.read_table(p).to_pandas() for p in shards], ignore_index=True)
        before = len(df)
        df = df.drop_duplicates(list(self.key), keep="first")
        if len(df) < before:
            log.warning("%s: dropped %d rows with repeated keys", self.path, before - len(df))
        return df.sort_values(list(self.key), kind="stable").reset_index(drop=True)

    def keys(self) -> set[tuple]:
        """Keys already stored; reads only the key columns."""
        out: set[tuple] = set()
        for p in self.shards():
            t = pq.read_table(p, columns=list(self.key))
            out.update(zip(*(t.column(k).to_pylist() for k in self.key)))
        return out


def read_records(path: str | os.PathLike) -> pd.DataFrame:
    """Read a shard folder or a single parquet file, whichever `path` is.

    A folder's shards are verified first (:meth:`ShardStore.verify`, against its manifest's hashes);
    a bad one is refused in one line (a :class:`~workbench.errors.UserError`), since a reader cannot
    produce it again: the command that wrote the folder, rerun, does.
    """
    from workbench.errors import UserError
    from workbench.runs import MANIFEST, read_manifest

    p = Path(path)
    if p.is_dir():
        shards = sorted(p.glob("part-*.parquet"))
        if not shards:
            raise FileNotFoundError(f"no parquet shards in {p}")
        store = ShardStore(p, SAMPLE_SCHEMA)
        bad = store.verify(read_manifest(p).get("files", {}) if (p / MANIFEST).is_file() else {}, set_aside=False)
        if bad:
            raise UserError(f"{bad[0]} is corrupt (see the warning above){' and %d more' % (len(bad) - 1) if len(bad) > 1 else ''}; "
                            "rerun the command that wrote this folder: it sets bad shards aside and "
                            "produces their units again")
        cols = pq.read_schema(shards[0]).names
        schema = ROLLOUT_SCHEMA if "group_id" in cols else SAMPLE_SCHEMA
        return ShardStore(p, schema).read()
    if p.is_file():
        return pd.read_parquet(p)
    raise FileNotFoundError(f"no records at {p}")


def in_problem_order(frame: pd.DataFrame, problems: Sequence[Problem]) -> pd.DataFrame:
    """The rows of ``problems`` in problem order, then sample index (rows of other problems dropped)."""
    order = {(p.benchmark, p.problem_id): i for i, p in enumerate(problems)}
    pos = pd.Series([order.get(k) for k in zip(frame["benchmark"], frame["problem_id"])], index=frame.index)
    frame = frame[pos.notna()].assign(_pos=pos[pos.notna()].astype(int))
    return frame.sort_values(["_pos", "sample_idx"]).drop(columns="_pos").reset_index(drop=True)
