"""The toy world: task, tokenizer and the committed checkpoints every demo and test builds on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import random

import pytest
import torch
from repo_scripts import load_script
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.grading import grade, grade_batch
from workbench.layout import TOY_ASSETS, TOY_MAX_NEW_TOKENS
from workbench.toy import STUDENT_DIR, TEACHER_DIR, TOKENIZER_DIR
from workbench.toy.task import (
    CORRECTION_MARKER,
    STYLES,
    TIERS,
    corrected_solution,
    reference_solution,
    sample_prompts,
    solution_steps,
    solve,
    split_of,
    styled_solution,
    toy_problems,
)
from workbench.toy.tokenizer import CHARACTERS, build_tokenizer

build_toy = load_script("scripts/build_toy.py")

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# Sizes large enough to exercise every tier; toy-1 has only 50 distinct test prompts.
_N_TEST = {tier: (50 if tier == "toy-1" else 200) for tier in TIERS}


def _left_to_right(chain: str) -> int:
    value = int(chain[0])
    for op, digit in zip(chain[1::2], chain[2::2]):
        value = _OPS[op](value, int(digit)) % 10
    return value


def test_problems_are_deterministic_and_prefix_stable():
    first = toy_problems("toy-4", 40, seed=3)
    assert first == toy_problems("toy-4", 40, seed=3)
    assert toy_problems("toy-4", 10, seed=3) == first[:10]
    assert [p["problem"] for p in toy_problems("toy-4", 40, seed=4)] != [p["problem"] for p in first]
    assert toy_problems("toy-3", 8)[7]["problem_id"] == "toy-3/test/0007"
    assert toy_problems("toy-3", 2, split="train", seed=5)[1]["problem_id"] == "toy-3/train/seed5/0001"
    assert toy_problems("toy-2", 3)[0] == {
        "problem_id": "toy-2/test/0000",
        "problem": "Q:7+0-6?A:",
        "answer": "1",
        "solution": "7+0=7;7-6=1;\\boxed{1}",
    }


@pytest.mark.parametrize("tier", TIERS)
def test_splits_are_disjoint_and_problems_distinct(tier):
    test = {p["problem"] for p in toy_problems(tier, _N_TEST[tier])}
    train = {p["problem"] for p in toy_problems(tier, 4 * _N_TEST[tier], split="train")}
    assert len(test) == _N_TEST[tier] and len(train) == 4 * _N_TEST[tier]
    assert not test & train
    assert all(split_of(p) == "test" for p in test)
    stream = sample_prompts(tier, 2000, "train", random.Random(0))
    assert not test & set(stream)


def test_small_tier_runs_out_with_a_clear_error():
    with pytest.raises(ValueError, match="only 50 distinct test problems"):
        toy_problems("toy-1", 51)
    with pytest.raises(ValueError, match="unknown toy tier"):
        toy_problems("toy-7", 1)


@pytest.mark.parametrize("tier", TIERS)
def test_solutions_are_correct_chains(tier):
    n_ops = int(tier[-1])
    for p in toy_problems(tier, 30) + toy_problems(tier, 30, split="train"):
        chain = p["problem"][2:-3]
        assert p["problem"] == f"Q:{chain}?A:" and len(chain) == 2 * n_ops + 1
        assert p["answer"] == solve(p["problem"]) == solve(chain) == str(_left_to_right(chain))
        body, boxed = p["solution"].split("\\boxed", 1)
        steps = body.split(";")
        assert steps[-1] == "" and len(steps) == n_ops + 1
        value = int(chain[0])
        for step, want_op, want_b in zip(steps, chain[1::2], chain[2::2]):
            a, op, b, eq, c = step
            assert (int(a), op, int(b), eq) == (value, want_op, int(want_b), "=")
            assert int(c) == _OPS[op](int(a), int(b)) % 10
            value = int(c)
        assert boxed == f"{{{p['answer']}}}" == f"{{{value}}}"
        assert grade(p["solution"], p["answer"], tier).correct


def _step_values(problem: str, body: str, complete: bool = True) -> list[int]:
    """Check every written step of a response body against the prompt; return the values it carries.

    A step may be ``a op b=c``, ``c=a op b``, either with the operands swapped when ``op`` commutes,
    or the bare result ``c``; its left operand must be the value carried so far. A complete body
    has one step per operation; otherwise it is a start of one.
    """
    chain = problem[2:-3]
    steps = body.split(";")
    assert steps[-1] == ""
    value, values = int(chain[0]), []
    assert len(steps) - 1 == len(chain) // 2 if complete else len(steps) - 1 <= len(chain) // 2
    for step, op, b in zip(steps[:-1], chain[1::2], chain[2::2]):
        want = _OPS[op](value, int(b)) % 10
        if len(step) == 1:
            assert int(step) == want
        else:
            left, right = step.split("=")
            expression, result = (left, right) if len(left) == 3 else (right, left)
            x, written_op, y = expression
            assert written_op == op and int(result) == want
            assert (int(x), int(y)) == (value, int(b)) or (op in "+*" and (int(y), int(x)) == (value, int(b)))
        value = want
        values.append(value)
    return values


@pytest.mark.parametrize("tier", TIERS)
def test_every_style_writes_a_right_solution(tier):
    rng = random.Random(0)
    for p in toy_problems(tier, 20, split="train"):
        for style in STYLES:
            text = styled_solution(p["problem"], style, rng)
            body, boxed = text.split("\\boxed", 1)
            assert _step_values(p["problem"], body)[-1] == int(p["answer"])
            assert boxed == f"{{{p['answer']}}}" and grade(text, p["answer"], tier).correct
        per_step = rng.choices(STYLES, k=int(tier[-1]))
        text = styled_solution(p["problem"], per_step, rng)
        assert _step_values(p["problem"], text.split("\\boxed")[0])[-1] == int(p["answer"])
    assert styled_solution("Q:3+5*2?A:", "full", rng) == reference_solution("Q:3+5*2?A:")
    assert styled_solution("Q:3+5*2?A:", "terse", rng) == "8;6;\\boxed{6}"
    assert styled_solution("Q:3+5*2?A:", ["terse", "full"], rng) == "8;8*2=6;\\boxed{6}"


def test_free_style_writes_every_valid_form():
    rng = random.Random(1)
    seen = {styled_solution("Q:3+5-1?A:", "free", rng).split(";")[0] for _ in range(200)}
    assert seen == {"3+5=8", "5+3=8", "8=3+5", "8=5+3"}
    seen = {styled_solution("Q:3+5-1?A:", "free", rng).split(";")[1] for _ in range(200)}
    assert seen == {"8-1=7", "7=8-1"}


def _slip(problem: str, prefix: str) -> tuple[int, list[str]]:
    """Index of the first step whose result is wrong, after checking the steps carry on from it."""
    chain = problem[2:-3]
    right = [c for *_, c in solution_steps(problem)]
    steps = prefix.split(";")[:-1]
    written = [int(s.split("=")[1] if len(s.split("=")[0]) == 3 else s.split("=")[0]) if "=" in s else int(s)
               for s in steps]
    first = next(i for i, (w, r) in enumerate(zip(written, right)) if w != r)
    for i in range(first + 1, len(steps)):  # later steps apply the prompt's operation to the wrong value
        assert written[i] == _OPS[chain[2 * i + 1]](written[i - 1], int(chain[2 * i + 2])) % 10
    return first, steps


def test_corrected_solutions_slip_once_then_start_again():
    rng = random.Random(2)
    firsts, lengths = set(), set()
    for p in toy_problems("toy-5", 40, split="train"):
        for style in STYLES:
            prefix, completion = corrected_solution(p["problem"], style, rng)
            assert prefix.endswith(";") and CORRECTION_MARKER not in prefix
            assert completion == CORRECTION_MARKER + reference_solution(p["problem"])
            first, steps = _slip(p["problem"], prefix)
            firsts.add(first)
            lengths.add(len(steps) - first)
            if style != "terse":
                correct_before = _step_values(p["problem"], "".join(f"{s};" for s in steps[:first]), complete=False)
                assert len(correct_before) == first
    assert firsts == set(range(5))  # a slip can come at any step
    assert {1, 2, 3} <= lengths  # and is noticed at once or only after further steps


def test_worked_example():
    assert reference_solution("Q:3+5*2?A:") == "3+5=8;8*2=6;\\boxed{6}"
    assert solve("Q:3+5*2?A:") == "6"
    assert solve("0-7") == "3"


def test_tokenizer_round_trips_every_task_string(tmp_path):
    tok = build_tokenizer()
    assert len(tok) == 3 + len(CHARACTERS) == 31
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token) == (0, 1, 2, None)
    rng = random.Random(0)
    texts = [p["problem"] + styled_solution(p["problem"], style, rng) for tier in TIERS for p in toy_problems(tier, 20)
             for style in STYLES]
    texts += ["".join(corrected_solution(p["problem"], "full", rng)) for p in toy_problems("toy-6", 20)]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert len(ids) == len(text) and tok.unk_token_id not in ids
        assert tok.decode(ids) == text
        assert tok.decode(ids + [tok.eos_token_id]) == text + tok.eos_token
    prompt, completion = "Q:3+5*2?A:", "3+5=8;8*2=6;\\boxed{6}"
    assert tok(prompt)["input_ids"] + tok(completion)["input_ids"] == tok(prompt + completion)["input_ids"]
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.get_vocab() == tok.get_vocab()
    assert [reloaded(t)["input_ids"] for t in texts] == [tok(t)["input_ids"] for t in texts]
    assert reloaded.chat_template is None


def test_training_rows_come_from_the_train_split():
    rows = build_toy.training_rows(dataclasses.replace(build_toy.STUDENT_TRAIN, max_steps=13, batch_size=10))
    assert len(rows) == 130  # tier weights 1, 1, 1, 2, 3, 5: 10 rows per unit of weight
    for row in rows:
        assert split_of(row["prompt"]) == "train"
        body, boxed = row["completion"].split("\\boxed")
        assert boxed == f"{{{solve(row['prompt'])}}}"
        _step_values(row["prompt"], body)


def test_student_and_teacher_write_in_different_habits():
    """The student writes whole responses in each style; the teacher mostly the full style, with
    isolated other steps, and learns to start again after a flawed start."""
    student = build_toy.training_rows(dataclasses.replace(build_toy.STUDENT_TRAIN, max_steps=10, batch_size=64))
    teacher = build_toy.training_rows(dataclasses.replace(build_toy.TEACHER_TRAIN, max_steps=10, batch_size=64))
    terse = [r for r in student if "=" not in r["completion"]]
    full = [r for r in student if r["completion"] == reference_solution(r["prompt"])]
    assert 0.2 < len(terse) / len(student) < 0.45 and 0.3 < len(full) / len(student) < 0.55
    corrections = [r for r in teacher if r["completion"].startswith(CORRECTION_MARKER)]
    assert 0.15 < len(corrections) / len(teacher) < 0.35
    for row in corrections:
        prompt, prefix = row["prompt"].split("?A:")
        assert split_of(prompt + "?A:") == "train" and prefix.endswith(";")
        assert row["completion"] == CORRECTION_MARKER + reference_solution(prompt + "?A:")
    plain = [r for r in teacher if not r["completion"].startswith(CORRECTION_MARKER)]
    steps = [s for r in plain for s in r["completion"].split("\\boxed")[0].split(";")[:-1]]
    canonical = sum(len(s) == 5 and s[3] == "=" for s in steps) / len(steps)
    assert 0.9 < canonical < 1.0
    assert not any(CORRECTION_MARKER in r["completion"] for r in student)


@pytest.fixture(scope="module")
def checkpoints():
    tok = AutoTokenizer.from_pretrained(STUDENT_DIR)
    teacher = AutoModelForCausalLM.from_pretrained(TEACHER_DIR).eval()
    student = AutoModelForCausalLM.from_pretrained(STUDENT_DIR).eval()
    return tok, teacher, student


def test_checkpoints_share_one_vocabulary(checkpoints):
    tok, teacher, student = checkpoints
    reference = build_tokenizer()
    for folder in (TEACHER_DIR, STUDENT_DIR, TOKENIZER_DIR):
        assert AutoTokenizer.from_pretrained(folder).get_vocab() == reference.get_vocab()
    for model in (teacher, student):
        assert model.config.vocab_size == len(tok) == 31
        assert model.get_input_embeddings().weight.shape[0] == 31
        assert model.generation_config.eos_token_id == tok.eos_token_id
        assert model.generation_config.pad_token_id == tok.pad_token_id


def test_checkpoints_match_build_info(checkpoints):
    _, teacher, student = checkpoints
    info = json.loads((TOY_ASSETS / "build_info.json").read_text())
    for name, model in (("teacher", teacher), ("student", student)):
        record = info["models"][name]
        assert sum(p.numel() for p in model.parameters()) == record["parameters"]
        assert model.config.num_hidden_layers == record["model"]["num_layers"]
        assert model.config.hidden_size == record["model"]["hidden_size"]
        weights = TOY_ASSETS / name / "model.safetensors"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]["model.safetensors"]
    assert info["models"]["student"]["parameters"] < info["models"]["teacher"]["parameters"] / 4


@torch.no_grad()
def _greedy_accuracy(model, tok, problems, tier: str) -> float:
    enc = tok([p["problem"] for p in problems], return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=TOY_MAX_NEW_TOKENS)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    grades = grade_batch([(t, p["answer"], tier) for t, p in zip(texts, problems)], progress=False)
    return sum(g.correct for g in grades) / len(problems)


def test_teacher_beats_student_on_a_hard_tier(checkpoints):
    tok, teacher, student = checkpoints
    problems = toy_problems("toy-3", 40)  # the student's weakest tier (greedy 40% where the teacher has 100%)
    teacher_acc, student_acc = _greedy_accuracy(teacher, tok, problems, "toy-3"), _greedy_accuracy(student, tok, problems, "toy-3")
    assert teacher_acc >= 0.8
    assert teacher_acc > student_acc + 0.2
