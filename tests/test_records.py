import multiprocessing as mp
import os
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench.records import ROLLOUT_SCHEMA, SAMPLE_SCHEMA, TOKEN_IDS, ShardStore, read_records


def sample_rows(benchmark, pid, n, **extra):
    return [
        dict(benchmark=benchmark, problem_id=pid, sample_idx=i, prompt="Q", response=f"r{i}", n_tokens=3,
             finish_reason="stop", correct=i % 2 == 0, extracted=str(i), grade_error=None, **extra)
        for i in range(n)
    ]


def test_append_read_roundtrip(tmp_path):
    store = ShardStore(tmp_path / "s")
    store.append(sample_rows("toy-1", "p0", 3))
    store.append(pd.DataFrame(sample_rows("toy-1", "p1", 2)))
    df = store.read()
    assert len(df) == 5
    assert sorted(df.problem_id.unique()) == ["p0", "p1"]
    assert df.correct.tolist().count(True) == 3
    assert store.keys() == {("toy-1", "p0", 0), ("toy-1", "p0", 1), ("toy-1", "p0", 2), ("toy-1", "p1", 0), ("toy-1", "p1", 1)}
    assert df.grade_error.isna().all()


def test_extra_columns_are_kept(tmp_path):
    store = ShardStore(tmp_path)
    store.append(sample_rows("toy-1", "p0", 2, method="scope", seed=3))
    df = read_records(tmp_path)
    assert df.method.tolist() == ["scope", "scope"] and df.seed.tolist() == [3, 3]


def test_missing_column_is_a_clear_error(tmp_path):
    rows = sample_rows("toy-1", "p0", 1)
    del rows[0]["response"]
    with pytest.raises(ValueError, match="response"):
        ShardStore(tmp_path).append(rows)


def test_repeated_keys_keep_first_write(tmp_path):
    store = ShardStore(tmp_path)
    store.append(sample_rows("toy-1", "p0", 2))
    again = sample_rows("toy-1", "p0", 2)
    again[0]["response"] = "changed"
    store.append(again)
    df = store.read()
    assert len(df) == 2
    assert df.set_index("sample_idx").response[0] == "r0"


def test_rollout_schema_lists(tmp_path):
    rows = [dict(r, group_id=7, student_logps=[-0.1, -0.2], teacher_logps=[-0.3, -0.4], weight=0.5, path="opd")
            for r in sample_rows("toy-2", "p0", 2)]
    store = ShardStore(tmp_path, ROLLOUT_SCHEMA)
    store.append(rows)
    df = read_records(tmp_path)
    assert list(df.student_logps[0]) == pytest.approx([-0.1, -0.2])
    assert df.path.tolist() == ["opd", "opd"]


def test_token_ids_are_an_optional_int32_column(tmp_path):
    store = ShardStore(tmp_path)
    store.append(sample_rows("toy-1", "p0", 2))  # samples without token ids
    store.append(sample_rows("toy-1", "p1", 1, token_ids=[5, 70000]))  # python ints: int64 until the store casts
    first, second = (pq.read_schema(p) for p in store.shards())
    assert "token_ids" not in first.names
    assert second.field("token_ids") == TOKEN_IDS and second.field("token_ids").type == pa.list_(pa.int32())
    df = store.read().set_index("problem_id")
    assert list(df.loc["p1", "token_ids"]) == [5, 70000]
    assert df.loc["p0", "token_ids"].isna().all()


def _writer(path, go):
    store = ShardStore(path)
    for k in range(10_000):
        store.append(sample_rows("toy-1", f"p{k}", 4))
        go.set()


def test_killed_writer_leaves_only_whole_shards(tmp_path):
    """SIGKILL mid-run: every shard on disk is readable and holds whole problems."""
    go = mp.Event()
    proc = mp.get_context("fork").Process(target=_writer, args=(tmp_path, go))
    proc.start()
    go.wait(30)
    time.sleep(0.3)
    os.kill(proc.pid, 9)
    proc.join()
    df = ShardStore(tmp_path).read()
    assert len(df) > 0
    assert (df.groupby("problem_id").size() == 4).all()
    assert set(df.columns) >= set(SAMPLE_SCHEMA.names)
