"""Training's uses of the one truncation rule: the correctness reward and the KD teacher's samples."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from train.kd import teacher_samples
from train.reward import CorrectnessReward
from workbench.data import load_benchmark
from workbench.models import Completion

EOS = 0


def _batch():
    problem = load_benchmark("toy-1", toy_size=1)[0]
    right, wrong = f"\\boxed{{{problem.answer}}}", f"\\boxed{{{(int(problem.answer) + 1) % 10}}}"
    completions = [right, right, wrong, [{"role": "assistant", "content": right}], ""]
    ids = [[5, 6, EOS], [5, 6, 7], [5, 6, EOS], [5, EOS], []]  # 1: cut off after a right box; 4: nothing
    return completions, ids, [problem.answer] * 5, ["toy-1"] * 5


@pytest.mark.parametrize(("rule", "rewards", "errors"), [
    ("wrong", [1.0, 0.0, 0.0, 1.0, 0.0], [None, "truncated", None, None, "truncated"]),
    ("grade", [1.0, 1.0, 0.0, 1.0, 0.0], [None, None, None, None, "no_boxed"]),
])
def test_truncated_rollouts_follow_the_configured_rule(rule, rewards, errors):
    completions, ids, answers, benchmarks = _batch()
    reward = CorrectnessReward(1, truncated_rollouts=rule, eos_token_ids={EOS})
    assert reward(["p"] * 5, completions, answers, benchmarks, completion_ids=ids, trainer_state=None) == rewards
    assert [g.error for g in reward.last_grades] == errors
    assert [g.correct for g in reward.last_grades] == [r == 1.0 for r in rewards]
    assert reward.last_truncated == [False, True, False, False, True]
    assert reward.last_graded_correct == [True, True, False, True, False]  # the grader's own verdicts
    assert reward.last_grades[1].extracted == answers[0]  # the box is read under either rule


def test_the_reward_needs_token_ids_and_eos():
    completions, ids, answers, benchmarks = _batch()
    with pytest.raises(RuntimeError, match="eos_token_ids"):
        CorrectnessReward(1)(["p"] * 5, completions, answers, benchmarks, completion_ids=ids)
    with pytest.raises(TypeError, match="completion_ids"):
        CorrectnessReward(1, eos_token_ids={EOS})(["p"] * 5, completions, answers, benchmarks)
    with pytest.raises(ValueError, match="truncated_rollouts"):
        CorrectnessReward(truncated_rollouts="keep")


class ScriptedTeacher:
    """Stands in for the HF teacher: fixed completions for every prompt, recording the calls."""

    calls: list = []

    def __init__(self, path, **_):
        self.tokenizer = SimpleNamespace(get_vocab=lambda: {"a": 0})

    def generate(self, prompts, sampling):
        ScriptedTeacher.calls.append((list(prompts), sampling))
        return [[Completion(f"\\boxed{{{answer}}}", (1, EOS), "stop"),
                 Completion(f"\\boxed{{{answer}}}", (1, 2), "length"),
                 Completion("\\boxed{x}", (1, EOS), "stop")] for answer in ANSWERS[: len(prompts)]]


ANSWERS = ["3", "7"]


def _kd_samples(monkeypatch, tmp_path, prompts, keep_incorrect):
    import workbench.models.hf as hf

    monkeypatch.setattr(hf, "HFBackend", ScriptedTeacher)
    ScriptedTeacher.calls = []
    cfg = SimpleNamespace(
        resolved_teacher=lambda: "teacher", teacher_dtype=None, teacher_tokenizer=None, disable_tqdm=True,
        kd_samples_per_prompt=3, temperature=0.6, top_p=1.0, top_k=None, max_completion_length=8,
        repetition_penalty=1.0, seed=5, grader_workers=1, grader_timeout=5.0, kd_keep_incorrect=keep_incorrect,
        device="cpu", teacher_server_url=None, output_dir=str(tmp_path), kd_unit_prompts=256, kd_teacher_engine="hf",
    )
    tokenizer = SimpleNamespace(get_vocab=lambda: {"a": 0},
                                apply_chat_template=lambda messages, **_: "<user>" + messages[0]["content"])
    dataset = {"prompt": prompts, "answer": ANSWERS, "benchmark": ["toy-1", "toy-1"], "problem_id": ["a", "b"]}
    return teacher_samples(cfg, tokenizer, dataset).to_list()


@pytest.mark.parametrize(("keep_incorrect", "expected"), [
    (True, ["\\boxed{3}", "\\boxed{x}", "\\boxed{7}", "\\boxed{x}"]),
    (False, ["\\boxed{3}", "\\boxed{7}"]),
])
def test_kd_keeps_finished_teacher_samples(monkeypatch, tmp_path, keep_incorrect, expected):
    rows = _kd_samples(monkeypatch, tmp_path, ["Q:1+2?A:", "Q:2+5?A:"], keep_incorrect)
    ((prompts, sampling),) = ScriptedTeacher.calls
    assert prompts == ["Q:1+2?A:", "Q:2+5?A:"] and (sampling.n, sampling.seed, sampling.top_k) == (3, 5, 0)
    # per prompt: the right finished sample, never the truncated one, the wrong one only when kept
    assert [r["completion"] for r in rows] == expected
    assert [r["prompt"] for r in rows] == ["Q:1+2?A:"] * (len(expected) // 2) + ["Q:2+5?A:"] * (len(expected) // 2)


def test_kd_conversations_get_assistant_turns(monkeypatch, tmp_path):
    chats = [[{"role": "user", "content": "Q:1+2?A:"}], [{"role": "user", "content": "Q:2+5?A:"}]]
    rows = _kd_samples(monkeypatch, tmp_path, chats, False)
    assert ScriptedTeacher.calls[0][0] == ["<user>Q:1+2?A:", "<user>Q:2+5?A:"]
    assert rows == [{"prompt": chats[0], "completion": [{"role": "assistant", "content": "\\boxed{3}"}]},
                    {"prompt": chats[1], "completion": [{"role": "assistant", "content": "\\boxed{7}"}]}]
