"""The reproduce-tables pipeline: checkpoint discovery, the CLI's three modes, rebuilds byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import eval.folders as folders
import eval.reproduce as reproduce
from eval.folders import (
    BASE_METHOD,
    Checkpoint,
    discover_checkpoints,
    model_label,
    real_settings,
    toy_settings,
    toy_tables_dir,
)
from eval.metrics import seed_ci
from eval.reproduce import main, parse_args
from eval.table_sets import build_tables
from workbench.data import REAL_BENCHMARKS, get_spec
from workbench.errors import UserError
from workbench.records import read_records
from workbench.runs import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
STEMS = ("toy_avg@4", "toy_pass@4", "toy_pass@4_unbiased")


def _save_random_toy_model(out: Path, seed: int) -> Path:
    """An untrained toy-vocabulary model standing in for a trained run's checkpoint."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_discovery_finds_base_then_finished_runs_in_order(tmp_path):
    base = _fake_model(tmp_path / "student")
    runs = tmp_path / "runs"
    for rel in ("scope/seed1", "scope/seed0", "opd/seed3", "grpo/seed12"):
        _fake_model(runs / rel / "model")
    (runs / "kd" / "seed1").mkdir(parents=True)  # training has not written a model yet
    _fake_model(runs / "kd" / "seed2" / "model")
    write_manifest(runs / "kd" / "seed2", {}, seed=2, status="running")
    _fake_model(runs / "opd" / "latest" / "model")  # not a seed folder
    write_manifest(runs / "scope" / "seed0", {}, seed=0, status="finished")

    found = discover_checkpoints(runs, base)
    assert found == [
        Checkpoint(BASE_METHOD, 0, base),
        Checkpoint("grpo", 12, runs / "grpo/seed12/model"),
        Checkpoint("opd", 3, runs / "opd/seed3/model"),
        Checkpoint("scope", 0, runs / "scope/seed0/model"),
        Checkpoint("scope", 1, runs / "scope/seed1/model"),
    ]
    assert discover_checkpoints(tmp_path / "nothing-trained", base) == [Checkpoint(BASE_METHOD, 0, base)]
    with pytest.raises(FileNotFoundError, match="toy-models"):
        discover_checkpoints(runs, tmp_path / "missing")
    _fake_model(runs / "base" / "seed1" / "model")
    with pytest.raises(ValueError, match="reserved"):
        discover_checkpoints(runs, base)


