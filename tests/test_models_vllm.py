"""VLLMBackend against a fake `vllm` module shaped like vLLM's own structures (vllm/outputs.py,
vllm/logprobs.py, vllm/sampling_params.py), so the adapter's mapping and checks run without vLLM;
tests/engines/ runs the same backend on the real engine."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from workbench.errors import UserError
from workbench.models import SamplingConfig, load_backend
from workbench.models.base import Backend, Completion, encode_prompt
from workbench.models.vllm import (
    VLLMBackend,
    VLLMOutputError,
    request_seed,
    to_completion,
)
from workbench.stages import derive_seed

EOS, BOS = 1, 2


# ------------------------------------------------------------------------------ fakes of vLLM
@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool = True


class SamplingParams:
    """Keyword-only like vLLM's msgspec struct, with its defaults and the checks this adapter relies on."""

    FIELDS = dict(n=1, temperature=1.0, top_p=1.0, top_k=0, max_tokens=16, repetition_penalty=1.0, seed=None,
                  logprobs=None, prompt_logprobs=None, detokenize=True)

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unexpected SamplingParams fields {unknown}")
        for name, default in self.FIELDS.items():
            setattr(self, name, kwargs.get(name, default))
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.temperature < 1e-5 and self.n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {self.n}.")


class CharTokenizer:
    """Characters a..h are ids 3..10; <eos> 1, <bos> 2."""

    eos_token_id, bos_token = EOS, "<bos>"

    def __init__(self, chat_template: str | None = None) -> None:
        self.chat_template = chat_template

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [BOS] if add_special_tokens else []
        if text.startswith(self.bos_token):
            ids.append(BOS)
            text = text[len(self.bos_token):]
        return ids + [ord(ch) - ord("a") + 3 for ch in text]


