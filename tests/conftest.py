"""Shared fixtures: the real benchmark folder and a tiny random Llama with a character tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The six real benchmarks as JSONL ($SCOPE_DATA_DIR, else ../shared/data/benchmarks)."""
    path = Path(os.environ.get("SCOPE_DATA_DIR", REPO.parent / "shared" / "data" / "benchmarks"))
    if not (path / "math500.jsonl").is_file():
        pytest.fail(f"benchmark data not found in {path}: set SCOPE_DATA_DIR to the folder of the six JSONL files")
    return path


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
