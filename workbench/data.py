"""The benchmark registry: everything the workbench knows about a benchmark, in one entry.

Adding a benchmark is one BenchmarkSpec in BENCHMARKS; loaders, the grader, prompts, sampling defaults and tables
read it from here. It imports nothing heavy (grading workers and command lines import it); more: docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workbench.errors import UserError, did_you_mean
from workbench.layout import DATA_DIR_ENV, TOY_MAX_NEW_TOKENS, TOY_TIERS
from workbench.models.base import SamplingConfig
from workbench.prompts import PromptStyle, render_prompt

if TYPE_CHECKING:
    from workbench.records import Problem

log = logging.getLogger(__name__)

TOY_TEST_SIZE = 50
Suite = Literal["real", "toy", "train"]


class DataError(UserError):
    """A data file or hub row that does not fit the registry entry; the message names where."""


MAX_PROBLEM_CHARS = 20_000
"""Longest problem text accepted at load. The longest of the six real benchmarks has 4,415 characters
(olympiadbench), about 1,500 tokens; 20,000 characters stay well inside an 8k-token context with room
for the answer, while a runaway field (a whole book pasted in one line) is refused before a model
loads instead of trying to allocate gigabytes for its attention."""


def check_text(value: str, where: str, field: str, max_chars: int | None = None) -> None:
    """Refuse text a model cannot be given: invalid Unicode (a lone surrogate, which JSON's
    ``\\ud800`` escapes can carry and no tokenizer encodes) or more than ``max_chars`` characters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{where}: field {field!r} holds invalid Unicode ({exc.reason}: "
                        f"U+{ord(value[exc.start]):04X} at character {exc.start}); fix or remove it") from None
    if max_chars is not None and len(value) > max_chars:
        raise DataError(f"{where}: field {field!r} has {len(value):,} characters, over the {max_chars:,} "
                        "a problem may have (workbench.data.MAX_PROBLEM_CHARS); shorten or remove it")


class UnknownBenchmark(UserError):
    """A benchmark name that is not registered; the message lists the registered ones."""


@dataclass(frozen=True)
class AnswerRules:
    """How the grader reads a response's final answer against a gold of this benchmark.

    Each flag switches on one normalisation that both the gold and every boxed answer go through
    before math-verify compares them (docs/grading.md gives the
    details); with none set, the boxed text is compared as written. Flags exist because benchmarks
    write their golds differently (OlympiadBench's ``$,$``, Minerva's ``4.5e33``), and a rewriting
    one benchmark needs can make another's wrong answers match.
    """

    integers_only: bool = False
    """The gold is an integer and every box of the final run must be an integer literal equal to
    it; decided without math-verify (the toy tiers)."""
    copied_text: bool = False
    """Drop artefacts of golds copied from running text: ``$,$`` separators, stray ``$``, a
    trailing period, ``x_{\\text{red}}`` subscripts."""
    choice_labels: bool = False
    """Drop an answer-choice label before a value (``\\textbf{(C)}\\ 33``), kept when the gold is
    itself a choice."""
    currency_percent: bool = False
    """Drop currency and percent signs; a percentage is also read as the number over 100."""
    units: bool = False
    """Drop trailing ``\\text{}``-style units, and bare unit words after a number when the gold is
    a plain number (``6630 K``)."""
    digit_groups: bool = False
    """Remove thousands grouping (``1 000``, ``10\\,000``, ``1{,}000``, ``58,500``)."""
    scientific_notation: bool = False
    """Rewrite ``4.5e33`` as ``4.5 \\times 10^{33}`` and ``-1./3`` as ``-1/3``."""


PLAIN_RULES = AnswerRules()
MATH_RULES = AnswerRules(copied_text=True, choice_labels=True, currency_percent=True, units=True, digit_groups=True)
MINERVA_RULES = replace(MATH_RULES, scientific_notation=True)
TOY_RULES = AnswerRules(integers_only=True)


