"""Every setting of the perplexity analyses, one dataclass per stage, light to import.

The pipeline (:mod:`analysis.pipeline`) takes these objects and ``python -m analysis.cli`` derives its
options from their fields (:mod:`workbench.options`), so a setting is declared, defaulted, documented
and checked here once. Sampling settings are a :class:`~workbench.models.SamplingConfig` field of
each stage, never restated as scalars; a field's ``metadata`` holds its help text, the option name
where it is not the field's (``option``), and for a sampling field the names of its per-stage
counts (``options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data import BENCHMARKS, load_benchmark, resolve_suite
from workbench.errors import FieldError, UserError, did_you_mean
from workbench.models import BACKENDS, SamplingConfig

if TYPE_CHECKING:
    from workbench.records import Problem

ANALYSIS_SAMPLING = SamplingConfig.untruncated(max_new_tokens=4096)
"""Rollouts, continuations and fresh samples: untruncated (their perplexities are measured) with a
4096-token budget for real models' reasoning; each stage sets its own count ``n``."""

UNITS_HELP = "sequences per generate call and shard (the unit layout fixes the seeds)"
BUCKETS_HELP = "perplexity quantile buckets"
LEVEL_HELP = "confidence level of the intervals"
N_BOOT_HELP = "bootstrap resamples for intervals"


