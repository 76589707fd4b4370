"""A hub model or dataset that cannot be had (no network, HF_HUB_OFFLINE without a cached copy, a name the
hub does not know) costs one line within seconds, naming what to set instead, before any model loads.

The hub is made unreachable by pointing HF_ENDPOINT at a local port nothing listens on, and made to
answer "not found" by a local HTTP server that replies as the hub does for an unknown repository; the
Hugging Face cache is an empty folder, so nothing here depends on the network or on what is cached.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workbench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
MODEL = "openai-community/gpt2"


def _closed_port() -> int:
    """A local port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NotFound(http.server.BaseHTTPRequestHandler):
    """Every request gets the hub's answer for a repository it does not have."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"error":"Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def not_found_hub() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "SCOPE_DATA_DIR")}
    clean |= {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub")} | env
    command = [sys.executable, "-m", "eval.reproduce", *args, "--limit", "1", "--n", "1",
               "--samples-dir", str(tmp_path / "samples"), "--tables-dir", str(tmp_path / "tables"), "--quiet"]
    return subprocess.run(command, cwd=REPO, env=clean, capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not (Path(proc.args[proc.args.index("--samples-dir") + 1])).exists()
    return lines[0]


def test_an_unreachable_hub_is_one_line_naming_the_offline_remedies(tmp_path, fixture_data_dir):
    line = _one_line(_run(tmp_path, "--model", MODEL, "--data-dir", str(fixture_data_dir),
                          HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))
    assert line.startswith(f"error: --model {MODEL}: the hub http://127.0.0.1:")
    assert "unreachable (ConnectError" in line and "not in the local cache" in line
    assert f"hf download {MODEL}" in line and "HF_HUB_OFFLINE=1" in line and "local model folder" in line


def test_offline_mode_without_a_cached_copy_says_so(tmp_path, fixture_data_dir):
    line = _one_line(_run(tmp_path, "--model", MODEL, "--data-dir", str(fixture_data_dir), HF_HUB_OFFLINE="1"))
    assert line == (f"error: --model {MODEL}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
                    f"download it where there is network (hf download {MODEL}) or give a local model folder")


def test_a_model_the_hub_does_not_know_is_named(tmp_path, fixture_data_dir, not_found_hub):
    line = _one_line(_run(tmp_path, "--model", "no-such-org/no-such-model", "--data-dir", str(fixture_data_dir),
                          HF_ENDPOINT=not_found_hub))
    assert line.startswith(f"error: --model no-such-org/no-such-model: no such model on the hub {not_found_hub}")


def test_hub_benchmarks_without_a_data_folder_name_the_variables_to_set(tmp_path):
    line = _one_line(_run(tmp_path, "--model", MODEL, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))
    assert "the real benchmarks come from the hub when no data folder is set" in line and "unreachable" in line
    assert "DATA_DIR=/path (make)" in line and "--data-dir" in line and "SCOPE_DATA_DIR" in line


def test_a_missing_data_folder_names_the_make_variable(tmp_path):
    line = _one_line(_run(tmp_path, "--model", MODEL, "--data-dir", str(tmp_path / "nowhere")))
    assert line.startswith(f"error: --data-dir {tmp_path / 'nowhere'} (DATA_DIR= in make): no such folder")


def test_the_check_answers_within_five_seconds_when_the_hub_hangs(monkeypatch, tmp_path):
    """A hub that accepts the connection and never answers: the check gives up after its timeout."""
    from huggingface_hub import constants

    from workbench import hub

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepted by the kernel, never answered
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
        start = time.perf_counter()
        with pytest.raises(UserError, match=r"is unreachable \(no answer within 4 s\)"):
            hub.check_hub_model("--model", MODEL)
        assert time.perf_counter() - start < 5
    finally:
        listener.close()


def test_a_cached_model_passes_without_asking_the_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from workbench import hub

    snapshot = tmp_path / "models--openai-community--gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--openai-community--gpt2" / "refs").mkdir()
    (tmp_path / "models--openai-community--gpt2" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    hub.check_hub_model("--model", MODEL)  # no error: the cache holds it, the unreachable hub is not asked
    with pytest.raises(UserError, match="unreachable"):
        hub.check_hub_model("--model", "openai-community/gpt2-medium")
