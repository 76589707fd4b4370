"""The served teacher against a live vLLM OpenAI server on the toy teacher.

The test that kills the server comes last, so that in a full run the server is started once; this file
sorts after test_vllm_backend.py, so the server boots while the in-process engines are tested.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter

import pytest
import torch

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.models import SamplingConfig, TokenizerMismatch, check_same_vocab, load_backend  # noqa: E402
from workbench.models.server import ModelNotServed, ServerAuthError, ServerError, ServerScorer  # noqa: E402
from workbench.toy import TEACHER_DIR  # noqa: E402
from workbench.models.vllm import VLLMOutputError  # noqa: E402

pytestmark = pytest.mark.engines

KEY_ENV = "SCOPE_TEACHER_API_KEY"
# The server runs the same engine as VLLMBackend, so the same measurements and tolerances hold (see
# test_vllm_backend.py): |diff| / (1 + |log-prob|) at most 1.65e-5, mean |diff| about 4e-7.
SCALED_TOLERANCE = 3e-5
MEAN_TOLERANCE = 1e-6
EOS = 1


@pytest.fixture
def api_key(served_teacher, monkeypatch) -> str:
    monkeypatch.setenv(KEY_ENV, served_teacher.key)
    return served_teacher.key


@pytest.fixture(autouse=True)
def direct_to_localhost(monkeypatch) -> None:
    """A proxy configured on the machine must not intercept requests to the local server."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def scorer(server, **kwargs) -> ServerScorer:
    options = dict(backoff_s=0.1, progress=False, timeout=60.0)
    return ServerScorer(f"{server.url}/v1", str(TEACHER_DIR), **(options | kwargs))


def test_scores_agree_with_the_transformers_scorer(served_teacher, api_key, hf_teacher, scoring_pairs,
                                                    abs_diff_stats):
    prompts, completions = scoring_pairs
    ours = scorer(served_teacher, batch_size=8, concurrency=2).token_logprobs(prompts, completions)
    diff = abs_diff_stats(ours, hf_teacher.token_logprobs(prompts, completions))
    print(f"vLLM server vs transformers scoring, {len(prompts)} pairs, {diff['n']} tokens: |diff| max "
          f"{diff['max']:.2e}, mean {diff['mean']:.2e}, max / (1 + |logp|) {diff['max_scaled']:.2e} "
          f"(server started in {served_teacher.start_seconds:.0f} s)")
    assert diff["n"] == sum(len(c) for c in completions) and diff["n"] > 1000
    assert diff["max_scaled"] < SCALED_TOLERANCE and diff["mean"] < MEAN_TOLERANCE, diff

    few = scorer(served_teacher).token_logprobs(prompts[:3], [[], completions[1][:1], completions[2]])
    assert [x.shape for x in few] == [torch.Size([0]), torch.Size([1]), torch.Size([len(completions[2])])]


def test_a_server_without_its_tokenizer_scores_alike_and_refuses_to_sample(
        served_teacher, compact_served_teacher, api_key, scoring_pairs, toy_prompts):
    prompts, completions = scoring_pairs
    plain = scorer(served_teacher, batch_size=16).token_logprobs(prompts, completions)
    compact = scorer(compact_served_teacher, batch_size=16).token_logprobs(prompts, completions)
    assert all(torch.equal(a, b) for a, b in zip(plain, compact))
    backend = load_backend("server", str(TEACHER_DIR), base_url=compact_served_teacher.url, progress=False)
    with pytest.raises(VLLMOutputError, match="--skip-tokenizer-init scores but cannot sample"):
        backend.generate(toy_prompts[:2], SamplingConfig(n=1, temperature=0.6, max_new_tokens=16, seed=0))


def test_served_sampling_is_seeded_and_ends_with_eos(served_teacher, api_key, toy_prompts):
    backend = load_backend("server", str(TEACHER_DIR), base_url=served_teacher.url, progress=False, concurrency=2)
    sampling = SamplingConfig(n=3, temperature=0.6, max_new_tokens=64, seed=7)
    first = backend.generate(toy_prompts[:12], sampling)
    assert backend.generate(toy_prompts[:12], sampling) == first
    completions = [c for group in first for c in group]
    assert len(completions) == 36 and Counter(c.finish_reason for c in completions)["stop"] > 0
    assert all(c.token_ids[-1] == EOS for c in completions if c.finish_reason == "stop")
    assert all(c.text == backend.tokenizer.decode(c.token_ids, skip_special_tokens=True) for c in completions)


