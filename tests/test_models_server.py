"""ServerScorer / ServerBackend against a real local HTTP server that answers like vLLM's
/v1/completions (vllm/entrypoints/openai/completion/protocol.py: CompletionResponseChoice with the
`prompt_logprobs` and `token_ids` extras)."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import torch

from workbench.models import SamplingConfig, load_backend
from workbench.models.base import Completion
from workbench.errors import UserError
from workbench.models.server import ModelNotServed, ServerAuthError, ServerBackend, ServerError, ServerScorer
from workbench.models.vllm import VLLMOutputError, request_seed

KEY = "sk-test-5f1e9c0a"
EOS, BOS = 1, 2


def logp(position: int, token: int) -> float:
    return -(position + token / 8)


def scoring_answer(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's JSON for prompt_logprobs: null first, then {"<id>": Logprob} with the actual token and,
    as prompt_logprobs=1 would add, a rank-1 alternative."""
    choices = []
    for i, seq in enumerate(body["prompt"]):
        plp = [None] + [{str(tok): {"logprob": logp(k, tok), "rank": 2, "decoded_token": "x"},
                         "99": {"logprob": -0.01, "rank": 1, "decoded_token": "y"}} for k, tok in enumerate(seq) if k]
        choices.append({"index": i, "text": "z", "logprobs": None, "finish_reason": "length", "stop_reason": None,
                        "prompt_logprobs": plp, "token_ids": None, "prompt_token_ids": None})
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


