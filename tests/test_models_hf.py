import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.models import SamplingConfig, TokenizerMismatch, check_same_vocab, load_backend
from workbench.models.hf import HFBackend


@pytest.fixture(scope="module")
def backend(tiny_lm):
    return HFBackend(str(tiny_lm), progress=False, logit_chunk_elems=22, score_tokens_per_batch=12)


def reference_logprobs(model, prompt, completion):
    """Full-vocabulary log-softmax over one unpadded sequence: the slow, obvious computation."""
    ids = torch.tensor([list(prompt) + list(completion)])
    logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    rows = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return logp[rows, torch.tensor(completion)]


def test_scorer_matches_full_log_softmax_in_tiny_chunks(backend, tiny_lm):
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    prompts = [backend.encode("abc"), backend.encode("d"), backend.encode("hgfedcba")]
    completions = [[4, 5, 1], [6, 7, 8, 3, 1], []]
    got = backend.token_logprobs(prompts, completions)
    assert [len(g) for g in got] == [3, 5, 0]
    for p, c, g in zip(prompts, completions, got):
        if c:
            torch.testing.assert_close(g, reference_logprobs(model, p, c).detach(), atol=1e-5, rtol=1e-5)
    assert all(g.dtype == torch.float32 for g in got)


def test_scorer_rejects_empty_prompt_and_length_mismatch(backend):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        backend.token_logprobs([[]], [[3]])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        backend.token_logprobs([[3], [4]], [[5]])


def test_sampling_shapes_finish_reasons_and_seed(backend):
    cfg = SamplingConfig(n=3, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=5, seed=7)
    out = backend.generate(["abc", "de"], cfg)
    assert len(out) == 2 and all(len(g) == 3 for g in out)
    for group in out:
        for c in group:
            assert 1 <= c.n_tokens <= 5
            if c.finish_reason == "stop":
                assert c.token_ids[-1] in backend.eos_ids
            else:
                assert c.n_tokens == 5 and not set(c.token_ids) & backend.eos_ids
            assert c.text == backend.tokenizer.decode(c.token_ids, skip_special_tokens=True)
    again = backend.generate(["abc", "de"], cfg)
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in out]


def test_greedy_is_deterministic_and_matches_argmax(backend, tiny_lm):
    out = backend.generate(["ab"], SamplingConfig(n=2, temperature=0.0, max_new_tokens=3))
    assert out[0][0].token_ids == out[0][1].token_ids
    model = AutoModelForCausalLM.from_pretrained(tiny_lm)
    ids = backend.encode("ab")
    first = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    assert out[0][0].token_ids[0] == first


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="n must be at least 1"):
        SamplingConfig(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


def test_vocab_check(tiny_lm):
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    check_same_vocab(tok, AutoTokenizer.from_pretrained(tiny_lm))
    other = AutoTokenizer.from_pretrained(tiny_lm)
    other.add_tokens(["zz"])
    with pytest.raises(TokenizerMismatch, match="only in teacher: \\['zz'\\]"):
        check_same_vocab(tok, other)


def test_load_backend_by_name(tiny_lm):
    assert isinstance(load_backend("hf", str(tiny_lm), progress=False), HFBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        load_backend("tensorrt", str(tiny_lm))