def test_the_key_comes_from_the_environment_and_is_never_shown(served_teacher, monkeypatch, caplog, scoring_pairs):
    prompts, completions = scoring_pairs
    with caplog.at_level(logging.DEBUG):
        monkeypatch.setenv(KEY_ENV, served_teacher.key)
        scoring = scorer(served_teacher)
        assert len(scoring.token_logprobs(prompts[:2], completions[:2])) == 2

        wrong = served_teacher.key[::-1]
        monkeypatch.setenv(KEY_ENV, wrong)
        with pytest.raises(ServerAuthError) as err:
            scoring.token_logprobs(prompts[:2], completions[:2])
        assert f"HTTP 401; check the key in ${KEY_ENV}" in str(err.value)

        monkeypatch.delenv(KEY_ENV)
        with pytest.raises(ServerAuthError, match="HTTP 401"):
            scorer(served_teacher).token_logprobs(prompts[:1], completions[:1])
    shown = caplog.text + str(err.value) + repr(scoring) + str(vars(scoring))
    assert served_teacher.key not in shown and wrong not in shown
    assert served_teacher.key not in served_teacher.log_tail(10_000)


def test_a_wrong_model_name_names_the_served_ones(served_teacher, api_key):
    with pytest.raises(ModelNotServed) as err:
        ServerScorer(served_teacher.url, "toy-teacher", progress=False).token_logprobs([[3]], [[4]])
    assert str(err.value) == (f"{served_teacher.url} does not serve the model 'toy-teacher'; it serves "
                              f"['{TEACHER_DIR}']: pass one of those as the model name")


def test_another_vocabulary_is_refused(served_teacher, api_key, tiny_lm, scoring_pairs):
    from transformers import AutoTokenizer

    teacher = load_backend("server", str(TEACHER_DIR), base_url=served_teacher.url, progress=False)
    with pytest.raises(TokenizerMismatch, match="vocabularies differ"):
        check_same_vocab(AutoTokenizer.from_pretrained(tiny_lm), teacher.tokenizer)
    # ids beyond the teacher's vocabulary are refused by the server too, never scored as something else
    prompts, _ = scoring_pairs
    with pytest.raises(ServerError, match="out of vocabulary"):
        teacher.token_logprobs(prompts[:1], [[len(teacher.tokenizer) + 5]])


def test_a_server_that_stops_answering_times_out(served_teacher, api_key, scoring_pairs):
    prompts, completions = scoring_pairs
    served_teacher.signal(signal.SIGSTOP)
    try:
        start = time.perf_counter()
        with pytest.raises(ServerError, match=r"after 2 tries: no answer within timeout=1 s"):
            scorer(served_teacher, timeout=1.0, max_retries=1, backoff_s=0.0).token_logprobs(prompts, completions)
        assert time.perf_counter() - start < 10
    finally:
        served_teacher.signal(signal.SIGCONT)
    assert len(scorer(served_teacher).token_logprobs(prompts[:2], completions[:2])) == 2  # answering again


def test_a_server_that_dies_mid_run_fails_the_call(served_teacher, api_key, scoring_pairs):
    """Killed after two of six requests: the call raises after bounded retries, it returns nothing."""
    prompts, completions = scoring_pairs
    scoring = scorer(served_teacher, batch_size=10, concurrency=1, max_retries=2, backoff_s=0.2)
    post, answered = scoring._post, []

    def post_then_die(body):
        if len(answered) == 2:
            served_teacher.kill()
        answer = post(body)
        answered.append(answer)
        return answer

    scoring._post = post_then_die
    start = time.perf_counter()
    with pytest.raises(ServerError, match=r"could not reach .*/v1/completions after 3 tries"):
        scoring.token_logprobs(prompts, completions)
    assert len(answered) == 2 and time.perf_counter() - start < 30
