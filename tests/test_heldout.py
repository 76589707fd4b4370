from types import SimpleNamespace

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from train.heldout import HeldOutAccuracy
from workbench.data import load_benchmark
from workbench.grading import grade_batch
from workbench.models import SamplingConfig
from workbench.models.hf import HFBackend
from workbench.toy import STUDENT_DIR


def test_heldout_accuracy_is_the_policys_sampled_accuracy():
    problems = [p for tier in ("toy-2", "toy-5") for p in load_benchmark(tier, toy_size=4)]
    model = AutoModelForCausalLM.from_pretrained(STUDENT_DIR)
    model.train()
    tok = AutoTokenizer.from_pretrained(STUDENT_DIR)
    callback = HeldOutAccuracy(problems, tok, every=3, n=4, max_new_tokens=64, temperature=0.6, seed=0)
    state = SimpleNamespace(global_step=0, log_history=[])
    callback.on_train_begin(None, state, None, model=model)
    for step in (1, 2, 3):
        state.global_step = step
        callback.on_step_end(None, state, None, model=model)
    assert [row["step"] for row in state.log_history] == [0, 3]
    assert model.training, "the callback must hand the model back in train mode"

    # the same samples drawn independently through a freshly loaded backend
    backend = HFBackend(str(STUDENT_DIR), progress=False)
    groups = backend.generate([p.problem for p in problems],
                              SamplingConfig(n=4, temperature=0.6, top_p=1.0, top_k=0, max_new_tokens=64, seed=0))
    grades = grade_batch([(c.text, p.answer, p.benchmark) for p, g in zip(problems, groups) for c in g], progress=False)
    expected = sum(g.correct for g in grades) / 32
    assert state.log_history[0]["heldout/avg@4"] == pytest.approx(expected)
    assert 0 < expected < 1


def test_heldout_needs_the_toy_dataset():
    from train.config import parse_config

    with pytest.raises(ValueError, match="heldout_every evaluates on toy test problems"):
        parse_config(["--config", "train/recipes/toy_scope.yaml", "--dataset_name", "zwhe99/DeepMath-103K"])


def test_measuring_leaves_the_random_streams_alone():
    import random

    import numpy as np
    import torch

    problems = load_benchmark("toy-3", toy_size=2)
    model = AutoModelForCausalLM.from_pretrained(STUDENT_DIR)
    callback = HeldOutAccuracy(problems, AutoTokenizer.from_pretrained(STUDENT_DIR), every=1, n=2,
                               max_new_tokens=64, temperature=0.6, seed=0)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    callback.on_train_begin(None, SimpleNamespace(global_step=0, log_history=[]), None, model=model)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
