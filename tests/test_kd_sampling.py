"""KD's teacher samples at scale (train/kd.py): made once in seeded units that the processes share out, kept
as they finish, so an interrupted run samples only the missing units and ends with the samples of an
uninterrupted one; the teacher may be served (replicas)."""

from __future__ import annotations

import pytest

from train.config import parse_config
from train.kd import KD_SAMPLES_DIR, _teacher, _unit_seed, sample_teacher_units
from train.methods import toy_recipe
from workbench.models.base import Completion
from workbench.records import Problem

PROBLEMS = [Problem("toy-1", f"p{i}", f"What is {i} + 1?", str(i + 1)) for i in range(7)]


class FakeTeacher:
    """Answers each prompt with a sample that names the call's seed and the prompt's place in the call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[int, list[str]]] = []
        self.fail_on_call = fail_on_call

    def generate(self, prompts, sampling):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        self.calls.append((sampling.seed, list(prompts)))
        return [[Completion(f"seed {sampling.seed} pos {i} sample {k} \\\\boxed{{{i}}}", (5, 6, 1), "stop")
                 for k in range(sampling.n)] for i, _ in enumerate(prompts)]


def config(tmp_path, *extra: str):
    return parse_config(["--config", str(toy_recipe("kd")), "--output_dir", str(tmp_path), "--kd_unit_prompts", "3",
                         "--kd_samples_per_prompt", "2", *extra])


def test_units_are_seeded_kept_and_an_interrupted_run_samples_only_the_rest(tmp_path):
    whole = sample_teacher_units(config(tmp_path / "whole"), PROBLEMS, FakeTeacher)
    assert len(whole) == 14 and list(whole["problem_id"]) == [p.problem_id for p in PROBLEMS for _ in range(2)]
    assert list(whole["sample_idx"]) == [0, 1] * 7

    first = FakeTeacher(fail_on_call=2)  # stopped while sampling the third unit (problems 6..)
    with pytest.raises(KeyboardInterrupt):
        sample_teacher_units(config(tmp_path / "cut"), PROBLEMS, lambda: first)
    assert [seed for seed, _ in first.calls] == [_unit_seed(0, 0), _unit_seed(0, 1)]
    assert len(list((tmp_path / "cut" / KD_SAMPLES_DIR).glob("part-*.parquet"))) == 2
    again = FakeTeacher()
    resumed = sample_teacher_units(config(tmp_path / "cut"), PROBLEMS, lambda: again)
    assert again.calls == [(_unit_seed(0, 2), [PROBLEMS[6].problem])]  # only the missing unit
    assert resumed.drop(columns=["grade_error"]).equals(whole.drop(columns=["grade_error"]))
    assert _unit_seed(0, 0) == 0  # one unit (the toy recipe's 192 prompts): the run's own seed, as before

    def no_teacher():
        raise AssertionError("every sample is on disk: no teacher is to be loaded")

    assert sample_teacher_units(config(tmp_path / "cut"), PROBLEMS, no_teacher).equals(resumed)


def test_samples_made_with_other_settings_are_refused_not_mixed(tmp_path):
    from workbench.stages import ResumeMismatch

    sample_teacher_units(config(tmp_path), PROBLEMS, FakeTeacher)
    with pytest.raises(ResumeMismatch, match="temperature"):
        sample_teacher_units(config(tmp_path, "--temperature", "0.7"), PROBLEMS, FakeTeacher)


def test_a_vllm_teacher_is_refused_in_the_training_launch_before_any_model_loads(tmp_path):
    from train.kd import _training_teacher
    from workbench.errors import UserError

    cfg = config(tmp_path, "--kd_teacher_engine", "vllm")
    with pytest.raises(UserError, match="-m train.kd"):
        _training_teacher(cfg, tokenizer=None)


def test_kd_takes_a_served_teacher_with_replicas(tmp_path):
    recipe = tmp_path / "kd_served.yaml"
    recipe.write_text(toy_recipe("kd").read_text().replace(
        "teacher_model: toy:teacher", "teacher_server_url: [http://127.0.0.1:9, http://127.0.0.1:10]\n"
        "teacher_server_model: toy-teacher\nteacher_tokenizer: toy:teacher"))
    cfg = parse_config(["--config", str(recipe), "--output_dir", str(tmp_path / "run")])
    teacher = _teacher(cfg, "cpu")
    assert type(teacher).__name__ == "ServerBackend"
    assert teacher.base_urls == ["http://127.0.0.1:9", "http://127.0.0.1:10"]


def test_last_checkpoint_missing_is_an_error_except_where_kd_samples_are_kept(tmp_path):
    from train.checkpoints import resolve_checkpoint
    from workbench.errors import UserError

    with pytest.raises(UserError, match="no checkpoint-N folder"):
        resolve_checkpoint(tmp_path, "last")
    assert resolve_checkpoint(tmp_path, "last", missing_ok=True) is None
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert resolve_checkpoint(tmp_path, "last") == str(tmp_path / "checkpoint-2")
    with pytest.raises(UserError, match="is not a checkpoint folder"):
        resolve_checkpoint(tmp_path, str(tmp_path))
