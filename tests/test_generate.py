"""Sampling into resumable units: real toy models, an interrupted run, refused resumes, truncation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from eval.generate import GRADE_CACHE_FILE, generate_samples, plan_units
from workbench.data import load_benchmark
from workbench.models import Completion, SamplingConfig, load_backend
from workbench.records import Problem, ShardStore
from workbench.runs import read_manifest
from workbench.sampling import TRUNCATED, UNGRADED, render_prompts
from workbench.stages import ResumeMismatch, weights_sha256
from workbench.toy import STUDENT_DIR

TOY = SamplingConfig(n=4, max_new_tokens=24)  # enough for toy-1/2 chains (16 and 22 tokens with EOS)


@pytest.fixture(scope="module")
def random_toy_model(tmp_path_factory) -> Path:
    """An untrained model with the toy tokenizer: it rambles, so many samples hit the token limit."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    ))
    out = tmp_path_factory.mktemp("random_toy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _problems(size: int, tiers: Sequence[str] = ("toy-1", "toy-4")) -> list[Problem]:
    return [p for t in tiers for p in load_benchmark(t, toy_size=size)]


def _texts(column: pd.Series) -> list[str | None]:
    """A string column as Python values; pandas 3 reads missing strings back as NaN."""
    return [None if pd.isna(v) else v for v in column]


class Flaky:
    """A backend that fails after `fail_after` generate calls, as a killed job would stop."""

    def __init__(self, inner, fail_after: int):
        self.inner, self.fail_after, self.calls = inner, fail_after, 0
        self.name, self.tokenizer = inner.name, inner.tokenizer

    def generate(self, prompts, sampling):
        if self.calls == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return self.inner.generate(prompts, sampling)


class Scripted:
    """A backend answering every prompt with fixed completions, for exact grading checks."""

    name = "scripted"
    tokenizer = None

    def __init__(self, completions: Sequence[Completion]):
        self.completions = list(completions)
        self.calls = 0

    def generate(self, prompts, sampling):
        self.calls += 1
        return [self.completions[: sampling.n] for _ in prompts]


def test_units_are_fixed_by_problem_order_and_seeds_by_their_ids():
    problems = _problems(5)
    prompts = [p.problem for p in problems]
    units = plan_units(problems, prompts, TOY, 4)
    assert [len(u.items) for u in units] == [4, 4, 2]
    assert units[1].items == tuple(zip(problems[4:8], prompts[4:8]))
    assert units[2].keys == tuple((p.benchmark, p.problem_id, i) for p in problems[8:] for i in range(4))
    # the seeds every committed sample folder was drawn with: a hash of the base seed and the unit's ids
    assert [u.seed for u in units] == [1395489882, 653822956, 1431809166]
    assert plan_units(problems, prompts, replace(TOY, seed=1), 4)[0].seed == 127492343
    (whole,) = plan_units(problems, prompts, TOY, "all")
    assert len(whole.items) == 10
    with pytest.raises(ValueError, match="unit_size"):
        plan_units(problems, prompts, TOY, 0)


def test_toy_student_samples_graded_and_reused(tmp_path):
    backend = load_backend("hf", str(STUDENT_DIR), device="cpu", progress=False)
    problems = _problems(2, ("toy-1", "toy-2"))
    frame = generate_samples(backend, problems, TOY, tmp_path, unit_size=2, progress=False,
                             extra={"method": "base"})
    assert len(frame) == 4 * 4
    assert frame["sample_idx"].tolist() == [0, 1, 2, 3] * 4
    assert frame["problem_id"].tolist()[::4] == [p.problem_id for p in problems]
    assert (frame["prompt"] == frame["problem_id"].map({p.problem_id: p.problem for p in problems})).all()
    assert render_prompts(backend, problems[:1]) == [problems[0].problem]  # toy style: the prompt as is
    # each unit is exactly one generate call with its own seed, so a direct call reproduces it
    first = plan_units(problems, render_prompts(backend, problems), TOY, 2)[0]
    direct = backend.generate([prompt for _, prompt in first.items], replace(TOY, seed=first.seed))
    assert frame["response"].tolist()[:8] == [c.text for group in direct for c in group]
    # the student writes chains ending in a boxed digit, graded against the gold answer
    assert frame["response"].str.contains(r"\\boxed\{\d\}$").mean() > 0.9
    assert (frame["correct"] == (frame["extracted"] == frame["answer"])).all()
    assert frame["correct"].mean() > 0.4  # the committed student solves most short chains (about 80% / 70%)
    assert (frame["n_tokens"] > 0).all() and set(frame["finish_reason"]) == {"stop"}
    manifest = read_manifest(tmp_path)
    assert manifest["status"] == "finished" and manifest["config"]["sampling"]["n"] == 4
    assert manifest["config"]["extra"] == {"method": "base"} and manifest["config"]["unit_size"] == 2
    assert (tmp_path / GRADE_CACHE_FILE).is_file() and len(ShardStore(tmp_path).shards()) == 2
    again = Flaky(backend, fail_after=0)  # any sampling would raise: everything must come from disk
    pd.testing.assert_frame_equal(generate_samples(again, problems, TOY, tmp_path, unit_size=2, progress=False), frame)


def test_interrupted_run_resumes_to_the_uninterrupted_samples(tmp_path, random_toy_model):
    backend = load_backend("hf", str(random_toy_model), device="cpu", progress=False)
    problems, short = _problems(1, ("toy-1", "toy-3", "toy-6")), replace(TOY, max_new_tokens=12)
    whole = generate_samples(backend, problems, short, tmp_path / "whole", unit_size=1, progress=False)

    flaky = Flaky(backend, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        generate_samples(flaky, problems, short, tmp_path / "resumed", unit_size=1, progress=False)
    assert read_manifest(tmp_path / "resumed")["status"] == "interrupted"
    assert len(ShardStore(tmp_path / "resumed").shards()) == 2
    # a kill during a shard write leaves only a temporary file, which readers never see
    (tmp_path / "resumed" / ".tmp-part-000002-deadbeef.parquet").write_bytes(b"half a shard")

    rerun = Flaky(backend, fail_after=10)
    resumed = generate_samples(rerun, problems, short, tmp_path / "resumed", unit_size=1, progress=False)
    assert rerun.calls == 1  # only the unit that was never written
    pd.testing.assert_frame_equal(resumed, whole)
    assert len(ShardStore(tmp_path / "resumed").read()) == len(whole) == 3 * 4
    assert read_manifest(tmp_path / "resumed")["status"] == "finished"
    assert not (tmp_path / "resumed" / ".tmp-part-000002-deadbeef.parquet").exists()  # cleaned up under the lock
    assert (whole["finish_reason"] == "length").sum() > 0  # the untrained model does run out of tokens


def test_resume_with_other_arguments_is_refused(tmp_path):
    problems = _problems(2)
    good = Completion("1+1=2;\\boxed{2}", (1, 2, 3), "stop")
    generate_samples(Scripted([good] * 4), problems, TOY, tmp_path, progress=False)
    cases = [
        (Scripted([good] * 8), problems, SamplingConfig(n=8, max_new_tokens=48), "sampling"),
        (Scripted([good] * 4), problems, SamplingConfig(n=4, max_new_tokens=48, temperature=1.0), "temperature"),
        (type("Other", (Scripted,), {"name": "other-model"})([good] * 4), problems, TOY, "other-model"),
        (Scripted([good] * 4), problems[:3], TOY, "problems"),
    ]
    for backend, probs, sampling, needle in cases:
        with pytest.raises(ResumeMismatch, match=needle):
            generate_samples(backend, probs, sampling, tmp_path, progress=False)
        assert backend.calls == 0
    with pytest.raises(ResumeMismatch, match="unit_size"):
        generate_samples(Scripted([good] * 4), problems, TOY, tmp_path, unit_size=3, progress=False)
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["sampling"]["n"] == 4
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ResumeMismatch, match="no manifest.json"):
        generate_samples(Scripted([good] * 4), problems, TOY, tmp_path, progress=False)


def test_a_retrained_checkpoint_in_the_same_folder_is_not_resumed(tmp_path):
    """Same folder name, other weights: the old samples belong to another model."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"first training")
    backend = type("Local", (Scripted,), {"name": str(folder)})([Completion("\\boxed{1}", (1, 2), "stop")] * 4)
    problems = _problems(1)
    generate_samples(backend, problems, TOY, tmp_path / "samples", progress=False)
    assert read_manifest(tmp_path / "samples")["config"]["weights_sha256"] == weights_sha256(str(folder))
    (folder / "model.safetensors").write_bytes(b"second training")
    with pytest.raises(ResumeMismatch, match="weights_sha256"):
        generate_samples(backend, problems, TOY, tmp_path / "samples", progress=False)


def test_truncated_samples_count_as_wrong(tmp_path):
    problem = load_benchmark("toy-1", toy_size=1)[0]
    answer = problem.answer
    right = f"\\boxed{{{answer}}}"
    completions = [
        Completion(right, (1,) * 9, "stop"),
        Completion(right, (1,) * 48, "length"),  # a correct box, but the response never finished
        Completion("9+9=8;9+", (1,) * 48, "length"),
        Completion("\\boxed{x}", (1,) * 9, "stop"),
    ]
    frame = generate_samples(Scripted(completions), [problem], TOY, tmp_path, progress=False)
    assert frame["correct"].tolist() == [True, False, False, False]
    assert _texts(frame["grade_error"]) == [None, TRUNCATED, TRUNCATED, None]
    assert _texts(frame["extracted"]) == [answer, answer, None, "x"]
    assert frame["n_tokens"].tolist() == [9, 48, 48, 9]
    ungraded = generate_samples(Scripted(completions), [problem], TOY, tmp_path / "ungraded", grade=False,
                                progress=False)
    assert ungraded["correct"].isna().all() and (ungraded["grade_error"] == UNGRADED).all()
    assert not (tmp_path / "ungraded" / GRADE_CACHE_FILE).exists()