def test_model_labels_are_file_name_safe():
    assert model_label("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B") == "deepseek-r1-distill-qwen-1.5b"
    assert model_label("/tmp/smol", "SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4-1"
    assert model_label("smollm2") == "smollm2-135m-instruct"


def test_toy_cli_end_to_end_and_rebuild_is_byte_identical(tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        _save_random_toy_model(runs / "scope" / f"seed{seed}" / "model", seed)
    samples, tables, rebuilt = tmp_path / "samples", tmp_path / "tables", tmp_path / "rebuilt"
    common = ["--toy-size", "1", "--n", "4", "--max-new-tokens", "20", "--quiet"]
    assert main(["--runs-root", str(runs), "--samples-dir", str(samples), "--tables-dir", str(tables), *common]) == 0

    for stem in STEMS:
        assert all((tables / f"{stem}.{ext}").is_file() for ext in ("md", "csv", "tex"))
    assert (tables / "toy_pass_at_k.pdf").stat().st_size > 0 and (tables / "toy_pass_at_k.png").stat().st_size > 0
    manifest = json.loads((tables / "manifest.json").read_text())
    assert [(r["method"], r["seed"]) for r in manifest["config"]["runs"]] == [("base", 0), ("scope", 1), ("scope", 2)]
    assert manifest["config"]["k"] == 4 and manifest["config"]["runs"][0]["samples"] == str(samples / "base/seed0")

    # the table's numbers are the samples' mean correctness, scope's the mean over its seeds
    avg = pd.read_csv(tables / "toy_avg@4.csv", index_col="method")
    base = read_records(samples / "base" / "seed0")
    assert len(base) == 6 * 1 * 4 and set(base["problem_id"].str[:5]) == {f"toy-{t}" for t in range(1, 7)}
    for tier in ("toy-1", "toy-6"):
        expected = 100 * base.loc[base["benchmark"] == tier, "correct"].mean()
        assert avg.loc["base", get_spec(tier).display] == pytest.approx(expected)
    per_seed = [100 * read_records(samples / "scope" / f"seed{s}")["correct"].mean() for s in (1, 2)]
    assert avg.loc["scope", "Average"] == pytest.approx(np.mean(per_seed))
    scope_toy1 = [100 * read_records(samples / "scope" / f"seed{s}").query("benchmark == 'toy-1'")["correct"].mean()
                  for s in (1, 2)]
    if scope_toy1[0] != scope_toy1[1]:
        assert avg.loc["scope", "Toy-1_ci_lo"] == pytest.approx(seed_ci(scope_toy1)[1])
    md = (tables / "toy_avg@4.md").read_text()
    assert md.splitlines()[0].split() == "| method | Toy-1 | Toy-2 | Toy-3 | Toy-4 | Toy-5 | Toy-6 | Average |".split()

    assert main(["--from-samples", str(samples), "--tables-dir", str(rebuilt), "--quiet", "--no-figure"]) == 0
    for stem in STEMS:
        for ext in ("md", "csv", "tex"):
            assert (rebuilt / f"{stem}.{ext}").read_bytes() == (tables / f"{stem}.{ext}").read_bytes(), (stem, ext)


def test_real_cli_on_a_slice_shows_the_papers_rows_as_reference(tmp_path, tiny_lm, fixture_data_dir):
    samples, tables = tmp_path / "samples", tmp_path / "tables"
    assert main(["--model", str(tiny_lm), "--data-dir", str(fixture_data_dir), "--limit", "1", "--n", "2",
                 "--max-new-tokens", "3", "--samples-dir", str(samples), "--tables-dir", str(tables),
                 "--quiet", "--no-figure"]) == 0
    label = model_label(str(tiny_lm))
    frame = read_records(samples / label / "n2_tok3_limit1_seed0")
    assert sorted(frame["benchmark"].unique()) == sorted(REAL_BENCHMARKS) and len(frame) == 6 * 2
    assert not frame["correct"].any()
    avg = pd.read_csv(tables / "real_avg@2.csv", index_col="method")
    assert avg.loc[label, "AIME24"] == 0.0
    paper_row = "paper: deepseek-r1-distill-qwen-1.5b base, @32"
    assert avg.loc[paper_row, "AIME24"] == 29.4 and avg.loc[paper_row, "Average"] == 47.9
    assert not any(c.endswith("_delta") for c in avg.columns)
    md = (tables / "real_pass@2.md").read_text()
    assert "| paper: qwen3-1.7b-base scope, @32 " in md and "(paper)" not in md
    assert "paper" not in (tables / "real_pass@2_unbiased.md").read_text()


def test_a_paper_student_at_n32_gets_deltas_against_its_reported_row(tmp_path):
    student = "deepseek-r1-distill-qwen-1.5b"
    rows = []
    for bench in REAL_BENCHMARKS:
        for pid in ("a", "b"):
            for idx in range(32):
                rows.append(dict(benchmark=get_spec(bench).display, problem_id=pid, sample_idx=idx,
                                 correct=pid == "a" and idx < 16, finish_reason="stop", method=student, seed=0))
    runs = [{"method": student, "seed": 0, "suite": "real"}]
    build_tables(pd.DataFrame(rows), runs, tmp_path, figure=False)
    avg = pd.read_csv(tmp_path / "real_avg@32.csv", index_col="method")
    assert list(avg.index) == ["base"]
    assert avg.loc["base", "AIME24"] == 25.0 and avg.loc["base", "AIME24_paper"] == 29.4
    assert avg.loc["base", "AIME24_delta"] == pytest.approx(25.0 - 29.4)
    pass32 = pd.read_csv(tmp_path / "real_pass@32.csv", index_col="method")
    expected = 100 * (1 - 0.5**32) / 2  # one problem half right, one never right
    assert pass32.loc["base", "MATH500"] == pytest.approx(expected) and pass32.loc["base", "MATH500_paper"] == 97.3
    assert runs[0]["truncated"] == 0


# ------------------------------------------------------------------ tables are never silently lost
def _toy_samples(runs: list[tuple[str, int]], k: int = 4) -> tuple[pd.DataFrame, list[dict]]:
    """Graded samples of a few toy runs, two problems per tier, the first sample of each problem right."""
    rows = [dict(benchmark=f"Toy-{t}", problem_id=f"p{p}", sample_idx=i, correct=i == 0, finish_reason="stop",
                 method=m, seed=s) for m, s in runs for t in range(1, 7) for p in range(2) for i in range(k)]
    return pd.DataFrame(rows), [{"method": m, "seed": s, "suite": "toy"} for m, s in runs]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_tables_are_replaced_only_by_tables_of_at_least_the_same_runs(tmp_path):
    build_tables(*_toy_samples([("base", 0), ("scope", 1)]), tmp_path, figure=False)
    build_tables(*_toy_samples([("base", 0), ("scope", 1), ("scope", 2)]), tmp_path, figure=False)  # a superset
    kept = _snapshot(tmp_path)
    with pytest.raises(UserError, match=r"holds toy tables of 3 runs \(base/seed0, scope/seed1,2\); this run has 2 "
                                        r"\(base/seed0, scope/seed1\) and would lose the rows of scope/seed2; pass "
                                        r"--overwrite \(make reproduce-tables OVERWRITE=1\)"):
        build_tables(*_toy_samples([("base", 0), ("scope", 1)]), tmp_path, figure=False)
    with pytest.raises(UserError, match="holds toy tables at k=4; this run makes k=8"):
        build_tables(*_toy_samples([("base", 0), ("scope", 1), ("scope", 2)], k=8), tmp_path, figure=False)
    assert _snapshot(tmp_path) == kept
    build_tables(*_toy_samples([("base", 0)]), tmp_path, figure=False, overwrite=True)
    assert list(pd.read_csv(tmp_path / "toy_avg@4.csv", index_col="method").index) == ["base"]

    (tmp_path / "manifest.json").unlink()
    with pytest.raises(UserError, match="without a manifest.json, so the runs they show are unknown"):
        build_tables(*_toy_samples([("base", 0)]), tmp_path, figure=False)


def test_a_clone_without_trained_runs_keeps_the_five_method_tables(tmp_path):
    """`make reproduce-tables` with only the base student must not turn the tables into base-only ones."""
    tables, samples = tmp_path / "tables", tmp_path / "samples"
    runs = [("base", 0)] + [(m, s) for m in ("grpo", "kd", "opd", "scope") for s in range(3)]
    build_tables(*_toy_samples(runs), tables, figure=False)
    kept = _snapshot(tables)
    args = ["--runs-root", str(tmp_path / "no-runs"), "--toy-size", "1", "--n", "4", "--max-new-tokens", "20",
            "--samples-dir", str(samples), "--tables-dir", str(tables), "--quiet", "--no-figure"]
    with pytest.raises(UserError, match=r"would lose the rows of grpo/seed0,1,2, kd/seed0,1,2, opd/seed0,1,2, "
                                        r"scope/seed0,1,2 \(no finished checkpoints of theirs under .*no-runs; "
                                        r"`make train-toy` trains them\); pass --overwrite"):
        main(args)
    assert _snapshot(tables) == kept
    assert not list(samples.rglob("part-*.parquet"))  # refused before anything was sampled
    assert main([*args, "--overwrite"]) == 0
    manifest = json.loads((tables / "manifest.json").read_text())
    assert [(r["method"], r["seed"]) for r in manifest["config"]["runs"]] == [("base", 0)]


# -------------------------------------------------------------- each setting has its own folders
def test_default_toy_settings_keep_the_committed_folders():
    assert toy_settings(32, 96, 10) is None and toy_tables_dir(None) == REPO / "results" / "tables"
    assert toy_settings(32, 64, 10) == "n32_tok64_size10"
    assert toy_settings(8, 96, 10) == "n8_tok96_size10"
    assert toy_settings(32, 96, 10, engine="vllm") == "n32_tok96_size10_vllm"
    assert toy_settings(32, 96, 10, unit_size="all") == "n32_tok96_size10_unitall"
    assert toy_tables_dir("n8_tok96_size10") == REPO / "results" / "tables" / "toy" / "n8_tok96_size10"
    assert real_settings(4, 256, 2, 0) == "n4_tok256_limit2_seed0"
    assert real_settings(4, 256, None, 1, "vllm") == "n4_tok256_limitall_seed1_vllm"
    assert real_settings(4, 256, 2, 0, "hf", 8) == "n4_tok256_limit2_seed0"
    assert real_settings(4, 256, 2, 0, "hf", 3) == "n4_tok256_limit2_seed0_unit3"


def test_another_toy_setting_neither_clobbers_nor_is_refused(tmp_path, monkeypatch):
    """`make reproduce-tables N=8` after the default run: its own folders, then a rerun resumes."""
    monkeypatch.setattr(reproduce, "TOY_EVAL_RUNS", tmp_path / "runs" / "toy-eval")
    monkeypatch.setattr(folders, "TABLES", tmp_path / "tables")
    common = ["--runs-root", str(tmp_path / "no-runs"), "--toy-size", "1", "--max-new-tokens", "20", "--quiet",
              "--no-figure"]
    assert main([*common, "--n", "2"]) == 0
    first = tmp_path / "tables" / "toy" / "n2_tok20_size1"
    kept = _snapshot(first)
    assert main([*common, "--n", "3"]) == 0
    assert (tmp_path / "tables" / "toy" / "n3_tok20_size1" / "toy_avg@3.md").is_file()
    assert _snapshot(first) == kept
    for n in (2, 3):
        assert len(read_records(tmp_path / "runs" / "toy-eval" / f"n{n}_tok20_size1" / "base" / "seed0")) == 6 * n
    assert main([*common, "--n", "2"]) == 0  # resumes its own samples: nothing to sample, same tables
    assert _snapshot(first) == kept
    # a rebuild from those samples finds the same folder by their settings
    assert main(["--from-samples", str(tmp_path / "runs" / "toy-eval" / "n2_tok20_size1"), "--quiet",
                 "--no-figure"]) == 0
    assert _snapshot(first) == kept


def test_runs_of_two_subsets_of_the_benchmarks_merge_into_one_table(tmp_path, tiny_lm, fixture_data_dir):
    samples, tables = tmp_path / "samples", tmp_path / "tables"
    common = ["--model", str(tiny_lm), "--data-dir", str(fixture_data_dir), "--limit", "1", "--n", "2",
              "--max-new-tokens", "3", "--samples-dir", str(samples), "--quiet", "--no-figure"]
    first, rest = REAL_BENCHMARKS[:2], REAL_BENCHMARKS[2:]
    assert main([*common, "--benchmarks", ",".join(first), "--tables-dir", str(tables)]) == 0
    shown = [c for c in pd.read_csv(tables / "real_avg@2.csv", index_col="method").columns if "_ci_" not in c]
    assert shown == ["AIME24", "AIME25", "Average"]
    assert main([*common, "--benchmarks", ",".join(rest), "--tables-dir", str(tables)]) == 0
    label = model_label(str(tiny_lm))
    folders = sorted(p.name for p in (samples / label).iterdir())
    assert folders == ["n2_tok3_limit1_seed0_only-" + "+".join(first), "n2_tok3_limit1_seed0_only-" + "+".join(rest)]
    avg = pd.read_csv(tables / "real_avg@2.csv", index_col="method")
    assert [c for c in avg.columns if "_ci_" not in c] == ["AIME24", "AIME25", "AMC23", "MATH500", "Minerva",
                                                          "OlympiadBench", "Average"]
    run = read_manifest(tables)["config"]["runs"]
    assert len(run) == 1 and run[0]["samples"].count("_only-") == 2
    # a third run that samples a benchmark again cannot join the table
    with pytest.raises(UserError, match=r"_only-aime24\+aime25 already holds aime24 for this model and settings"):
        main([*common, "--benchmarks", "aime24,amc23", "--tables-dir", str(tables)])


def test_an_unknown_benchmark_is_one_line_naming_the_registered_ones():
    with pytest.raises(UserError, match="unknown aime2026; the real ones are aime24, aime25"):
        parse_args(["--model", "org/model", "--benchmarks", "aime24,aime2026"])
    with pytest.raises(UserError, match=r"toy-1 \(toy-1 is not a real benchmark\)"):
        parse_args(["--model", "org/model", "--benchmarks", "toy-1"])