@dataclass
class FakeLLM:
    respond: Callable[[list[dict], Any], list[RequestOutput]]
    tokenizer: CharTokenizer = field(default_factory=CharTokenizer)
    calls: list[tuple[list[dict], Any, bool]] = field(default_factory=list)

    def get_tokenizer(self) -> CharTokenizer:
        return self.tokenizer

    def generate(self, prompts: list[dict], sampling_params: Any = None, *,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        if isinstance(sampling_params, list):
            assert len(sampling_params) == len(prompts), "vLLM needs one SamplingParams per prompt"
        self.calls.append((prompts, sampling_params, use_tqdm))
        return self.respond(prompts, sampling_params)


class GPUPlatform:
    @staticmethod
    def is_cpu() -> bool:
        return False


@pytest.fixture
def fake_vllm(monkeypatch):
    """`vllm` and `vllm.platforms` modules in sys.modules (a GPU platform) whose LLM records how it was built."""
    built: list[dict[str, Any]] = []

    def make_llm(**kwargs: Any) -> FakeLLM:
        built.append(kwargs)
        return FakeLLM(respond=lambda prompts, params: [])

    module = types.ModuleType("vllm")
    module.LLM = make_llm
    module.SamplingParams = SamplingParams
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = GPUPlatform()
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return built


def sampled(prompts: list[dict], params: list[SamplingParams]) -> list[RequestOutput]:
    """Sample 0 is 'ab' + EOS, sample 1 'ba' + EOS; indices come back reversed, as a merge may order them."""
    samples = [CompletionOutput(0, "ab", [3, 4, EOS], finish_reason="stop"),
               CompletionOutput(1, "ba", [4, 3, EOS], finish_reason="stop")]
    return [RequestOutput(f"r{k}", None, p["prompt_token_ids"], None, samples[: sp.n][::-1])
            for k, (p, sp) in enumerate(zip(prompts, params))]


AB, BA = Completion("ab", (3, 4, EOS), "stop"), Completion("ba", (4, 3, EOS), "stop")


# ------------------------------------------------------------------------------------ sampling
def test_sampling_params_map_every_field(fake_vllm):
    backend = VLLMBackend("m", llm=FakeLLM(respond=sampled))
    cfg = SamplingConfig(n=4, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=128,
                         repetition_penalty=1.08, seed=7)
    sp = backend.sampling_params(cfg, prompt_index=3)
    got = (sp.n, sp.temperature, sp.top_p, sp.top_k, sp.max_tokens, sp.repetition_penalty)
    assert got == (4, 0.6, 0.95, 20, 128, 1.08)
    assert sp.seed == request_seed(7, 3)
    assert backend.sampling_params(SamplingConfig(top_k=0), 0).top_k == -1  # vLLM's "off" in every release
    unseeded = VLLMBackend("m", llm=FakeLLM(respond=sampled), per_request_seeds=False)
    assert unseeded.sampling_params(cfg, prompt_index=3).seed is None


def test_request_seeds_differ_per_prompt_and_are_reproducible():
    seeds = [request_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100
    assert seeds == [request_seed(0, i) for i in range(100)]
    assert request_seed(1, 0) != request_seed(0, 0)
    assert all(0 <= s < 2**56 for s in seeds)
    # the workbench's one seed function at 56 bits: the leading 14 hex digits of sha256("0\x003")
    assert request_seed(0, 3) == derive_seed(0, 3, bits=56) == int(hashlib.sha256(b"0\x003").hexdigest()[:14], 16)


def test_generate_is_one_call_over_token_id_prompts(fake_vllm):
    llm = FakeLLM(respond=sampled, tokenizer=CharTokenizer(chat_template="{{ messages }}"))
    backend = VLLMBackend("m", llm=llm, progress=False)
    out = backend.generate(["ab", "<bos>c"], SamplingConfig(n=2, seed=5, max_new_tokens=8))
    assert len(llm.calls) == 1
    prompts, params, use_tqdm = llm.calls[0]
    # chat-templated text carries its own BOS: none added, and the templated one is not doubled
    assert prompts == [{"prompt_token_ids": [3, 4]}, {"prompt_token_ids": [BOS, 5]}]
    assert [p.seed for p in params] == [request_seed(5, 0), request_seed(5, 1)]
    assert use_tqdm is False
    assert out == [[AB, BA], [AB, BA]]
    assert all(isinstance(c.token_ids, tuple) for group in out for c in group)


def test_encode_adds_bos_only_without_a_chat_template():
    assert encode_prompt(CharTokenizer(), "ab") == [BOS, 3, 4]
    assert encode_prompt(CharTokenizer(), "<bos>ab") == [BOS, 3, 4]
    assert encode_prompt(CharTokenizer(chat_template="t"), "ab") == [3, 4]


def test_greedy_asks_for_one_sample_and_repeats_it(fake_vllm):
    llm = FakeLLM(respond=sampled)
    out = VLLMBackend("m", llm=llm, progress=False).generate(["a"], SamplingConfig(n=3, temperature=0.0))
    assert llm.calls[0][1][0].n == 1
    assert out == [[AB, AB, AB]]


def test_generate_rejects_a_wrong_number_of_samples(fake_vllm):
    def one_short(prompts, params):
        outs = sampled(prompts, params)
        outs[0].outputs.pop()
        return outs

    with pytest.raises(VLLMOutputError, match="1 completions, expected 2"):
        VLLMBackend("m", llm=FakeLLM(respond=one_short), progress=False).generate(["a"], SamplingConfig(n=2))


def test_no_prompts_no_engine_call(fake_vllm):
    llm = FakeLLM(respond=sampled)
    assert VLLMBackend("m", llm=llm).generate([], SamplingConfig()) == []
    assert llm.calls == []


# --------------------------------------------------------------------------- EOS and finish reason
def test_stop_on_eos_keeps_the_eos_token():
    assert to_completion("ab", [3, 4, EOS], "stop", None, EOS) == Completion("ab", (3, 4, EOS), "stop")


def test_stop_on_a_stop_token_id_keeps_that_token():
    # generation-config EOS ids other than the tokenizer's come back as stop_reason=<id>
    assert to_completion("ab", [3, 4, 9], "stop", 9, EOS).token_ids == (3, 4, 9)


def test_length_needs_no_eos():
    assert to_completion("abc", [3, 4, 5], "length", None, EOS) == Completion("abc", (3, 4, 5), "length")


@pytest.mark.parametrize("ids, finish, stop_reason, eos, message", [
    ([3, 4], "stop", None, EOS, "instead of the stop token 1"),
    ([], "stop", None, EOS, "end with nothing"),
    ([3, EOS], "stop", 9, EOS, "instead of the stop token 9"),
    ([3, EOS], "stop", None, None, "no eos_token_id"),
    ([3, 4], "stop", "###", EOS, "no stop strings were requested"),
    ([3, 4], "abort", None, EOS, "'abort'"),
    ([3, 4], "error", None, EOS, "'error'"),
    ([3, 4], None, None, EOS, "None"),
])
def test_broken_stop_invariants_raise(ids, finish, stop_reason, eos, message):
    with pytest.raises(VLLMOutputError, match=message):
        to_completion("x", ids, finish, stop_reason, eos)


# ------------------------------------------------------------------------------------- scoring
def logp(position: int, token: int) -> float:
    return -(position + token / 8)


def scored(prompts: list[dict], params: SamplingParams) -> list[RequestOutput]:
    """Prompt log-probs as vLLM lays them out: None first, then {actual token: Logprob, ...}, with a
    rank-1 alternative at every position (what prompt_logprobs=1 would add)."""
    outs = []
    for p in prompts:
        ids = p["prompt_token_ids"]
        plp = [None] + [{tok: Logprob(logp(k, tok), rank=2), 99: Logprob(-0.01, rank=1)}
                        for k, tok in enumerate(ids) if k]
        outs.append(RequestOutput("r", None, list(ids), plp, [CompletionOutput(0, "", [7], finish_reason="length")]))
    return outs


def expected(prompt: list[int], completion: list[int]) -> torch.Tensor:
    return torch.tensor([logp(len(prompt) + j, t) for j, t in enumerate(completion)], dtype=torch.float32)


def test_token_logprobs_read_the_actual_tokens(fake_vllm):
    llm = FakeLLM(respond=scored)
    backend = VLLMBackend("m", llm=llm, progress=False)
    prompts, completions = [[2, 3], [4], [5, 6, 7]], [[4, 5, EOS], [], [8]]
    out = backend.token_logprobs(prompts, completions)
    assert len(llm.calls) == 1
    sent, params, _ = llm.calls[0]
    assert sent == [{"prompt_token_ids": [2, 3, 4, 5, EOS]}, {"prompt_token_ids": [5, 6, 7, 8]}]  # empty one skipped
    assert (params.max_tokens, params.prompt_logprobs, params.detokenize) == (1, 0, False)
    assert (params.temperature, params.top_p, params.top_k) == (1.0, 1.0, -1)
    for got, p, c in zip(out, prompts, completions):
        assert got.dtype == torch.float32 and got.shape == (len(c),)
        assert torch.equal(got, expected(p, c))


def test_flat_first_position_and_chunked_calls(fake_vllm):
    def flat(prompts, params):
        outs = scored(prompts, params)
        for o in outs:
            o.prompt_logprobs[0] = {}  # FlatLogprobs gives an empty position, not None
        return outs

    llm = FakeLLM(respond=flat)
    backend = VLLMBackend("m", llm=llm, score_tokens_per_call=6, progress=False)
    prompts, completions = [[2, 3], [4, 5], [6]], [[4, 5], [6, 7], [8, 9, 10]]
    out = backend.token_logprobs(prompts, completions)
    assert [len(call[0]) for call in llm.calls] == [1, 1, 1]
    assert all(torch.equal(o, expected(p, c)) for o, p, c in zip(out, prompts, completions))


@pytest.mark.parametrize("damage, message", [
    (lambda o: o.prompt_logprobs[2].pop(4), "lacks the actual token 4"),
    (lambda o: o.prompt_logprobs.pop(), "3 prompt_logprobs entries for 4 tokens"),
    (lambda o: setattr(o, "prompt_logprobs", None), "no prompt_logprobs"),
    (lambda o: o.prompt_logprobs.__setitem__(3, None), "position 3 has no log-prob dict"),
    (lambda o: setattr(o, "prompt_token_ids", [2, 3, 4, 6]), "other token ids"),
])
def test_malformed_prompt_logprobs_raise(fake_vllm, damage, message):
    def broken(prompts, params):
        outs = scored(prompts, params)
        damage(outs[0])
        return outs

    with pytest.raises(VLLMOutputError, match=message):
        VLLMBackend("m", llm=FakeLLM(respond=broken), progress=False).token_logprobs([[2, 3]], [[4, 5]])


def test_missing_outputs_raise(fake_vllm):
    with pytest.raises(VLLMOutputError, match="0 outputs for 1 sequences"):
        VLLMBackend("m", llm=FakeLLM(respond=lambda p, s: []), progress=False).token_logprobs([[2]], [[3]])


def test_scorer_contract_errors(fake_vllm):
    backend = VLLMBackend("m", llm=FakeLLM(respond=scored))
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        backend.token_logprobs([[2], [3]], [[4]])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        backend.token_logprobs([[]], [[4]])


# ------------------------------------------------------------------------------ construction
def test_engine_is_built_lazily_with_the_given_arguments(fake_vllm):
    backend = load_backend("vllm", "org/model", tokenizer="org/tok", seed=3, llm_kwargs={"max_model_len": 64})
    assert isinstance(backend, VLLMBackend)
    assert fake_vllm == []
    assert backend.encode("ab") == [BOS, 3, 4]
    assert fake_vllm == [{"model": "org/model", "tokenizer": "org/tok", "seed": 3, "max_model_len": 64}]
    assert isinstance(backend, Backend)
    backend.encode("c")
    assert len(fake_vllm) == 1


def test_nothing_imports_vllm_until_the_engine_is_needed():
    # a fresh interpreter: in the engine environment another test may already have imported vLLM
    code = ("import sys; from workbench.models import load_backend; b = load_backend('vllm', 'org/model'); "
            "assert 'vllm' not in sys.modules, 'vllm imported'; print(repr(b))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "VLLMBackend(model='org/model', built=False)"


def test_without_vllm_the_engine_start_names_the_setup(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(UserError, match=r"needs vLLM: `make setup-vllm`"):
        VLLMBackend("org/model").encode("a")
