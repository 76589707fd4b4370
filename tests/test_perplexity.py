import math

import pytest
import torch

from workbench.perplexity import log_perplexity, pad_logprobs


def test_hand_computed_values():
    logps, mask = pad_logprobs([[math.log(0.5), math.log(0.25)], [math.log(0.1)]])
    assert mask.tolist() == [[True, True], [True, False]]
    assert logps.tolist()[1][1] == 0.0
    # PPL = exp(-(1/|y|) sum log p): geometric mean of 1/p -> sqrt(2*4) and 10
    assert log_perplexity(logps, mask).tolist() == pytest.approx([math.log(math.sqrt(8)), math.log(10)])
    assert log_perplexity(logps, mask).exp().tolist() == pytest.approx([math.sqrt(8), 10.0])


def test_masked_positions_are_ignored_even_when_nan_or_inf():
    logps = torch.tensor([[-1.0, float("nan"), float("-inf")]])
    mask = torch.tensor([[True, False, False]])
    assert log_perplexity(logps, mask).item() == pytest.approx(1.0)


def test_bad_values_rules():
    logps = torch.tensor([[-1.0, float("-inf")], [-1.0, float("nan")], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])
    log_ppl = log_perplexity(logps, mask)
    assert math.isinf(log_ppl[0].item()) and log_ppl[0].item() > 0  # the model ruled a token out
    assert math.isnan(log_ppl[1].item())
    assert math.isnan(log_ppl[2].item()), "an empty response has no perplexity"


def test_certain_tokens_have_perplexity_one():
    logps, mask = pad_logprobs([[0.0, 0.0, 0.0]])
    assert log_perplexity(logps, mask).item() == 0.0


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        log_perplexity(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool))