PAPER_PROTOCOL = SamplingConfig()
"""The paper's evaluation protocol (the real benchmarks): SamplingConfig's own defaults."""
TOY_PROTOCOL = SamplingConfig(max_new_tokens=TOY_MAX_NEW_TOKENS)
"""The toy tiers': the paper's protocol, with a token limit that fits their longest answer."""


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
    """One benchmark (or training set): where its problems live, how they are asked, sampled and
    graded, and how tables show it."""

    name: str
    display: str
    """The name tables and figures show."""
    suite: Suite
    """``real`` (the paper's evaluation benchmarks), ``toy`` (generated tiers) or ``train``."""
    local_file: str | None = None
    """File name inside a data folder of JSONL files (``{"id", "problem", "answer", "meta"}`` a line);
    None: the hub only."""
    hf_id: str | None = None
    hf_config: str | None = None
    hf_split: str | None = None
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = "id"
    """Hub field holding a problem id; None numbers the rows ``<name>_<i>``."""
    hf_answer: Callable[[Any], str] = str
    """Turns a hub answer value into the gold string (e.g. ``27.0`` -> ``27``)."""
    prompt_style: PromptStyle = "paper"
    generation: SamplingConfig = PAPER_PROTOCOL
    """How the benchmark is sampled unless a command says otherwise (its registered protocol)."""
    rules: AnswerRules = MATH_RULES
    rules_version: str = "2"
    """Version of this benchmark's grading (the shared answer reading and its rules). Bump it when a
    change can alter this benchmark's verdicts: cached verdicts of other versions are then ignored,
    for this benchmark only."""
    paper_key: str | None = None
    """The benchmark's name in the paper's tables (``results/reference``); None: not reported there."""

    def prompt(self, question: str, tokenizer: Any | None = None) -> str:
        """The exact text fed to a model for one of this benchmark's questions."""
        return render_prompt(question, tokenizer, self.prompt_style)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", "AIME24", "real", "aime24.jsonl", "HuggingFaceH4/aime_2024", None, "train",
                      hf_answer=_number_str, paper_key="AIME24"),
        BenchmarkSpec("aime25", "AIME25", "real", "aime25.jsonl", "math-ai/aime25", None, "test",
                      hf_answer=_number_str, paper_key="AIME25"),
        BenchmarkSpec("amc23", "AMC23", "real", "amc23.jsonl", "math-ai/amc23", None, "test",
                      problem_field="question", hf_answer=_number_str, paper_key="AMC23"),
        BenchmarkSpec("math500", "MATH500", "real", "math500.jsonl", "HuggingFaceH4/MATH-500", None, "test",
                      id_field="unique_id", paper_key="MATH500"),
        BenchmarkSpec("minerva", "Minerva", "real", "minerva.jsonl", "math-ai/minervamath", None, "test",
                      problem_field="question", id_field=None, rules=MINERVA_RULES, paper_key="Minerva"),
        BenchmarkSpec("olympiadbench", "OlympiadBench", "real", "olympiadbench.jsonl", "Hothan/OlympiadBench",
                      "OE_TO_maths_en_COMP", "train", problem_field="question", answer_field="final_answer",
                      hf_answer=_olympiad_answer, paper_key="OlympiadBench"),
        *(BenchmarkSpec(tier, tier.capitalize(), "toy", prompt_style="raw", generation=TOY_PROTOCOL,
                        rules=TOY_RULES) for tier in TOY_TIERS),
        # The paper's training data: boxed answers and golds go to math-verify as written.
        BenchmarkSpec("deepmath", "DeepMath-103K", "train", None, "zwhe99/DeepMath-103K", None, "train",
                      problem_field="question", answer_field="final_answer", id_field=None, rules=PLAIN_RULES),
    )
}
REAL_BENCHMARKS = tuple(n for n, s in BENCHMARKS.items() if s.suite == "real")
TOY_BENCHMARKS = tuple(n for n, s in BENCHMARKS.items() if s.suite == "toy")
TRAIN_SETS = tuple(n for n, s in BENCHMARKS.items() if s.suite == "train")
SUITES: dict[str, tuple[str, ...]] = {"real": REAL_BENCHMARKS, "toy": TOY_BENCHMARKS}
"""The names a command line may give for a whole suite of evaluation benchmarks."""


def get_spec(name: str) -> BenchmarkSpec:
    """The registered entry of ``name``; an unknown name is one line listing the registered ones."""
    try:
        return BENCHMARKS[name]
    except (KeyError, TypeError):
        raise UnknownBenchmark(f"unknown benchmark {name!r}; registered: {', '.join(BENCHMARKS)}"
                               f"{did_you_mean(str(name), BENCHMARKS)}") from None


