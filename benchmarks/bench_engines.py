"""Benchmark: the vLLM engines against transformers and against raw vLLM, on the toy world (CPU).

Sampling throughput (transformers vs vLLM), the adapter's cost against raw ``vllm.LLM.generate``, and teacher
scoring served vs in-process vs transformers, every ratio measured in this run; what each part does and
why the figures are best-of runs: docs/evaluation-at-scale.md.

Run in the engine environment: ``.venv-vllm/bin/python benchmarks/bench_engines.py``.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs to stdout, among the results

import torch  # noqa: E402

from workbench.models import SamplingConfig, load_backend  # noqa: E402
from workbench.models.hf import HFBackend  # noqa: E402
from workbench.models.server import ServerScorer  # noqa: E402
from workbench.toy import STUDENT_DIR, TEACHER_DIR  # noqa: E402
from workbench.toy.task import TIERS, toy_problems  # noqa: E402

PROBLEMS_PER_TIER = 10
SAMPLING = SamplingConfig(n=8, temperature=0.6, max_new_tokens=64, seed=0)
REPEATS = 3  # every measurement keeps the best of this many runs


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def best(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[Any, float]:
    """The last result and the shortest time of `repeats` calls: on a shared machine a single time
    can be several times the quiet one."""
    times = []
    for _ in range(repeats):
        result, seconds = timed(fn)
        times.append(seconds)
    return result, min(times)


def n_tokens(groups: list[list[Any]]) -> int:
    return sum(c.n_tokens for group in groups for c in group)


@contextmanager
def vllm_server(model: str, key: str, *extra: str) -> Iterator[tuple[str, float]]:
    """A vLLM OpenAI server on a free local port, float32 (``extra``: more server flags); yields its URL and
    start time, and stops its process group (API server and engine process) on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="vllm-server-", suffix=".log", delete=False)
    env = os.environ | {"VLLM_API_KEY": key, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
         "--host", "127.0.0.1", "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if process.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError(f"the vLLM server did not come up; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - start
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    prompts = [p["problem"] for tier in TIERS for p in toy_problems(tier, PROBLEMS_PER_TIER)]
    jobs = f"{len(prompts)} toy problems x {SAMPLING.n} samples, {SAMPLING.max_new_tokens} new tokens, " \
           f"T={SAMPLING.temperature}"

    # (a) transformers first, before the in-process vLLM engine binds this process's threads
    hf_threads = torch.get_num_threads()
    hf_student, hf_start = timed(lambda: HFBackend(str(STUDENT_DIR), device="cpu", max_batch_sequences=1024,
                                                   progress=False))
    hf_groups, hf_s = best(lambda: hf_student.generate(prompts, SAMPLING))

    student = load_backend("vllm", str(STUDENT_DIR), progress=False)
    _, student_start = timed(lambda: student.llm)
    vllm_groups, vllm_s = best(lambda: student.generate(prompts, SAMPLING))
    hf_tps, vllm_tps = n_tokens(hf_groups) / hf_s, n_tokens(vllm_groups) / vllm_s
    print(f"(a) sampling, {jobs}, best of {REPEATS}")
    print(f"    transformers  {hf_tps:8.0f} tokens/s  ({n_tokens(hf_groups)} tokens, {hf_s:.2f} s, "
          f"{hf_threads} torch threads)")
    print(f"    vLLM          {vllm_tps:8.0f} tokens/s  ({n_tokens(vllm_groups)} tokens, {vllm_s:.2f} s, "
          f"{torch.get_num_threads()} torch thread(s))")
    print(f"    vLLM / transformers  {vllm_tps / hf_tps:.2f}x")

    # (b) the adapter against raw vLLM: same engine, prompts and SamplingParams (built afresh for each
    # raw call, as the adapter does). On a shared machine one call's time can vary 10x, so the two are
    # alternated, and the time our call spends outside the engine's generate (the adapter's own cost,
    # independent of the load) is measured too.
    token_prompts = [{"prompt_token_ids": student.encode(p)} for p in prompts]
    engine_generate, inside = student.llm.generate, []

    def engine_timed(*args: Any, **kwargs: Any) -> Any:
        result, seconds = timed(lambda: engine_generate(*args, **kwargs))
        inside.append(seconds)
        return result

    student.llm.generate = engine_timed
    ours_s, raw_s = [], []
    for _ in range(2 * REPEATS):
        ours, seconds = timed(lambda: student.generate(prompts, SAMPLING))
        ours_s.append(seconds)
        params = [student.sampling_params(SAMPLING, i) for i in range(len(prompts))]
        raw, seconds = timed(lambda: engine_generate(token_prompts, params, use_tqdm=False))
        raw_s.append(seconds)
    student.llm.generate = engine_generate
    raw_ids = [[tuple(c.token_ids) for c in sorted(out.outputs, key=lambda c: c.index)] for out in raw]
    same = raw_ids == [[c.token_ids for c in group] for group in ours]
    outside = [total - engine for total, engine in zip(ours_s, inside)]
    tokens = n_tokens(ours)
    print(f"(b) VLLMBackend.generate vs vllm.LLM.generate, same engine and SamplingParams, {2 * REPEATS} runs each")
    for name, times in (("raw LLM.generate", raw_s), ("VLLMBackend", ours_s)):
        print(f"    {name:17}  best {tokens / min(times):6.0f} tokens/s ({min(times):.3f} s), "
              f"median {tokens / statistics.median(times):6.0f} tokens/s ({statistics.median(times):.3f} s)")
    print(f"    VLLMBackend / raw  best {min(raw_s) / min(ours_s):.1%}, median "
          f"{statistics.median(raw_s) / statistics.median(ours_s):.1%}  (token ids identical: {same})")
    print(f"    adapter's own time (encode, SamplingParams, checks): {max(outside) * 1e3:.1f} ms per call at most, "
          f"{max(o / t for o, t in zip(outside, ours_s)):.2%} of the call")

    # (c) scoring the student's samples with the teacher: served, in-process, transformers
    prompt_ids = [student.encode(p) for p in prompts for _ in range(SAMPLING.n)]
    completion_ids = [list(c.token_ids) for group in vllm_groups for c in group]
    n_scored = sum(map(len, completion_ids))
    hf_teacher = HFBackend(str(TEACHER_DIR), device="cpu", progress=False)
    hf_scores, hf_score_s = best(lambda: hf_teacher.token_logprobs(prompt_ids, completion_ids))
    teacher = load_backend("vllm", str(TEACHER_DIR), progress=False)
    _, teacher_start = timed(lambda: teacher.llm)
    in_scores, in_score_s = best(lambda: teacher.token_logprobs(prompt_ids, completion_ids))
    key = secrets.token_hex(16)
    os.environ["SCOPE_TEACHER_API_KEY"] = key
    with vllm_server(str(TEACHER_DIR), key) as (url, server_start):
        served = ServerScorer(url, str(TEACHER_DIR), progress=False)
        srv_scores, srv_score_s = best(lambda: served.token_logprobs(prompt_ids, completion_ids))

    def worst(scores: list[torch.Tensor]) -> float:
        return max((a - b).abs().max().item() for a, b in zip(scores, hf_scores) if len(a))

    print(f"(c) teacher scoring of the {len(completion_ids)} samples of (a), {n_scored} tokens, best of {REPEATS}")
    print(f"    transformers        {n_scored / hf_score_s:8.0f} tokens/s  ({hf_score_s:.2f} s)")
    print(f"    vLLM in-process     {n_scored / in_score_s:8.0f} tokens/s  ({in_score_s:.2f} s, "
          f"max |diff| vs transformers {worst(in_scores):.1e})")
    print(f"    vLLM server         {n_scored / srv_score_s:8.0f} tokens/s  ({srv_score_s:.2f} s, "
          f"max |diff| vs transformers {worst(srv_scores):.1e}; batch {served.batch_size}, "
          f"{served.concurrency} requests in flight)")
    print(f"    server / in-process {in_score_s / srv_score_s:.2f}x   "
          f"server / transformers {hf_score_s / srv_score_s:.2f}x")
    print("engine start (s): "
          f"transformers student {hf_start:.1f}, vLLM student {student_start:.1f}, vLLM teacher {teacher_start:.1f}, "
          f"vLLM server (to /health) {server_start:.1f}  [in-process: VLLM_ENABLE_V1_MULTIPROCESSING="
          f"{os.environ['VLLM_ENABLE_V1_MULTIPROCESSING']}; torch.compile cache in ~/.cache/vllm]")


if __name__ == "__main__":
    main()
