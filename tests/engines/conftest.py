"""Real engines on the toy models: in-process vLLM engines and a live vLLM OpenAI server.

An engine start costs tens of seconds on a laptop CPU, so each engine is started once per session.
The in-process engines run in pytest's own process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: no engine
process to spawn, several times faster to start on CPU) and skip torch.compile (`enforce_eager`),
which halves the start again with the same float32 agreement (measured both ways). The server is a
real `python -m vllm.entrypoints.openai.api_server` subprocess, started as soon as the session knows
a test needs it, so it boots while the in-process tests run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.toy import STUDENT_DIR, TEACHER_DIR
from workbench.toy.task import TIERS, toy_problems

ENGINE_KWARGS: dict[str, Any] = {"enforce_eager": True}
SERVER_KEY = "sk-engines-7c41d2e9b0"
SERVER_START_DEADLINE_S = 420.0
HEALTH_GRACE_S = 120.0
"""However long ago the server started, a health check waits at least this long: a session on a loaded
machine reaches its served tests long after the start deadline has passed."""
HEALTH_REQUEST_TIMEOUT_S = 15.0
PAIRS_PER_TIER = 10


# ---------------------------------------------------------------------------- in-process engines
def _in_process_engine(model: Path) -> Any:
    """A VLLMBackend whose engine is started here, in this process; the environment variable that
    asks for it is set only while the engine is built (vLLM reads it there), so the subprocesses
    other tests start keep vLLM's default."""
    from workbench.models import load_backend

    backend = load_backend("vllm", str(model), progress=False, llm_kwargs=ENGINE_KWARGS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        backend.llm
    return backend


@pytest.fixture(scope="session")
def vllm_student() -> Any:
    return _in_process_engine(STUDENT_DIR)


@pytest.fixture(scope="session")
def vllm_teacher() -> Any:
    return _in_process_engine(TEACHER_DIR)


@pytest.fixture(scope="session")
def hf_teacher() -> Any:
    from workbench.models.hf import HFBackend

    return HFBackend(str(TEACHER_DIR), device="cpu", dtype=torch.float32, progress=False)


@pytest.fixture(scope="session")
def toy_prompts() -> list[str]:
    """Ten test problems of each of the six tiers (60 prompts)."""
    return [p["problem"] for tier in TIERS for p in toy_problems(tier, PAIRS_PER_TIER)]


@pytest.fixture(scope="session")
def scoring_pairs(hf_teacher, toy_prompts) -> tuple[list[list[int]], list[list[int]]]:
    """60 prompt + completion pairs as the teacher meets them in training: each prompt with one of the
    student's own samples (transformers, seeded), EOS included where it stopped."""
    from workbench.models import SamplingConfig
    from workbench.models.hf import HFBackend

    student = HFBackend(str(STUDENT_DIR), device="cpu", dtype=torch.float32, progress=False)
    groups = student.generate(toy_prompts, SamplingConfig(n=1, temperature=1.0, top_p=1.0, top_k=0,
                                                          max_new_tokens=64, seed=0))
    prompts = [hf_teacher.encode(p) for p in toy_prompts]
    return prompts, [list(g[0].token_ids) for g in groups]


def _abs_diff_stats(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float]:
    assert [x.shape for x in ours] == [y.shape for y in reference]
    got, want = torch.cat(ours), torch.cat(reference)
    diff = (got - want).abs()
    return {"max": diff.max().item(), "mean": diff.mean().item(), "n": diff.numel(),
            "max_scaled": (diff / (1 + want.abs())).max().item()}


@pytest.fixture(scope="session")
def abs_diff_stats() -> Any:
    """|ours - reference| over every token of two lists of paired log-prob tensors: its max, mean and
    count, and its max relative to 1 + |reference log-prob| (float32 rounding grows with the logits)."""
    return _abs_diff_stats


# ---------------------------------------------------------------------------------- live server
class LiveServer:
    """A vLLM OpenAI-compatible server on the toy teacher, in its own process group so that stopping
    it also stops the engine process it spawns. The API key reaches it through `VLLM_API_KEY`, which
    keeps it off the command line (and so out of `ps`)."""

    def __init__(self, model: Path, key: str, *flags: str) -> None:
        self.model = str(model)
        self.key = key
        self.flags = flags
        self.log_path = Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.start_seconds = 0.0
        self._started_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = os.environ | {"VLLM_API_KEY": self.key, "VLLM_CPU_KVCACHE_SPACE": os.environ.get(
            "VLLM_CPU_KVCACHE_SPACE", "1"), "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
                   "--dtype", "float32", "--enforce-eager", "--host", "127.0.0.1", "--port", str(self.port), *self.flags]
        self._started_at = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def wait_healthy(self, deadline_s: float = SERVER_START_DEADLINE_S) -> None:
        """Until ``deadline_s`` after the start, and at least ``HEALTH_GRACE_S`` from now.

        The deadline counts from the server's start, which is once per session: measured from there
        alone, every test after the first ``deadline_s`` of a slow (loaded) session found the deadline
        already past and failed without asking a server that had been healthy for minutes.
        """
        assert self.process is not None
        end = max(self._started_at + deadline_s, time.perf_counter() + HEALTH_GRACE_S)
        while time.perf_counter() < end:
            if self.process.poll() is not None:
                pytest.fail(f"the vLLM server exited with status {self.process.returncode} before it was healthy; "
                            f"log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=HEALTH_REQUEST_TIMEOUT_S) as answer:
                    if answer.status == 200:
                        self.start_seconds = self.start_seconds or time.perf_counter() - self._started_at
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the vLLM server was not healthy {time.perf_counter() - self._started_at:.0f} s after its "
                    f"start; log {self.log_path}:\n"
                    f"{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the server's process group (the API server and its engine process)."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (vLLM shuts its engine down), SIGKILL if it has not exited within 30 s."""
        if self.process is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.signal(signal.SIGKILL)  # whatever of the group is left, the engine process included
        self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _live_server(*flags: str) -> Iterator[LiveServer]:
    server = LiveServer(TEACHER_DIR, SERVER_KEY, *flags)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _server() -> Iterator[LiveServer]:
    yield from _live_server()


@pytest.fixture(scope="session")
def _second_server() -> Iterator[LiveServer]:
    yield from _live_server()


@pytest.fixture(scope="session")
def _compact_server() -> Iterator[LiveServer]:
    yield from _live_server("--skip-tokenizer-init")


@pytest.fixture(scope="session", autouse=True)
def _boot_server_early(request) -> None:
    """Start the servers at session start when a collected test needs them, so they boot in parallel."""
    if any("served_teacher" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("_server")
    if any("second_served_teacher" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("_second_server")
    if any("compact_served_teacher" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("_compact_server")


def _healthy(server: LiveServer) -> LiveServer:
    """`server`, healthy; restarted first if an earlier test killed it."""
    if server.process is not None and not server.alive():
        server.stop()
        server.start()
    server.wait_healthy()
    return server


@pytest.fixture
def served_teacher(_server: LiveServer) -> LiveServer:
    """The live server, healthy; restarted first if an earlier test killed it."""
    return _healthy(_server)


@pytest.fixture
def second_served_teacher(_second_server: LiveServer) -> LiveServer:
    """A second replica of the served teacher (same model, same key, its own port and process group)."""
    return _healthy(_second_server)


@pytest.fixture
def compact_served_teacher(_compact_server: LiveServer) -> LiveServer:
    """The served teacher started without its tokenizer (--skip-tokenizer-init): answers carry no text."""
    return _healthy(_compact_server)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to the report of a failed test that used the server."""
    outcome = yield
    report = outcome.get_result()
    for name in ("served_teacher", "second_served_teacher", "compact_served_teacher"):
        server = getattr(item, "funcargs", {}).get(name)
        if report.failed and isinstance(server, LiveServer):
            report.sections.append((f"vLLM server log (tail of {server.log_path})", server.log_tail()))
