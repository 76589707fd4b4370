"""The benchmark registry and its loaders: a benchmark is a small entry, not a code path.

Each entry says where the problems live on the Hugging Face hub (id, config, split, field names) and in a
local folder of JSONL files (the layout of the bundled conversion: `{"id", "problem", "answer", ...}` per
line). Loaders prefer the local folder (`data_dir=` or env `SCOPE_DATA_DIR`) because runs should not
depend on the network, and fall back to the hub. The toy tiers are registered the same way, so every
caller treats "toy-3" and "math500" alike.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workbench.errors import UserError
from workbench.prompts import PromptStyle
from workbench.records import Problem

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SCOPE_DATA_DIR"
REAL_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
TOY_TEST_SIZE = 50


class DataError(UserError):
    """A data file or hub row that does not fit the registry entry; the message names where."""


def _first_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        if not value:
            raise DataError("empty answer list")
        value = value[0]
    return str(value)


def _number_str(value: Any) -> str:
    """Integral floats the sources store (27.0) become '27'; anything else is kept as text."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _olympiad_answer(value: Any) -> str:
    return _first_str(value).strip().strip("$")


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    display: str
    source: Literal["files", "toy"]
    local_file: str | None = None
    hf_id: str | None = None
    hf_config: str | None = None
    hf_split: str | None = None
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = "id"
    hf_answer: Callable[[Any], str] = str
    prompt_style: PromptStyle = "paper"


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "AIME24", "files", "aime24.jsonl", "HuggingFaceH4/aime_2024", None, "train",
                      hf_answer=_number_str),
        BenchmarkSpec("aime25", "AIME25", "files", "aime25.jsonl", "math-ai/aime25", None, "test",
                      hf_answer=_number_str),
        BenchmarkSpec("amc23", "AMC23", "files", "amc23.jsonl", "math-ai/amc23", None, "test",
                      problem_field="question", hf_answer=_number_str),
        BenchmarkSpec("math500", "MATH500", "files", "math500.jsonl", "HuggingFaceH4/MATH-500", None, "test",
                      id_field="unique_id"),
        BenchmarkSpec("minerva", "Minerva", "files", "minerva.jsonl", "math-ai/minervamath", None, "test",
                      problem_field="question", id_field=None),
        BenchmarkSpec("olympiadbench", "OlympiadBench", "files", "olympiadbench.jsonl", "Hothan/OlympiadBench",
                      "OE_TO_maths_en_COMP", "train", problem_field="question", answer_field="final_answer",
                      hf_answer=_olympiad_answer),
        *(BenchmarkSpec(f"toy-{t}", f"Toy-{t}", "toy", prompt_style="raw") for t in range(1, 7)),
    )
}
TOY_BENCHMARKS = tuple(n for n, s in BENCHMARKS.items() if s.source == "toy")


def get_spec(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}") from None


def resolve_suite(names: str | Sequence[str]) -> list[str]:
    """'real' / 'toy' / comma list -> benchmark names, validated."""
    if isinstance(names, str):
        if names == "real":
            return list(REAL_BENCHMARKS)
        if names == "toy":
            return list(TOY_BENCHMARKS)
        names = [n.strip() for n in names.split(",") if n.strip()]
    for n in names:
        get_spec(n)
    return list(names)


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def _parse_jsonl(path: Path, benchmark: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            for key in ("id", "problem", "answer"):
                value = row.get(key)
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
            if row["id"] in seen:
                raise DataError(f"{where}: field 'id' repeats {row['id']!r}")
            seen.add(row["id"])
            meta = row.get("meta") or {}
            if not isinstance(meta, dict):
                raise DataError(f"{where}: field 'meta' must be an object")
            problems.append(Problem(benchmark, row["id"], row["problem"], row["answer"], meta))
    if not problems:
        # an empty file would otherwise drop its benchmark from every table and shift the Average
        raise DataError(f"{path}: the file holds no problems; restore it from the benchmark's source")
    return problems


def _from_hub(spec: BenchmarkSpec) -> list[Problem]:
    from datasets import load_dataset

    log.info("loading %s from the hub: %s (%s, %s)", spec.name, spec.hf_id, spec.hf_config, spec.hf_split)
    rows = load_dataset(spec.hf_id, spec.hf_config, split=spec.hf_split)
    problems = []
    for i, row in enumerate(rows):
        where = f"{spec.hf_id}[{spec.hf_split}] row {i}"
        for key in (spec.problem_field, spec.answer_field):
            if row.get(key) in (None, "", []):
                raise DataError(f"{where}: field {key!r} is missing or empty")
        pid = str(row[spec.id_field]) if spec.id_field else f"{spec.name}_{i}"
        meta = {k: v for k, v in row.items() if k not in (spec.problem_field, spec.answer_field)}
        problems.append(Problem(spec.name, pid, str(row[spec.problem_field]), spec.hf_answer(row[spec.answer_field]), meta))
    return problems


def _toy(spec: BenchmarkSpec, size: int, seed: int) -> list[Problem]:
    from workbench.toy.task import toy_problems

    return [
        Problem(spec.name, row["problem_id"], row["problem"], row["answer"], {"solution": row["solution"]})
        for row in toy_problems(spec.name, size, split="test", seed=seed)
    ]


def load_benchmark(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    toy_size: int = TOY_TEST_SIZE,
    seed: int = 0,
) -> list[Problem]:
    """Problems of one benchmark, in source order; `limit` keeps the first `limit`.

    Real benchmarks come from `data_dir` (or $SCOPE_DATA_DIR) when given, else from the hub. A data dir
    that lacks the benchmark's file is an error, not a silent hub download.
    """
    spec = get_spec(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.source == "toy":
        problems = _toy(spec, toy_size if limit is None else min(limit, toy_size), seed)
    else:
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        if folder is not None:
            path = folder / str(spec.local_file)
            if not path.is_file():
                raise FileNotFoundError(f"{name}: expected {path} (data dir {folder}); see README 'Real benchmarks'")
            problems = _parse_jsonl(path, name)
        else:
            problems = _from_hub(spec)
    return problems[:limit] if limit is not None else problems


def load_suite(names: str | Sequence[str], data_dir: str | os.PathLike | None = None,
               **kwargs: Any) -> dict[str, list[Problem]]:
    return {n: load_benchmark(n, data_dir, **kwargs) for n in resolve_suite(names)}


def spec_table() -> list[Mapping[str, Any]]:
    """The registry as rows, for the README and notebooks."""
    return [
        {"benchmark": s.name, "display": s.display, "hub": s.hf_id, "config": s.hf_config, "split": s.hf_split,
         "local_file": s.local_file, "problem_field": s.problem_field, "answer_field": s.answer_field}
        for s in BENCHMARKS.values()
    ]
