"""A vLLM OpenAI-compatible server as scorer (and sampler): the teacher on its own node, as in the paper.

Prompts go as token ids, so the server scores exactly the student's tokens; the API key is read at each
request and never kept; failures are retried, then fail whole. Request shapes, retries, replicas and why
plain urllib: docs/training-at-scale.md.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from workbench.errors import UserError
from workbench.models.base import Completion, SamplingConfig, encode_prompt
from workbench.models.vllm import (
    TOP_K_OFF,
    VLLMOutputError,
    check_pairs,
    completion_logprobs,
    request_seed,
    to_completion,
)

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")
R = TypeVar("R")



class _NotSent(Exception):
    """A queued request skipped because an earlier one of the same call failed."""

class ServerError(RuntimeError):
    """The server could not be reached or refused a request; `status` is the HTTP status if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerAuthError(ServerError, UserError):
    """The server refused the API key (HTTP 401/403)."""


class ServerUnreachable(ServerError, UserError):
    """No answer after every retry (a dead, stopped or unreachable server): one line, exit 2."""


class ModelNotServed(ServerError, UserError):
    """The server does not serve the requested model name; the message lists the names it serves."""


class _HTTPStatusError(ServerError):
    """An HTTP error status from the replica at `root`."""

    def __init__(self, message: str, status: int, root: str) -> None:
        super().__init__(message, status)
        self.root = root


def split_urls(urls: str | Sequence[str] | None) -> list[str]:
    """Server URLs from one URL, a comma-separated string, or a list of either."""
    if urls is None:
        return []
    items = [urls] if isinstance(urls, str) else list(urls)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def _api_root(base_url: str) -> str:
    """Accept both "http://host:8000" and the OpenAI-style "http://host:8000/v1"."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class _Replica:
    """One server of the pool: its API root and, once it stopped answering, when and why."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.down_since: float | None = None
        self.reason = ""