def _at_least(config: object, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < minimum:
            raise FieldError(name, f"must be at least {minimum}, got {value}")


def _level(level: float) -> None:
    if not 0 < level < 1:
        raise FieldError("level", f"must be strictly between 0 and 1, got {level}")


class _SampledStage:
    """What every sampling stage derives from its ``sampling`` and ``unit_sequences`` fields."""

    sampling: SamplingConfig
    unit_sequences: int

    @property
    def seed(self) -> int:
        return self.sampling.seed

    def items_per_unit(self, n: int | None = None) -> int:
        """Prompts per unit when each prompt is sampled ``n`` times (default: the stage's own ``n``)."""
        return max(1, self.unit_sequences // (n or self.sampling.n))


@dataclass(frozen=True)
class RolloutConfig(_SampledStage):
    """The student's graded rollouts that both experiments start from."""

    sampling: SamplingConfig = field(default=replace(ANALYSIS_SAMPLING, n=4), metadata={
        "options": {"n": ("rollouts", "student rollouts per problem")}})
    unit_sequences: int = field(default=128, metadata={"option": "batch_sequences", "help": UNITS_HELP})

    def __post_init__(self) -> None:
        _at_least(self, 1, "unit_sequences")


@dataclass(frozen=True)
class CorrectiveConfig(_SampledStage):
    """The corrective experiment's knobs; defaults are the paper's protocol.

    sampling: the teacher's continuations of each cut (``n`` per prefix); its from-scratch samples
        are the same with ``scratch_samples`` for ``n``. Its seed also seeds the bootstrap.
    unit_sequences: a continuation unit holds unit_sequences // n prefixes, a from-scratch unit
        unit_sequences // scratch_samples problems. Small models decode fastest in large batches;
        smaller units lose less work when a run is killed.
    """

    ratios: tuple[float, ...] = field(default=(0.2, 0.4, 0.6, 0.8), metadata={
        "help": "where the teacher takes over, as fractions of a wrong rollout"})
    sampling: SamplingConfig = field(default=replace(ANALYSIS_SAMPLING, n=4), metadata={
        "options": {"n": ("continuations", "teacher continuations per prefix")}})
    separator: str = field(default="\n", metadata={
        "help": "step separator a cut lands on (newline for real models, ';' in the toy world, whose "
                "responses are one line of ';'-separated steps)"})
    n_buckets: int = field(default=4, metadata={"option": "buckets", "help": BUCKETS_HELP})
    scratch_samples: int = field(default=4, metadata={"help": "teacher from-scratch samples per problem "
                                                             "(its solve rate)"})
    unit_sequences: int = field(default=128, metadata={"option": "batch_sequences", "help": UNITS_HELP})
    level: float = field(default=0.95, metadata={"help": LEVEL_HELP})
    n_boot: int = field(default=2000, metadata={"help": N_BOOT_HELP})

    def __post_init__(self) -> None:
        if not self.ratios or any(not 0.0 < r < 1.0 for r in self.ratios):
            raise FieldError("ratios", f"must be non-empty and lie strictly between 0 and 1, got {list(self.ratios)}")
        if len(set(self.ratios)) != len(self.ratios):
            raise FieldError("ratios", f"repeat: {list(self.ratios)}")
        if not self.separator:
            raise FieldError("separator", "must be a non-empty string")
        _at_least(self, 1, "scratch_samples", "unit_sequences", "n_boot")
        _at_least(self, 2, "n_buckets")  # two buckets at least, to compare them
        _level(self.level)

    @property
    def n_continuations(self) -> int:
        return self.sampling.n


@dataclass(frozen=True)
class BoundaryConfig(_SampledStage):
    """The boundary experiment's knobs.

    sampling: the fresh student samples behind each problem's solve rate (more samples, finer
        rates); its seed also seeds the bootstrap.
    unit_sequences: samples per ``generate`` call and shard (unit_sequences // n problems).
    """

    sampling: SamplingConfig = field(default=replace(ANALYSIS_SAMPLING, n=16), metadata={
        "options": {"n": ("boundary_samples", "fresh student samples per problem")}})
    n_buckets: int = field(default=4, metadata={"option": "buckets", "help": BUCKETS_HELP})
    unit_sequences: int = field(default=128, metadata={"option": "batch_sequences", "help": UNITS_HELP})
    level: float = field(default=0.95, metadata={"help": LEVEL_HELP})
    n_boot: int = field(default=2000, metadata={"help": N_BOOT_HELP})

    def __post_init__(self) -> None:
        _at_least(self, 1, "unit_sequences", "n_boot")
        _at_least(self, 2, "n_buckets")
        _level(self.level)

    @property
    def n_samples(self) -> int:
        return self.sampling.n


@dataclass(frozen=True)
class ProblemSet:
    """Which problems to analyse."""

    benchmark: str = field(metadata={"help": "benchmark name(s), comma-separated, or 'toy' / 'real'; registered: "
                                             + ", ".join(BENCHMARKS)})
    limit: int | None = field(default=None, metadata={"help": "problems per benchmark (default: all)"})
    toy_size: int = field(default=30, metadata={"help": "problems per toy tier"})
    data_dir: Path | None = field(default=None, metadata={
        "help": "folder of benchmark JSONL files (default: the hub)"})

    def __post_init__(self) -> None:
        for name in ("limit", "toy_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise FieldError(name, f"must be at least 1, got {value}")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise FieldError("data_dir", f"{self.data_dir} is not a folder")

    def load(self) -> list[Problem]:
        try:
            names = resolve_suite(self.benchmark)
        except ValueError:
            wrong = next(n.strip() for n in self.benchmark.split(",") if n.strip() and n.strip() not in BENCHMARKS)
            raise UserError(f"unknown benchmark {wrong!r} (known: toy, real, {', '.join(BENCHMARKS)})"
                            f"{did_you_mean(wrong, BENCHMARKS)}") from None
        problems = [p for name in names
                    for p in load_benchmark(name, self.data_dir, limit=self.limit, toy_size=self.toy_size)]
        if not problems:
            raise UserError(f"no problems selected from {self.benchmark!r}; check the benchmark names, limit and "
                            "toy_size")
        return problems


@dataclass(frozen=True)
class ModelConfig:
    """How model names are loaded (backends given as objects are used as they are).

    batch_sequences: sequences the hf backend decodes together; the toy models decode fastest in
        batches of about a thousand, real ones need far smaller batches to fit in memory.
    student_gguf / teacher_gguf: a GGUF file inside the model folder (hf backend only); a teacher
        left unnamed is the student, GGUF file included unless teacher_gguf says otherwise.
    """

    backend: str = field(default="hf", metadata={"help": f"model backend: {', '.join(BACKENDS)}"})
    device: str | None = field(default=None, metadata={
        "help": "torch device for the hf backend (default: cuda if present)"})
    batch_sequences: int = field(default=32, metadata={"help": "sequences the hf backend decodes together"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible server URL (server backend)"})
    student_gguf: str | None = field(default=None, metadata={"help": "GGUF file inside the student (hf backend)"})
    teacher_gguf: str | None = field(default=None, metadata={"help": "GGUF file inside the teacher (hf backend)"})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise FieldError("backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
                                        f"{did_you_mean(self.backend, BACKENDS)}")
        if self.backend != "hf" and (self.student_gguf or self.teacher_gguf):
            raise UserError(f"models: student_gguf / teacher_gguf are for the hf backend; the {self.backend} "
                            "backend takes a model id or path")
        if self.backend == "server" and not self.base_url:
            raise UserError("models: the server backend needs base_url, e.g. http://teacher-node:8000/v1")
        _at_least(self, 1, "batch_sequences")
