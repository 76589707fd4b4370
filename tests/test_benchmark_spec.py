"""A benchmark is one registry entry: a seventh one added as a BenchmarkSpec loads, prompts, grades,
caches and appears in the tables with nothing else changed; training data resolves through the same
registry, and a name it does not hold is one clear line."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from eval.table_sets import build_tables
from workbench import data
from workbench.data import AnswerRules, BenchmarkSpec, get_spec, load_benchmark, suite_generation
from workbench.errors import UserError
from workbench.layout import TOY_MAX_NEW_TOKENS
from workbench.grading import Grade, grade_batch
from workbench.models import SamplingConfig
from workbench.grading.cache import grader_version
from workbench.prompts import PAPER_INSTRUCTION
from workbench.records import Problem

TOY_RECIPE = "train/recipes/toy_scope.yaml"
SEVENTH = BenchmarkSpec("physics7", "Physics7", "real", "physics7.jsonl", "example/physics7", None, "test",
                        rules=AnswerRules(units=True), rules_version="1")


@pytest.fixture
def seventh(monkeypatch, tmp_path):
    """The made-up benchmark registered as one entry, with a local JSONL file of two problems."""
    monkeypatch.setitem(data.BENCHMARKS, SEVENTH.name, SEVENTH)
    rows = [{"id": "p0", "problem": "A star has surface temperature 6630 K. What is it in kelvin?", "answer": "6630"},
            {"id": "p1", "problem": "What share of 8 is 5, in percent?", "answer": "62.5", "meta": {"unit": "%"}}]
    (tmp_path / "physics7.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_a_seventh_benchmark_loads_prompts_and_grades_by_its_entry(seventh):
    problems = load_benchmark("physics7", seventh)
    assert problems == [
        Problem("physics7", "p0", "A star has surface temperature 6630 K. What is it in kelvin?", "6630", {}),
        Problem("physics7", "p1", "What share of 8 is 5, in percent?", "62.5", {"unit": "%"}),
    ]
    assert SEVENTH.prompt(problems[1].problem) == f"What share of 8 is 5, in percent?\n{PAPER_INSTRUCTION}"

    # its rules: units are dropped (as for MATH500), percent signs are not (unlike MATH500)
    items = [("so \\boxed{6630 K}", "6630"), ("so \\boxed{62.5\\%}", "62.5")]
    grades = grade_batch([(r, a, b) for b in ("physics7", "math500", "deepmath") for r, a in items], progress=False)
    assert [g.correct for g in grades] == [True, False, True, True, False, False]
    assert grades[0] == Grade(True, "6630 K")
    assert grader_version("physics7").startswith("rules 1; ")  # its cached verdicts carry its own version
    assert suite_generation(["aime24", "physics7"]) == SamplingConfig(n=32, max_new_tokens=32768)


def test_a_seventh_benchmark_takes_its_place_in_the_tables(seventh, tmp_path):
    rows = [dict(benchmark=bench, problem_id=pid, sample_idx=i, correct=i < right, finish_reason="stop",
                 method="m", seed=0)
            for bench, right in (("Physics7", 3), ("MATH500", 1), ("AIME24", 0))
            for pid in ("a", "b") for i in range(4)]
    build_tables(pd.DataFrame(rows), [{"method": "m", "seed": 0, "suite": "real"}], tmp_path / "t", figure=False)
    avg = pd.read_csv(tmp_path / "t" / "real_avg@4.csv", index_col="method")
    assert [c for c in avg.columns if "_" not in c] == ["AIME24", "MATH500", "Physics7", "Average"]
    assert avg.loc["m", ["AIME24", "MATH500", "Physics7", "Average"]].tolist() == [0.0, 25.0, 75.0, pytest.approx(100 / 3)]


def test_benchmarks_sampled_together_must_share_their_sampling_defaults(monkeypatch):
    monkeypatch.setitem(data.BENCHMARKS, "long7", BenchmarkSpec("long7", "Long7", "real",
                                                                generation=SamplingConfig(max_new_tokens=65536)))
    with pytest.raises(UserError, match="benchmarks aime24, long7 have different sampling defaults"):
        suite_generation(["aime24", "long7"])
    assert suite_generation(data.TOY_BENCHMARKS).max_new_tokens == TOY_MAX_NEW_TOKENS == 96
    assert suite_generation(data.REAL_BENCHMARKS) == SamplingConfig(n=32, max_new_tokens=32768, temperature=0.6,
                                                                    top_p=0.95, top_k=20)


def test_grader_benchmark_deepmath_grades_hub_data_by_deepmaths_rules(monkeypatch, tmp_path):
    from transformers import AutoTokenizer

    from train.config import parse_config
    from train.dataset import build_train_dataset
    from workbench.toy import TOKENIZER_DIR

    deepmath = get_spec("deepmath")
    calls = []

    def fake_load_dataset(name, config, split):
        from datasets import Dataset

        calls.append((name, config, split))
        return Dataset.from_list([{"question": "A star's temperature in kelvin?", "final_answer": "6630"}])

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    hub = ["--config", TOY_RECIPE, "--dataset_name", deepmath.hf_id, "--heldout_every", "0",
           "--output_dir", str(tmp_path / "o")]
    cfg = parse_config(hub)
    assert (cfg.grader_benchmark, cfg.question_field, cfg.answer_field) == ("deepmath", "question", "final_answer")
    row = build_train_dataset(cfg, AutoTokenizer.from_pretrained(TOKENIZER_DIR))[0]
    assert calls == [("zwhe99/DeepMath-103K", None, "train")]
    assert (row["benchmark"], row["answer"]) == ("deepmath", "6630")
    assert row["prompt"] == f"A star's temperature in kelvin?\n{PAPER_INSTRUCTION}"  # the paper's prompt style
    # DeepMath's rules compare the box as written, so a unit after the number is not dropped (MATH500's are)
    response = "\\boxed{6630 K}"
    verdicts = grade_batch([(response, row["answer"], row["benchmark"]), (response, row["answer"], "math500")],
                           progress=False)
    assert [g.correct for g in verdicts] == [False, True]
    as_math500 = build_train_dataset(parse_config([*hub, "--grader_benchmark", "math500"]),
                                     AutoTokenizer.from_pretrained(TOKENIZER_DIR))[0]
    assert as_math500["benchmark"] == "math500"


def test_an_unknown_grader_benchmark_is_one_line_naming_the_registered_ones(tmp_path):
    from train.config import ScopeConfig, parse_config

    with pytest.raises(UserError) as caught:
        parse_config(["--config", TOY_RECIPE, "--grader_benchmark", "deepmaths", "--output_dir", str(tmp_path)])
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("grader_benchmark 'deepmaths' (--grader_benchmark) is not one of aime24, aime25, amc23, "
                       "math500, minerva, olympiadbench, toy-1, toy-2, toy-3, toy-4, toy-5, toy-6, deepmath; "
                       "did you mean 'deepmath'?")
    with pytest.raises(UserError, match="grader_benchmark 'gsm8k' is not one of aime24"):
        ScopeConfig(output_dir=str(tmp_path), teacher_model="toy:teacher", grader_benchmark="gsm8k")
