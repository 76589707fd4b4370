"""Benchmark: teacher scoring served (a vLLM OpenAI server) against in-process, on the toy teacher (CPU).

The student's 480 samples of 60 toy problems (8 each, transformers, temperature 0.6) are scored by the
toy teacher: by an in-process vLLM engine (`VLLMBackend.token_logprobs`, the baseline), and by
`ServerScorer` against two live `vllm.entrypoints.openai.api_server`s, one started as usual and one with
``--skip-tokenizer-init`` (compact answers: no decoded text beside each log-prob), each with several request
shapes (rollouts a request x requests in flight), the trainer's former default (16 x 4) among them. It prints each one's
tokens per second, its ratio to in-process and to the former default, all measured in this run, and the
client's own cost per request (building the JSON body, decoding the answer, reading the log-probs), timed
on recorded answers so the server's time is not in it. Every time is the best of a few runs: on a shared
machine one run can take several times the quiet one, so the ways are run in turn, round after round.

Run in the engine environment: ``.venv-vllm/bin/python benchmarks/bench_teacher_scoring.py``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engines import best, timed, vllm_server  # noqa: E402

from workbench.models import SamplingConfig, load_backend  # noqa: E402
from workbench.models.hf import HFBackend  # noqa: E402
from workbench.models.server import ServerScorer  # noqa: E402
from workbench.models.vllm import completion_logprobs  # noqa: E402
from workbench.toy import STUDENT_DIR, TEACHER_DIR  # noqa: E402
from workbench.toy.task import TIERS, toy_problems  # noqa: E402

PROBLEMS_PER_TIER = 10
SAMPLING = SamplingConfig(n=8, temperature=0.6, max_new_tokens=64, seed=0)
BEFORE = (16, 4)
"""The trainer's former teacher_server_batch_size x teacher_server_concurrency."""
SHAPES = [BEFORE, (32, 4), (64, 2), (128, 2)]
COMPACT = "--skip-tokenizer-init"
"""A server that only scores needs no tokenizer: without one it sends no decoded token text with each log-prob."""
ROUNDS = 4
"""Rounds over every way of scoring, interleaved so that a burst of load from other processes hits them
alike; each keeps its best time."""


def client_cost(scorer: ServerScorer, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                batch: int) -> float:
    """Seconds the client spends per request of `batch` rollouts outside the server: body, decoding, reading."""
    sequences = [[*p, *c] for p, c in zip(prompt_ids[:batch], completion_ids[:batch])]
    body = scorer.scoring_body(sequences)
    request = urllib.request.Request(scorer.url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {os.environ['SCOPE_TEACHER_API_KEY']}"})
    with urllib.request.urlopen(request, timeout=600) as response:
        raw = response.read()

    def own_work() -> None:
        json.dumps(body).encode()
        answer = json.loads(raw)
        for choice, seq, p in zip(answer["choices"], sequences, prompt_ids):
            completion_logprobs(choice["prompt_logprobs"], seq, len(p), "bench")

    _, seconds = best(own_work, repeats=5)
    return seconds


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prompts = [p["problem"] for tier in TIERS for p in toy_problems(tier, PROBLEMS_PER_TIER)]
    student = HFBackend(str(STUDENT_DIR), device="cpu", max_batch_sequences=1024, progress=False)
    groups = student.generate(prompts, SAMPLING)
    prompt_ids = [student.encode(p) for p in prompts for _ in range(SAMPLING.n)]
    completion_ids = [list(c.token_ids) for group in groups for c in group]
    tokens = sum(map(len, completion_ids))

    teacher = load_backend("vllm", str(TEACHER_DIR), progress=False)
    reference = teacher.token_logprobs(prompt_ids, completion_ids)
    key = secrets.token_hex(16)
    os.environ["SCOPE_TEACHER_API_KEY"] = key
    times: dict[Any, list[float]] = {"in-process": []}
    with vllm_server(str(TEACHER_DIR), key) as (url, _), vllm_server(str(TEACHER_DIR), key, COMPACT) as (compact, _):
        scorers: dict[Any, Any] = {"in-process": teacher}
        for root, flag in ((url, ""), (compact, COMPACT)):
            for b, c in SHAPES:
                scorers[(b, c, flag)] = ServerScorer(root, str(TEACHER_DIR), batch_size=b, concurrency=c,
                                                     progress=False)
                times[(b, c, flag)] = []
        for _ in range(ROUNDS):
            for way, scorer in scorers.items():
                scores, seconds = timed(lambda s=scorer: s.token_logprobs(prompt_ids, completion_ids))
                times[way].append(seconds)
                worst = max((a - b).abs().max().item() for a, b in zip(scores, reference) if len(a))
                assert worst < 1e-3, f"{way}: log-probs differ from in-process by {worst}"
        first_scorer = {}  # one scorer per request size: the client's cost does not depend on the concurrency
        for batch, concurrency in SHAPES:
            first_scorer.setdefault(batch, scorers[(batch, concurrency, "")])
        costs = {batch: client_cost(scorer, prompt_ids, completion_ids, batch)
                 for batch, scorer in first_scorer.items()}
    in_s = min(times.pop("in-process"))
    results = {shape: min(t) for shape, t in times.items()}

    before = results[(*BEFORE, "")]
    print(f"teacher scoring of {len(completion_ids)} toy rollouts ({tokens} completion tokens), best of {ROUNDS} "
          "interleaved rounds")
    print(f"  in-process vLLM                  {tokens / in_s:8.0f} tokens/s  ({in_s:.2f} s)  [baseline]")
    for (batch, concurrency, flag), seconds in results.items():
        label = f"served {batch:3d} x {concurrency}" + (f" {flag}" if flag else "")
        note = "  [former default]" if (batch, concurrency, flag) == (*BEFORE, "") else ""
        print(f"  {label:32} {tokens / seconds:8.0f} tokens/s  ({seconds:.2f} s)  served / in-process "
              f"{in_s / seconds:.2f}x, / former default {before / seconds:.2f}x{note}")
    fastest = min(results, key=results.get)
    print(f"  fastest: {fastest[0]} x {fastest[1]} {fastest[2] or '(server with its tokenizer)'}: served / in-process "
          f"{in_s / results[fastest]:.2f}x (former default {in_s / before:.2f}x), {before / results[fastest]:.2f}x "
          "the former default's throughput")
    for batch, seconds in costs.items():
        print(f"  client's own work per request of {batch:3d} rollouts: {seconds * 1e3:6.1f} ms "
              f"({seconds / batch * 1e3:.2f} ms a rollout)")


if __name__ == "__main__":
    main()
