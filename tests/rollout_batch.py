"""Eight fixed toy rollouts (two prompts x 4, ragged lengths), and the one-thread setting, shared by the
trainer-loss and training-semantics tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models run fastest on one thread; a second one mostly waits on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def crafted_tokens(tok, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Left-padded prompts and random right-padded completions of lengths 5, 3, 7, 7, 1, 4, 6, 2."""
    prompts = [tok("Q:3+5?A:")["input_ids"], tok("Q:1*2-3?A:")["input_ids"]] * 4
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    prompt_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    lengths = torch.tensor([5, 3, 7, 7, 1, 4, 6, 2])
    completion_ids = torch.randint(3, len(tok), (8, 7), generator=gen)
    completion_mask = (torch.arange(7)[None] < lengths[:, None]).long()
    completion_ids[completion_mask == 0] = pad
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask}