class ServerScorer:
    """Scorer over one vLLM OpenAI-compatible server or a pool of replicas serving the same model.

    `base_url` is one URL, a comma-separated string of URLs, or a list of them. Requests go to the
    replicas round-robin. A replica that cannot be reached (connection refused or reset) is set aside,
    reported once, and the request goes on to the next one; it is tried again after `revive_s`
    seconds. Only when every replica is down does a call fail, with one error naming each.

    `batch_size` sequences go in one request and `concurrency` requests per replica are in flight at
    once (the server batches concurrent requests itself). `timeout` is per request, in seconds; a
    request answered with a retryable status or not at all within `timeout` is tried `max_retries + 1`
    times in all, each try on the next replica, waiting `backoff_s * 2**attempt` seconds between tries.
    """

    def __init__(self, base_url: str | Sequence[str], model: str, *, api_key_env: str = "SCOPE_TEACHER_API_KEY",
                 timeout: float = 600.0, max_retries: int = 4, backoff_s: float = 1.0, batch_size: int = 32,
                 concurrency: int = 4, revive_s: float = 60.0, progress: bool = True) -> None:
        for name, value in (("batch_size", batch_size), ("concurrency", concurrency)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if max_retries < 0 or timeout <= 0 or backoff_s < 0:
            raise ValueError("need max_retries >= 0, timeout > 0 and backoff_s >= 0")
        roots = split_urls(base_url)
        if not roots:
            raise ValueError("give at least one server URL")
        self._replicas = [_Replica(_api_root(u)) for u in roots]
        self.base_urls = [r.root for r in self._replicas]
        self.base_url = self.base_urls[0] if len(self.base_urls) == 1 else ",".join(self.base_urls)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.revive_s = revive_s
        self.progress = progress
        self._turn = 0
        self._lock = threading.Lock()
        if not os.environ.get(api_key_env):
            log.info("$%s is not set: requests to %s carry no Authorization header", api_key_env, self.base_url)

    @property
    def url(self) -> str:
        """The completions endpoint (of the first replica, for messages)."""
        return f"{self.base_urls[0]}/v1/completions"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r})")

    # --------------------------------------------------------------------------------------- HTTP
    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _next_replica(self) -> _Replica | None:
        """The next replica in turn that is up (or down long enough to be tried again); None if none."""
        with self._lock:
            now = time.monotonic()
            for _ in range(len(self._replicas)):
                replica = self._replicas[self._turn % len(self._replicas)]
                self._turn += 1
                if replica.down_since is None or now - replica.down_since >= self.revive_s:
                    return replica
        return None

    def _set_down(self, replica: _Replica, reason: str) -> None:
        with self._lock:
            first = replica.down_since is None
            replica.down_since = time.monotonic()
            replica.reason = reason
            left = sum(r.down_since is None for r in self._replicas)
        if first and len(self._replicas) > 1:
            log.warning("teacher replica %s stopped answering (%s); %d of %d replicas left", replica.root, reason,
                        left, len(self._replicas))

    def _set_up(self, replica: _Replica) -> None:
        if replica.down_since is not None:
            with self._lock:
                replica.down_since = None
            log.warning("teacher replica %s answers again", replica.root)

    def _all_down(self, path: str) -> ServerError:
        """Only a pool is ever all down: a single server is retried like any failing request."""
        reasons = "; ".join(f"{r.root} ({r.reason})" for r in self._replicas)
        return ServerError(f"none of the {len(self._replicas)} teacher replicas answers {path}: {reasons}")

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """JSON answer of a POST (`body` given) or GET to `path` on the replicas in turn, retrying what a
        retry can fix and passing over replicas that cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"} | ({} if data is None else {"Content-Type": "application/json"})
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        tries = self.max_retries + 1
        attempt = 0
        while True:
            replica = self._next_replica()
            if replica is None:
                raise self._all_down(path)
            url = f"{replica.root}{path}"
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                self._set_up(replica)
                break
            except urllib.error.HTTPError as err:
                detail = self._redact(err.read().decode(errors="replace").strip()[:500])
                if err.code in (401, 403):
                    raise ServerAuthError(f"{url} answered HTTP {err.code}; check the key in ${self.api_key_env}: "
                                          f"{detail}", err.code) from None
                if err.code not in RETRY_STATUSES or attempt + 1 == tries:
                    raise _HTTPStatusError(f"{url} answered HTTP {err.code}: {detail}", err.code,
                                           replica.root) from None
                log.warning("%s answered HTTP %d (try %d of %d): %s", url, err.code, attempt + 1, tries, detail)
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                timed_out = isinstance(reason, TimeoutError)
                text = (f"no answer within timeout={self.timeout:g} s" if timed_out
                        else self._redact(str(reason) or type(reason).__name__))
                if not timed_out and len(self._replicas) > 1:
                    self._set_down(replica, text)  # unreachable: the next replica takes the request, no wait
                    continue
                if attempt + 1 == tries:
                    hint = ("; raise the timeout for long requests, or check the server" if timed_out
                            else "; start the server (or fix its URL) and run the command again")
                    where = url if len(self._replicas) == 1 else f"the teacher replicas ({self.base_url})"
                    raise ServerUnreachable(f"could not reach {where} after {tries} tries: {text}{hint}") from None
                log.warning("could not reach %s (try %d of %d): %s", url, attempt + 1, tries, text)
            time.sleep(self.backoff_s * 2**attempt)
            attempt += 1
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise ServerError(f"{url} answered with something that is not JSON: {err}") from None

    def served_models(self) -> list[str]:
        """The model names the server answers to (`GET /v1/models`)."""
        answer = self._request("/v1/models")
        return [str(m.get("id")) for m in answer.get("data", [])] if isinstance(answer, dict) else []

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self._request("/v1/completions", body)
        except _HTTPStatusError as err:
            if err.status != 404:
                raise
            try:
                served = self.served_models()
            except ServerError:
                raise err from None
            if self.model in served:
                raise
            raise ModelNotServed(f"{err.root} does not serve the model {self.model!r}; it serves {served}: "
                                 "pass one of those as the model name", 404) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise VLLMOutputError(f"{self.url}: the answer has no 'choices' list")
        return answer

    def _map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        """`fn` over `items` with `concurrency` requests in flight, results in input order. The first
        failure cancels the requests not yet started, so a dead server fails the call after one
        request's retries instead of after every queued request has run through its own. The worker
        that fails flags it before it can take the next request, so how busy the caller's thread is
        never lets a queued request through."""
        failed = threading.Event()

        def guarded(item: T) -> R:
            if failed.is_set():
                raise _NotSent
            try:
                return fn(item)
            except BaseException:
                failed.set()
                raise

        results = []
        workers = self.concurrency * len(self._replicas)
        with (tqdm(total=len(items), desc=desc, unit="request", disable=not self.progress, leave=False) as bar,
              ThreadPoolExecutor(max_workers=workers) as pool):
            futures = [pool.submit(guarded, item) for item in items]
            try:
                for future in futures:
                    results.append(future.result())
                    bar.update(1)
            except _NotSent:
                pool.shutdown(wait=False, cancel_futures=True)
                # A later request failed first: raise its error, not the skipped one's.
                for future in futures:
                    if not future.cancelled() and not isinstance(future.exception(), (_NotSent, type(None))):
                        raise future.exception() from None
                raise
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return results

    @staticmethod
    def _choices(answer: dict[str, Any], expected: int, where: str) -> list[dict[str, Any]]:
        choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != expected:
            raise VLLMOutputError(f"{where}: {len(choices)} choices, expected {expected}")
        return choices

    # ------------------------------------------------------------------------------------ scoring
    def scoring_body(self, sequences: list[list[int]]) -> dict[str, Any]:
        """One scoring request: the log-prob of every token of each sequence, the one generated token discarded."""
        return {"model": self.model, "prompt": sequences, "max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0,
                "top_p": 1.0, "top_k": TOP_K_OFF, "min_p": 0.0, "repetition_penalty": 1.0}

    def token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                       completion_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        check_pairs(prompt_ids, completion_ids)
        results = [torch.empty(0, dtype=torch.float32) for _ in prompt_ids]
        todo = [i for i in range(len(prompt_ids)) if len(completion_ids[i]) > 0]
        batches = [todo[s : s + self.batch_size] for s in range(0, len(todo), self.batch_size)]

        def score(batch: list[int]) -> list[torch.Tensor]:
            sequences = [[int(t) for t in (*prompt_ids[i], *completion_ids[i])] for i in batch]
            answer = self._post(self.scoring_body(sequences))
            choices = self._choices(answer, len(batch), f"{self.url} scoring")
            return [completion_logprobs(c.get("prompt_logprobs"), seq, len(prompt_ids[i]), f"{self.url} pair {i}")
                    for i, seq, c in zip(batch, sequences, choices)]

        for batch, scored in zip(batches, self._map(score, batches, f"scoring {self.model}")):
            for i, logps in zip(batch, scored):
                results[i] = logps
        return results


class ServerBackend(ServerScorer):
    """Sampler and scorer over a vLLM server (or a pool of replicas). `tokenizer` (a hub id, folder, or
    tokenizer object; default: `model`) encodes prompts locally by the same rule as the other backends.
    `name` is the served model's, so sample folders record which model drew them, not which URL."""

    def __init__(self, base_url: str | Sequence[str], model: str, *, tokenizer: str | Any | None = None,
                 **kwargs: Any) -> None:
        super().__init__(base_url, model, **kwargs)
        self.name = model
        self._tokenizer = tokenizer if tokenizer is not None else model

    @property
    def tokenizer(self) -> Any:
        if isinstance(self._tokenizer, str):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer)
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, one request per prompt seeded from (`sampling.seed`,
        its position). Greedy decoding asks for one sample and repeats it (vLLM rejects n > 1 at
        temperature 0)."""
        want = 1 if sampling.temperature == 0 else sampling.n
        eos_id = getattr(self.tokenizer, "eos_token_id", None)
        bodies = [{
            "model": self.model, "prompt": [self.encode(p)], "n": want, "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k or TOP_K_OFF,
            "min_p": 0.0, "repetition_penalty": sampling.repetition_penalty,
            "seed": request_seed(sampling.seed, i), "return_token_ids": True,
        } for i, p in enumerate(prompts)]

        def parse(i: int, answer: dict[str, Any]) -> list[Completion]:
            group = []
            for choice in self._choices(answer, want, f"{self.url} prompt {i}"):
                if choice.get("token_ids") is None:
                    raise VLLMOutputError(f"{self.url} returned no token_ids: the server needs a vLLM release "
                                          "that supports the return_token_ids request field")
                if not choice.get("text") and self.tokenizer.decode(choice["token_ids"], skip_special_tokens=True):
                    raise VLLMOutputError(f"{self.url} returned tokens without their text: a server started with "
                                          "--skip-tokenizer-init scores but cannot sample; sample from one started "
                                          "with its tokenizer")
                group.append(to_completion(choice.get("text", ""), choice["token_ids"], choice.get("finish_reason"),
                                           choice.get("stop_reason"), eos_id))
            return group * (sampling.n // want)

        answers = self._map(self._post, bodies, f"sampling {self.model}")
        return [parse(i, answer) for i, answer in enumerate(answers)]