def resolve_suite(names: str | Sequence[str]) -> list[str]:
    """'real' / 'toy' / comma list -> benchmark names, validated."""
    if isinstance(names, str):
        if names in SUITES:
            return list(SUITES[names])
        names = [n.strip() for n in names.split(",") if n.strip()]
    for n in names:
        get_spec(n)
    return list(names)


def suite_generation(names: Iterable[str]) -> SamplingConfig:
    """The sampling protocol several benchmarks share: one evaluation samples them with one config."""
    found = {get_spec(n).generation: n for n in names}
    if len(found) > 1:
        raise UserError(f"benchmarks {', '.join(found.values())} have different sampling defaults "
                        "(their registry entries' generation); evaluate them separately")
    if not found:
        raise UserError("no benchmarks given")
    return next(iter(found))


def display_order(displays: Iterable[str]) -> list[str]:
    """Display names in registry order (the order of ``BENCHMARKS``), so every table lists the
    benchmarks the same way however its samples were gathered; unregistered names raise."""
    order = {spec.display: i for i, spec in enumerate(BENCHMARKS.values())}
    wanted = set(displays)
    unknown = sorted(wanted - set(order))
    if unknown:
        raise UnknownBenchmark(f"no registered benchmark is displayed as {', '.join(map(repr, unknown))}")
    return sorted(wanted, key=order.__getitem__)


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value) if value else None


def _parse_jsonl(path: Path, benchmark: str) -> list[Problem]:
    from workbench.records import Problem

    problems: list[Problem] = []
    seen: set[str] = set()
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            where = f"{path} line {lineno}"
            if lineno == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise DataError(f"{path}: the file is UTF-16; save it as UTF-8")
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the "
                                "line); save the file as UTF-8") from None
            if not line.strip():
                continue
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
                check_text(value, f"{where} (id {row['id']!r})" if key != "id" else where, key,
                           MAX_PROBLEM_CHARS if key == "problem" else None)
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

    from workbench.records import Problem

    log.info("loading %s from the hub: %s (%s, %s)", spec.name, spec.hf_id, spec.hf_config, spec.hf_split)
    rows = load_dataset(spec.hf_id, spec.hf_config, split=spec.hf_split)
    problems = []
    for i, row in enumerate(rows):
        where = f"{spec.hf_id}[{spec.hf_split}] row {i}"
        for key in (spec.problem_field, spec.answer_field):
            if row.get(key) in (None, "", []):
                raise DataError(f"{where}: field {key!r} is missing or empty")
        pid = str(row[spec.id_field]) if spec.id_field else f"{spec.name}_{i}"
        check_text(str(row[spec.problem_field]), f"{where} (id {pid!r})", spec.problem_field, MAX_PROBLEM_CHARS)
        meta = {k: v for k, v in row.items() if k not in (spec.problem_field, spec.answer_field)}
        problems.append(Problem(spec.name, pid, str(row[spec.problem_field]), spec.hf_answer(row[spec.answer_field]), meta))
    return problems


def _toy(spec: BenchmarkSpec, size: int, seed: int, split: str) -> list[Problem]:
    from workbench.records import Problem
    from workbench.toy.task import toy_problems

    return [
        Problem(spec.name, row["problem_id"], row["problem"], row["answer"], {"solution": row["solution"]})
        for row in toy_problems(spec.name, size, split=split, seed=seed)
    ]


def load_benchmark(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    toy_size: int = TOY_TEST_SIZE,
    seed: int = 0,
    toy_split: Literal["test", "train"] = "test",
) -> list[Problem]:
    """Problems of one benchmark, in source order; `limit` keeps the first `limit`.

    Benchmarks with a local file come from `data_dir` (or $SCOPE_DATA_DIR) when given, else from the
    hub. A data dir that lacks the benchmark's file is an error, not a silent hub download. Toy tiers
    are generated: `toy_size` problems of `toy_split` drawn with `seed`.
    """
    spec = get_spec(name)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if spec.suite == "toy":
        problems = _toy(spec, toy_size if limit is None else min(limit, toy_size), seed, toy_split)
    else:
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        if folder is not None and spec.local_file is not None:
            path = folder / spec.local_file
            if not path.is_file():
                raise FileNotFoundError(f"{name}: expected {path} (data dir {folder}); see README 'Real benchmarks'")
            problems = _parse_jsonl(path, name)
        else:
            problems = _from_hub(spec)
    return problems[:limit] if limit is not None else problems
