"""The served teacher over two live vLLM `api_server` replicas of the toy teacher: both take requests, a
replica killed mid-run leaves the right log-probs coming from the other, both killed is one clear error.

This file sorts after test_vllm_server.py, whose last test kills the first server; the fixture restarts it.
"""

from __future__ import annotations

import logging
import re
import urllib.request

import pytest

pytest.importorskip("vllm", reason="needs vLLM: `make setup-vllm`, then `make test-engines`")

from workbench.models.server import ServerError, ServerScorer  # noqa: E402
from workbench.toy import TEACHER_DIR  # noqa: E402

pytestmark = pytest.mark.engines

KEY_ENV = "SCOPE_TEACHER_API_KEY"
SCALED_TOLERANCE = 3e-5  # as test_vllm_server.py: the same engine, the same float32 agreement
MEAN_TOLERANCE = 1e-6


@pytest.fixture(autouse=True)
def direct_to_localhost(monkeypatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def answered(server) -> float:
    """Completed requests so far, from the server's Prometheus counter (not behind the API key)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(m) for m in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def test_two_replicas_share_the_work_and_survive_one_then_fail_on_both(
        served_teacher, second_served_teacher, monkeypatch, caplog, hf_teacher, scoring_pairs, abs_diff_stats):
    monkeypatch.setenv(KEY_ENV, served_teacher.key)
    a, b = served_teacher, second_served_teacher
    prompts, completions = scoring_pairs
    reference = hf_teacher.token_logprobs(prompts, completions)
    pool = ServerScorer([f"{a.url}/v1", b.url], str(TEACHER_DIR), batch_size=4, concurrency=1, max_retries=1,
                        backoff_s=0.1, timeout=60.0, progress=False)

    # both replicas get traffic, and the scores are the teacher's
    before = (answered(a), answered(b))
    diff = abs_diff_stats(pool.token_logprobs(prompts, completions), reference)
    assert diff["max_scaled"] < SCALED_TOLERANCE and diff["mean"] < MEAN_TOLERANCE, diff
    took = (answered(a) - before[0], answered(b) - before[1])
    assert took[0] > 0 and took[1] > 0 and sum(took) == 60, took  # the engines count each of the 60 pairs

    # the second replica is killed after 4 requests of this call: the first answers the rest, in order
    post, sent = pool._post, []

    def post_then_kill(body):
        if len(sent) == 4:
            b.kill()
        sent.append(body)
        return post(body)

    pool._post = post_then_kill
    with caplog.at_level(logging.WARNING, logger="workbench"):
        diff = abs_diff_stats(pool.token_logprobs(prompts, completions), reference)
    assert diff["max_scaled"] < SCALED_TOLERANCE and diff["mean"] < MEAN_TOLERANCE, diff
    reports = [r.getMessage() for r in caplog.records if "stopped answering" in r.getMessage()]
    assert len(reports) == 1 and b.url in reports[0], reports

    # and with the first one killed as well, the call fails once, naming both
    a.kill()
    with pytest.raises(ServerError, match="none of the 2 teacher replicas answers /v1/completions") as err:
        pool.token_logprobs(prompts, completions)
    assert a.url in str(err.value) and b.url in str(err.value)
