"""The resumable-stage engine: seeds, identity checks, units skipped and rows never written twice."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from workbench.records import SAMPLE_KEY, ShardStore
from workbench.runs import read_manifest
from workbench.stages import ResumeMismatch, WorkUnit, check_identity, derive_seed, run_units, stage


def test_derive_seed_keeps_every_stored_seed():
    # Sample folders' unit seeds: sha256 over "<base seed>\0<benchmark/id>\0...\0", i.e. the parts
    # NUL-separated with an empty last part; values computed by the earlier per-unit seed function.
    assert derive_seed(0, "toy-1/toy-1/0", "") == 289783215
    assert derive_seed(0, "toy-1/toy-1/0", "toy-1/toy-1/1", "") == 1315372131
    assert derive_seed(7, "aime24/3", "") == 212902901
    # The analyses' seeds: the parts NUL-separated, nothing after the last.
    assert derive_seed(0, "boundary") == 289838181
    assert derive_seed(0, "teacher_scratch") == 740635829
    assert derive_seed(3, "continuations", ("toy-3", "x", 1, 0.2, 0)) == 291375451


def test_derive_seed_width_and_definition():
    digest = hashlib.sha256(b"5\x001").hexdigest()
    assert derive_seed(5, 1) == int(digest[:8], 16) & 0x7FFFFFFF
    assert derive_seed(5, 1, bits=56) == int(digest[:14], 16)
    seeds = [derive_seed(0, i, bits=56) for i in range(200)]
    assert all(0 <= s < 2**56 for s in seeds) and len(set(seeds)) == 200
    assert max(derive_seed(0, i) for i in range(200)) < 2**31
    assert derive_seed(0, "a", "b") != derive_seed(0, "a\0b", "") != derive_seed(0, "ab")
    with pytest.raises(ValueError, match="bits"):
        derive_seed(0, bits=0)


def _rows(unit: WorkUnit, tag: str = "") -> pd.DataFrame:
    return pd.DataFrame([
        {"benchmark": b, "problem_id": p, "sample_idx": i, "prompt": "Q", "response": f"{tag}{unit.seed}",
         "n_tokens": 2, "finish_reason": "stop", "correct": True, "extracted": "1", "grade_error": None}
        for b, p, i in unit.keys
    ])


def _units(n_units: int, per_unit: int = 2) -> list[WorkUnit]:
    return [WorkUnit(u, (), tuple(("toy-1", f"p{u}", i) for i in range(per_unit)), derive_seed(0, u))
            for u in range(n_units)]


def test_run_units_skips_units_on_disk_and_never_writes_a_key_twice(tmp_path):
    store = ShardStore(tmp_path)
    units = _units(3)
    calls = []

    def produce(unit):
        calls.append(unit.index)
        return _rows(unit)

    run_units(store, units[:2], produce, desc="t", progress=False)
    run_units(store, units, produce, desc="t", progress=False)
    assert calls == [0, 1, 2]
    assert len(store.shards()) == 3
    # a unit cut differently on a rerun (p1 and p2 together) writes only its rows not yet on disk
    store.path.joinpath(store.shards()[-1].name).unlink()
    merged = WorkUnit(9, (), units[1].keys + units[2].keys, 11)
    run_units(store, [merged], lambda u: _rows(u, "again"), desc="t", progress=False)
    frame = store.read().set_index(list(SAMPLE_KEY))
    assert len(frame) == 6
    assert frame.loc[("toy-1", "p1", 0), "response"] == str(units[1].seed)  # kept, not rewritten
    assert frame.loc[("toy-1", "p2", 0), "response"] == "again11"


def test_stage_records_identity_and_refuses_another(tmp_path):
    identity = {"model": "m", "ratios": [0.2, 0.4]}
    with stage(tmp_path, identity, 3) as folder:
        assert read_manifest(folder)["status"] == "running"
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "finished" and manifest["seed"] == 3
    assert manifest["config"] == {"identity": {"model": "m", "ratios": [0.2, 0.4]}}
    check_identity(tmp_path, dict(identity))  # same settings: resumable
    ran = []
    with pytest.raises(ResumeMismatch, match=r"ratios: on disk \[0.2, 0.4\], now \[0.5\]"):
        with stage(tmp_path, {"model": "m", "ratios": [0.5]}, 3):
            ran.append(True)
    assert not ran
    with pytest.raises(ResumeMismatch, match="unit_size: on disk None, now 4"):
        check_identity(tmp_path, {**identity, "unit_size": 4})
    with pytest.raises(KeyboardInterrupt), stage(tmp_path, identity, 3):
        raise KeyboardInterrupt
    assert read_manifest(tmp_path)["status"] == "interrupted"


def test_a_config_holding_the_identity_is_checked_on_those_fields(tmp_path):
    config = {"model": "m", "graded": True, "extra": {"method": "base"}}
    with stage(tmp_path, {"model": "m", "graded": True}, 0, config=config):
        pass
    assert json.loads((tmp_path / "manifest.json").read_text())["config"] == config
    check_identity(tmp_path, {"model": "m", "graded": True})  # descriptive fields do not count
    with pytest.raises(ResumeMismatch, match="graded: on disk True, now False"):
        check_identity(tmp_path, {"model": "m", "graded": False})
    with pytest.raises(ValueError, match="identity fields"):
        with stage(tmp_path, {"model": "other"}, 0, config=config):
            pass


def test_shards_without_a_manifest_are_refused(tmp_path):
    check_identity(tmp_path / "new", {"model": "m"})  # an empty or missing folder is fine
    ShardStore(tmp_path).append(_rows(_units(1)[0]))
    with pytest.raises(ResumeMismatch, match="holds shards but no manifest.json"):
        check_identity(tmp_path, {"model": "m"})


def test_the_stage_bar_counts_the_graded_rows_and_grading_logs_no_line_per_batch(tmp_path, capsys, caplog):
    """One bar per stage: the grading count sits inside it, not in log lines between its refreshes."""
    import logging

    from workbench.grading import grade_batch

    store = ShardStore(tmp_path)

    def produce(unit):
        rows = _rows(unit)
        with caplog.at_level(logging.INFO, logger="workbench.grading"):
            grades = grade_batch([("The answer is \\boxed{1}.", "1", "toy-1"), ("\\boxed{2}", "1", "toy-1")],
                                 workers=1)
        rows["correct"] = [g.correct for g in grades]
        return rows

    run_units(store, _units(3), produce, desc="sampling t", progress=True, unit="sample")
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    # 3 units x 2 rows, one right and one wrong in each; 2 tokens per row
    assert final.startswith("sampling t: 100%") and "6/6" in final and "6 graded, 3 correct" in final, final
    assert "tok/s" in final
    assert [r for r in caplog.records if r.name.startswith("workbench.grading")] == []