@dataclass
class FakeVLLMServer:
    url: str
    answer: Callable[[dict[str, Any]], dict[str, Any]] = scoring_answer
    script: list[tuple[int, Any]] = field(default_factory=list)  # answered first, in order
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture(autouse=True)
def direct_to_localhost(monkeypatch) -> None:
    """A proxy configured on the machine must not intercept requests to the local test server."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@contextlib.contextmanager
def fake_server() -> Iterator[FakeVLLMServer]:
    """A local server answering like vLLM, on a free port, for the length of the block."""
    state = FakeVLLMServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload = state.script.pop(0) if state.script else (200, state.answer(body))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with state.lock:
                state.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
            data = json.dumps({"object": "list", "data": [{"id": "teacher", "object": "model"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def server() -> Iterator[FakeVLLMServer]:
    with fake_server() as state:
        yield state


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("SCOPE_TEACHER_API_KEY", KEY)
    return KEY


def scorer(server: FakeVLLMServer, **kwargs: Any) -> ServerScorer:
    options = dict(backoff_s=0.0, progress=False, timeout=10.0)
    return ServerScorer(f"{server.url}/v1", "teacher", **(options | kwargs))


def expected(prompt: list[int], completion: list[int]) -> torch.Tensor:
    return torch.tensor([logp(len(prompt) + j, t) for j, t in enumerate(completion)], dtype=torch.float32)


# ------------------------------------------------------------------------------------- scoring
def test_scoring_requests_and_values(server, api_key):
    prompts, completions = [[2, 3], [4], [5, 6, 7], [8]], [[4, 5, EOS], [], [8], [9, 10]]
    out = scorer(server, batch_size=2, concurrency=1).token_logprobs(prompts, completions)
    assert [r["path"] for r in server.requests] == ["/v1/completions"] * 2
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    first = server.requests[0]["body"]
    assert first["prompt"] == [[2, 3, 4, 5, EOS], [5, 6, 7, 8]]  # token ids; the empty completion is not sent
    assert server.requests[1]["body"]["prompt"] == [[8, 9, 10]]
    assert {k: first[k] for k in ("model", "max_tokens", "prompt_logprobs", "temperature", "top_p", "top_k",
                                  "min_p", "repetition_penalty")} == {
        "model": "teacher", "max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0, "top_p": 1.0,
        "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}
    assert "echo" not in first and "logprobs" not in first
    for got, p, c in zip(out, prompts, completions):
        assert got.dtype == torch.float32 and got.shape == (len(c),)
        assert torch.equal(got, expected(p, c))


def test_concurrent_batches_keep_pair_order(server):
    prompts = [[2 + i % 5] for i in range(9)]
    completions = [[3 + j for j in range(i % 4 + 1)] for i in range(9)]
    out = scorer(server, batch_size=2, concurrency=3).token_logprobs(prompts, completions)
    assert len(server.requests) == 5
    assert all(torch.equal(o, expected(p, c)) for o, p, c in zip(out, prompts, completions))


def test_without_a_key_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("SCOPE_TEACHER_API_KEY", raising=False)
    scorer(server).token_logprobs([[2]], [[3]])
    assert "Authorization" not in server.requests[0]["headers"]


def test_retry_after_500_then_success(server, api_key, caplog):
    server.script.append((500, {"error": {"message": "engine hiccup", "code": 500}}))
    with caplog.at_level(logging.DEBUG, logger="workbench"):
        out = scorer(server, max_retries=2).token_logprobs([[2, 3]], [[4]])
    assert len(server.requests) == 2
    assert torch.equal(out[0], expected([2, 3], [4]))
    assert "HTTP 500 (try 1 of 3): " in caplog.text and "engine hiccup" in caplog.text
    assert KEY not in caplog.text


def test_5xx_until_retries_run_out(server):
    server.script.extend([(503, {"error": "busy"})] * 3)
    with pytest.raises(ServerError, match="HTTP 503") as err:
        scorer(server, max_retries=2).token_logprobs([[2]], [[3]])
    assert err.value.status == 503 and len(server.requests) == 3


def test_401_is_a_clear_error_without_retries_or_the_key(server, api_key, caplog):
    server.script.append((401, {"error": {"message": f"Unauthorized: bad token {KEY}", "code": 401}}))
    scoring = scorer(server, max_retries=3)
    with caplog.at_level(logging.DEBUG, logger="workbench"), pytest.raises(ServerError) as err:
        scoring.token_logprobs([[2]], [[3]])
    message = str(err.value)
    assert isinstance(err.value, ServerAuthError) and isinstance(err.value, UserError)
    assert err.value.status == 401 and len(server.requests) == 1
    assert "HTTP 401; check the key in $SCOPE_TEACHER_API_KEY" in message and "Unauthorized" in message
    assert KEY not in message and "***" in message
    assert KEY not in caplog.text
    assert KEY not in repr(scoring) and KEY not in str(vars(scoring))
    assert repr(scoring) == (f"ServerScorer(base_url='{server.url}', model='teacher', "
                             "api_key_env='SCOPE_TEACHER_API_KEY')")


def test_unreachable_server(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    dead = ServerScorer(f"http://127.0.0.1:{port}", "teacher", max_retries=1, backoff_s=0.0, progress=False)
    with pytest.raises(ServerError, match=r"could not reach http://127.0.0.1:\d+/v1/completions after 2 tries"):
        dead.token_logprobs([[2]], [[3]])


def test_unknown_model_names_the_served_ones(server):
    server.script.append((404, {"error": {"message": "The model `nope` does not exist.", "param": "model",
                                          "code": 404}}))
    with pytest.raises(ModelNotServed) as err:
        ServerScorer(server.url, "nope", backoff_s=0.0, progress=False).token_logprobs([[2]], [[3]])
    assert str(err.value) == (f"{server.url} does not serve the model 'nope'; it serves ['teacher']: "
                              "pass one of those as the model name")
    assert isinstance(err.value, UserError) and err.value.status == 404
    assert [(r["path"], r["body"] is None) for r in server.requests] == [("/v1/completions", False),
                                                                          ("/v1/models", True)]


def test_404_for_a_served_model_stays_a_server_error(server):
    server.script.append((404, {"detail": "Not Found"}))
    with pytest.raises(ServerError, match="HTTP 404") as err:
        scorer(server).token_logprobs([[2]], [[3]])
    assert not isinstance(err.value, ModelNotServed)


def test_a_silent_server_times_out_with_the_timeout_named():
    with socket.socket() as listener:  # accepts connections (the backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        silent = ServerScorer(f"http://127.0.0.1:{listener.getsockname()[1]}", "teacher", timeout=0.2,
                              max_retries=1, backoff_s=0.0, progress=False)
        with pytest.raises(ServerError, match=r"after 2 tries: no answer within timeout=0.2 s; raise the timeout"):
            silent.token_logprobs([[2]], [[3]])


def test_the_first_failure_cancels_the_queued_requests(server):
    server.script.extend([(200, scoring_answer({"model": "teacher", "prompt": [[2, 3]]})),
                          (400, {"error": {"message": "bad request", "code": 400}})])
    with pytest.raises(ServerError, match="HTTP 400"):
        scorer(server, batch_size=1, concurrency=1, max_retries=0).token_logprobs([[2]] * 6, [[3]] * 6)
    # of the four requests behind the failed one, at most one (the concurrency) had already started
    assert 2 <= len(server.requests) <= 3


@pytest.mark.parametrize("damage, error, message", [
    (lambda a: a["choices"].pop(), VLLMOutputError, "1 choices, expected 2"),
    (lambda a: a["choices"][0].pop("prompt_logprobs"), VLLMOutputError, "no prompt_logprobs"),
    (lambda a: a["choices"][1]["prompt_logprobs"][1].pop("4"), VLLMOutputError, "lacks the actual token 4"),
    (lambda a: a.pop("choices"), VLLMOutputError, "no 'choices' list"),
])
def test_malformed_answers_raise(server, damage, error, message):
    def broken(body: dict[str, Any]) -> dict[str, Any]:
        answer = scoring_answer(body)
        damage(answer)
        return answer

    server.answer = broken
    with pytest.raises(error, match=message):
        scorer(server).token_logprobs([[2], [3]], [[3], [4]])


# ------------------------------------------------------------------------------------ sampling
class CharTokenizer:
    eos_token_id, bos_token, chat_template = EOS, "<bos>", None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + [ord(ch) - ord("a") + 3 for ch in text]


def sampling_answer(body: dict[str, Any]) -> dict[str, Any]:
    samples = [{"text": "ab", "token_ids": [3, 4, EOS], "finish_reason": "stop", "stop_reason": None},
               {"text": "cde", "token_ids": [5, 6, 7], "finish_reason": "length", "stop_reason": None}]
    choices = [{"index": i, "logprobs": None, "prompt_logprobs": None, "prompt_token_ids": None, **samples[i % 2]}
               for i in range(body["n"])]
    return {"id": "cmpl-2", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": choices[::-1], "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def test_server_backend_generate(server, api_key):
    server.answer = sampling_answer
    backend = load_backend("server", "student", base_url=server.url, tokenizer=CharTokenizer(), backoff_s=0.0,
                           progress=False, concurrency=1)
    assert isinstance(backend, ServerBackend)
    cfg = SamplingConfig(n=2, temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=64, repetition_penalty=1.08, seed=11)
    out = backend.generate(["ab", "c"], cfg)
    assert out == [[Completion("ab", (3, 4, EOS), "stop"), Completion("cde", (5, 6, 7), "length")]] * 2
    bodies = [r["body"] for r in server.requests]
    assert [b["prompt"] for b in bodies] == [[[BOS, 3, 4]], [[BOS, 5]]]
    assert [b["seed"] for b in bodies] == [request_seed(11, 0), request_seed(11, 1)]
    assert {k: bodies[0][k] for k in ("model", "n", "max_tokens", "temperature", "top_p", "top_k", "min_p",
                                      "repetition_penalty", "return_token_ids")} == {
        "model": "student", "n": 2, "max_tokens": 64, "temperature": 0.6, "top_p": 0.95, "top_k": -1,
        "min_p": 0.0, "repetition_penalty": 1.08, "return_token_ids": True}


def test_server_backend_greedy_and_missing_token_ids(server):
    server.answer = sampling_answer
    backend = ServerBackend(server.url, "student", tokenizer=CharTokenizer(), backoff_s=0.0, progress=False)
    out = backend.generate(["a"], SamplingConfig(n=3, temperature=0.0))
    assert server.requests[0]["body"]["n"] == 1
    assert out == [[Completion("ab", (3, 4, EOS), "stop")] * 3]

    def without_ids(body: dict[str, Any]) -> dict[str, Any]:
        answer = sampling_answer(body)
        for choice in answer["choices"]:
            choice["token_ids"] = None
        return answer

    server.answer = without_ids
    with pytest.raises(VLLMOutputError, match="return_token_ids"):
        backend.generate(["a"], SamplingConfig(n=1))


def test_load_backend_server_needs_a_url():
    with pytest.raises(ValueError, match="base_url"):
        load_backend("server", "student")


def test_constructor_validation():
    with pytest.raises(ValueError, match="batch_size"):
        ServerScorer("http://127.0.0.1:1", "m", batch_size=0)
    assert ServerScorer("http://h:8000/v1/", "m").url == "http://h:8000/v1/completions"
    assert ServerScorer("http://h:8000", "m").url == "http://h:8000/v1/completions"


# ----------------------------------------------------------------------- impossible log-probs
@pytest.mark.parametrize("bad", [float("nan"), "NaN", float("inf"), float("-inf"), 0.5, None, "-1.0", True])
def test_an_impossible_teacher_logprob_is_one_error_naming_the_server_and_position(server, api_key, bad):
    from workbench.checks import ImpossibleLogprob

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        out = scoring_answer(body)
        out["choices"][0]["prompt_logprobs"][3]["5"]["logprob"] = bad  # pair 0, token 5 at position 3
        return out

    server.answer = answer
    with pytest.raises(ImpossibleLogprob) as err:
        scorer(server).token_logprobs([[2, 3]], [[4, 5, EOS]])
    message = str(err.value)
    assert f"{server.url}/v1" in message and "pair 0: position 3: log-prob" in message and "\n" not in message
    assert isinstance(err.value, UserError)


def test_a_logprob_within_float_rounding_of_zero_is_accepted(server, api_key):
    from workbench.checks import LOGPROB_TOLERANCE

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        out = scoring_answer(body)
        out["choices"][0]["prompt_logprobs"][3]["5"]["logprob"] = LOGPROB_TOLERANCE / 2
        out["choices"][0]["prompt_logprobs"][2]["4"]["logprob"] = -9999.0  # vLLM's clamped -inf
        return out

    server.answer = answer
    got = scorer(server).token_logprobs([[2, 3]], [[4, 5, EOS]])[0]
    assert got.tolist() == pytest.approx([-9999.0, LOGPROB_TOLERANCE / 2, logp(4, EOS)])


# ------------------------------------------------------------------------------------ replicas
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_replica_urls_from_a_list_or_a_comma_separated_string():
    assert ServerScorer("http://a:1/v1, http://b:2", "m").base_urls == ["http://a:1", "http://b:2"]
    assert ServerScorer(["http://a:1", "http://b:2/"], "m").base_urls == ["http://a:1", "http://b:2"]
    with pytest.raises(ValueError, match="at least one server URL"):
        ServerScorer(" , ", "m")


def test_requests_spread_round_robin_and_keep_their_order(server):
    with fake_server() as other:
        prompts = [[2 + i % 5] for i in range(8)]
        completions = [[3 + j for j in range(i % 3 + 1)] for i in range(8)]
        pool = ServerScorer([server.url, other.url], "teacher", batch_size=1, concurrency=1, backoff_s=0.0,
                            progress=False)
        out = pool.token_logprobs(prompts, completions)
    assert len(server.requests) == 4 and len(other.requests) == 4  # 8 one-pair requests, alternating
    assert all(torch.equal(o, expected(p, c)) for o, p, c in zip(out, prompts, completions))


def test_a_dead_replica_is_passed_over_and_reported_once(server, caplog):
    dead = f"http://127.0.0.1:{free_port()}"
    pool = ServerScorer([dead, server.url], "teacher", batch_size=1, concurrency=2, max_retries=0, backoff_s=0.0,
                        progress=False)
    prompts, completions = [[2]] * 6, [[3, 4]] * 6
    with caplog.at_level(logging.WARNING, logger="workbench"):
        out = pool.token_logprobs(prompts, completions)
        again = pool.token_logprobs(prompts[:2], completions[:2])  # the dead replica is not tried again
    assert len(server.requests) == 8  # every request answered by the live replica, none lost
    assert all(torch.equal(o, expected([2], [3, 4])) for o in out + again)
    reports = [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(reports) == 1 and dead in reports[0] and "1 of 2 replicas left" in reports[0]


def test_every_replica_dead_is_one_error_naming_each():
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    pool = ServerScorer(dead, "teacher", batch_size=1, concurrency=2, max_retries=3, backoff_s=0.0, progress=False)
    with pytest.raises(ServerError, match="none of the 2 teacher replicas answers /v1/completions") as err:
        pool.token_logprobs([[2]] * 5, [[3]] * 5)
    assert all(url in str(err.value) for url in dead)


def test_a_replica_is_tried_again_after_revive_s(server):
    pool = ServerScorer(server.url + "," + server.url, "teacher", batch_size=1, concurrency=1, backoff_s=0.0,
                        revive_s=0.0, progress=False)
    pool._set_down(pool._replicas[0], "test")
    pool.token_logprobs([[2]] * 2, [[3]] * 2)
    assert pool._replicas[0].down_since is None  # revive_s 0: tried at once, answered, up again


def test_retryable_status_moves_to_the_next_replica(server):
    with fake_server() as other:
        server.script.append((503, {"error": "busy"}))
        pool = ServerScorer([server.url, other.url], "teacher", batch_size=1, concurrency=1, max_retries=1,
                            backoff_s=0.0, progress=False)
        out = pool.token_logprobs([[2]], [[3]])
    assert len(server.requests) == 1 and len(other.requests) == 1  # the retry went to the other replica
    assert torch.equal(out[0], expected([2], [3]))
