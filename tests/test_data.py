import json

import pytest

from workbench.data import BENCHMARKS, TRAIN_SETS, DataError, get_spec, load_benchmark, resolve_suite
from workbench.prompts import PAPER_INSTRUCTION, render_prompt

SIZES = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiadbench": 675}


def load_real(data_dir):
    return {name: load_benchmark(name, data_dir) for name in resolve_suite("real")}


def test_all_six_real_benchmarks_load_from_a_folder(data_dir):
    suite = load_real(data_dir)
    assert {k: len(v) for k, v in suite.items()} == SIZES
    assert sum(SIZES.values()) == 1547
    aime = {p.problem_id: p for p in suite["aime24"]}
    assert aime["2024_AIME_I_1"].answer == "204"
    olymp = suite["olympiadbench"][0]
    assert olymp.benchmark == "olympiadbench" and olymp.problem_id.startswith("olympiadbench_")


def test_data_dir_from_environment(fixture_data_dir, monkeypatch):
    monkeypatch.setenv("SCOPE_DATA_DIR", str(fixture_data_dir))
    problems = load_benchmark("amc23", limit=1)
    assert len(problems) == 1 and problems[0].problem_id == "amc23_0" and problems[0].answer == "1"


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="aime24.jsonl"):
        load_benchmark("aime24", tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('{"id": "b", "problem": "p"}', "line 2: field 'answer'"),
        ('{"id": "b", "problem": "", "answer": "1"}', "line 2: field 'problem'"),
        ('{"id": "a", "problem": "p", "answer": "1"}', "line 2: field 'id' repeats"),
        ('[1, 2]', "line 2: expected a JSON object"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, line, message):
    good = json.dumps({"id": "a", "problem": "What is 1+1?", "answer": "2"})
    (tmp_path / "amc23.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError, match=f"amc23.jsonl {message}"):
        load_benchmark("amc23", tmp_path)


def test_unknown_benchmark_lists_the_registry():
    with pytest.raises(ValueError, match="registered: aime24"):
        load_benchmark("gsm8k")
    with pytest.raises(ValueError, match="unknown benchmark"):
        resolve_suite("aime24,nope")


def test_hub_rows_map_through_the_registry(monkeypatch):
    """The hub loader renames fields and normalises answers per entry, without the network."""
    rows = {
        "math-ai/amc23": [{"id": 0, "question": "Q0", "answer": 27.0, "url": "u"}],
        "Hothan/OlympiadBench": [{"id": 1606, "question": "Q1", "final_answer": ["$69$,$84$"]}],
        "math-ai/minervamath": [{"question": "Q2", "answer": "3 \\mathrm{m}"}],
    }
    calls = []

    def fake_load_dataset(hf_id, config, split):
        calls.append((hf_id, config, split))
        return rows[hf_id]

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    monkeypatch.delenv("SCOPE_DATA_DIR", raising=False)
    amc = load_benchmark("amc23")[0]
    assert (amc.problem_id, amc.problem, amc.answer) == ("0", "Q0", "27")
    olymp = load_benchmark("olympiadbench")[0]
    assert (olymp.problem_id, olymp.answer) == ("1606", "69$,$84")
    minerva = load_benchmark("minerva")[0]
    assert (minerva.problem_id, minerva.answer) == ("minerva_0", "3 \\mathrm{m}")
    assert calls[1] == ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")


def test_registry_has_the_six_the_toy_tiers_and_the_training_set():
    assert resolve_suite("real") == ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"]
    assert resolve_suite("toy") == [f"toy-{t}" for t in range(1, 7)]
    assert all(BENCHMARKS[n].prompt_style == "raw" for n in resolve_suite("toy"))
    assert TRAIN_SETS == ("deepmath",)
    deepmath = get_spec("deepmath")
    assert (deepmath.hf_id, deepmath.hf_split, deepmath.problem_field, deepmath.answer_field) == (
        "zwhe99/DeepMath-103K", "train", "question", "final_answer")
    assert [get_spec(n).paper_key for n in resolve_suite("real")] == [
        "AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "OlympiadBench"]


def test_toy_tiers_load_either_split():
    test, train = (load_benchmark("toy-2", toy_size=3, seed=1, toy_split=split) for split in ("test", "train"))
    assert [p.problem_id for p in test] == [f"toy-2/test/seed1/{i:04d}" for i in range(3)]
    assert [p.problem_id for p in train] == [f"toy-2/train/seed1/{i:04d}" for i in range(3)]
    assert not {p.problem for p in test} & {p.problem for p in train}
    assert all(p.benchmark == "toy-2" and p.answer == p.meta["solution"][-2] for p in train)


def test_paper_prompt_plain_and_templated(tiny_lm):
    from transformers import AutoTokenizer

    assert render_prompt("What is 1+1?") == f"What is 1+1?\n{PAPER_INSTRUCTION}"
    assert render_prompt("Q:1+2?A:", style="raw") == "Q:1+2?A:"
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert render_prompt("Hi", tok) == f"<user>Hi\n{PAPER_INSTRUCTION}<assistant>"


def test_a_folder_in_the_benchmark_format_loads_as_the_real_suite(fixture_data_dir):
    suite = load_real(fixture_data_dir)
    assert sorted(suite) == sorted(SIZES) and all(len(v) == 2 for v in suite.values())
    first = suite["minerva"][0]
    assert (first.benchmark, first.problem_id, first.problem, first.answer) == (
        "minerva", "minerva_0", "What is 0 + 1?", "1")


def test_a_malformed_file_is_one_line_for_any_command(tmp_path, capsys):
    from workbench.errors import main_guard

    (tmp_path / "amc23.jsonl").write_text('{"id": "a", "problem": "p"}\n')
    assert main_guard(lambda argv: len(load_benchmark("amc23", tmp_path))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "amc23.jsonl" in err and "'answer'" in err and "\n" not in err
