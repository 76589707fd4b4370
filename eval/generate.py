"""N graded samples per problem through any backend, written in resumable, exactly reproducible units.

Evaluation at the paper's protocol (32 samples a problem, up to 32k tokens each) runs for hours, so it
must survive being killed. The problems are cut, in their given order, into fixed units; each unit is
sampled by one ``generate`` call whose seed is derived from the base seed and the unit's problem ids,
graded, and appended as one atomic shard. A rerun with the same arguments skips the units already on
disk and samples the rest with the same seeds, so its result equals an uninterrupted run's sample for
sample. Anything that would change the samples (model and its weights, sampling knobs, unit layout,
problems, prompts) is recorded in the folder's manifest, and a rerun that disagrees is refused instead
of mixing runs. Batch sizes and hardware are not recorded: on other hardware a resumed run continues
with samples that are equally valid but not bit-identical to what that machine would have drawn.

Each unit is sampled and graded by :func:`workbench.sampling.sample_and_grade` (so a sample cut off
at ``max_new_tokens`` counts as wrong) and written by the stage engine of :mod:`workbench.stages`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow.parquet as pq

from workbench.data import MAX_PROBLEM_CHARS, check_text, get_spec
from workbench.distributed import World, current_world
from workbench.grading import GradeCache, GradingPool
from workbench.models import Sampler, SamplingConfig
from workbench.records import TOKEN_IDS, Problem, ShardStore, in_problem_order
from workbench.sampling import accuracy, render_prompts, sample_and_grade
from workbench.stages import (
    ResumeMismatch, WorkUnit, derive_seed, model_name, run_units, sha256_lines, stage, weights_sha256,
)

log = logging.getLogger(__name__)

UnitSize = int | Literal["all"]

DEFAULT_UNIT_SIZE = 8
GRADE_CACHE_FILE = "grades.sqlite"
# The manifest fields that decide which samples a run produces; a resume must agree on all of them.
IDENTITY_FIELDS = ("model", "weights_sha256", "sampling", "unit_size", "problems", "prompts_sha256", "graded")


def plan_units(problems: Sequence[Problem], prompts: Sequence[str], sampling: SamplingConfig,
               unit_size: UnitSize) -> list[WorkUnit]:
    """Cut the problems, in order, into units of ``unit_size`` ("all": one unit) of (problem, prompt) items.

    A unit's seed hashes the base seed and its problems' ids, so it does not depend on what ran
    before it; the empty last part ends the hashed text with a NUL like every other part, which is
    how every sample folder's seeds were drawn.
    """
    if unit_size == "all":
        size = max(1, len(problems))
    elif isinstance(unit_size, int) and not isinstance(unit_size, bool) and unit_size >= 1:
        size = unit_size
    else:
        raise ValueError(f"unit_size must be a positive int or 'all', got {unit_size!r}")
    units = []
    for index, start in enumerate(range(0, len(problems), size)):
        chunk = problems[start : start + size]
        units.append(WorkUnit(
            index, tuple(zip(chunk, prompts[start : start + size])),
            tuple((p.benchmark, p.problem_id, i) for p in chunk for i in range(sampling.n)),
            derive_seed(sampling.seed, *(f"{p.benchmark}/{p.problem_id}" for p in chunk), ""),
        ))
    return units


def _check_problems(problems: Sequence[Problem]) -> None:
    if not problems:
        raise ValueError("no problems to sample")
    seen: set[tuple[str, str]] = set()
    for p in problems:
        if not isinstance(p, Problem):
            raise TypeError(f"problems must be workbench.records.Problem, got {type(p).__name__}")
        get_spec(p.benchmark)
        check_text(p.problem, f"problem {p.benchmark}/{p.problem_id}", "problem", MAX_PROBLEM_CHARS)
        key = (p.benchmark, p.problem_id)
        if key in seen:
            raise ValueError(f"problem {p.benchmark}/{p.problem_id} appears twice")
        seen.add(key)


def run_config(backend: Sampler, problems: Sequence[Problem], prompts: Sequence[str],
               sampling: SamplingConfig, unit_size: UnitSize, graded: bool,
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest config of a sampling run: identity fields first, then descriptive ones."""
    benchmarks = list(dict.fromkeys(p.benchmark for p in problems))
    name = model_name(backend)
    return {
        "model": name,
        "weights_sha256": weights_sha256(name),
        "sampling": asdict(sampling),
        "unit_size": unit_size,
        "problems": {
            "count": len(problems),
            "sha256": sha256_lines([f"{p.benchmark}/{p.problem_id}" for p in problems]),
        },
        "prompts_sha256": sha256_lines(prompts),
        "graded": graded,
        "benchmarks": {b: sum(p.benchmark == b for p in problems) for b in benchmarks},
        "extra": dict(extra or {}),
    }


def _has_token_ids(shard: Path) -> bool:
    """Whether a shard has token ids; an unreadable one counts as having them: the stage sets it aside."""
    try:
        return TOKEN_IDS.name in pq.read_schema(shard).names
    except (OSError, ValueError):
        return True


def _cache_file(out: Path, cache_path: str | os.PathLike | None, world: World) -> Path:
    """The verdict cache: one sqlite file per worker, so workers never write the same file."""
    path = Path(cache_path) if cache_path is not None else out / GRADE_CACHE_FILE
    return path if world.size == 1 else path.with_name(f"{path.stem}.rank{world.rank}{path.suffix}")


def generate_samples(
    backend: Sampler,
    problems: Sequence[Problem],
    sampling: SamplingConfig,
    out_dir: str | os.PathLike,
    *,
    unit_size: UnitSize = DEFAULT_UNIT_SIZE,
    grade: bool = True,
    grade_workers: int | None = None,
    cache_path: str | os.PathLike | None = None,
    progress: bool = True,
    extra: Mapping[str, Any] | None = None,
    token_ids: bool = False,
) -> pd.DataFrame:
    """Sample ``sampling.n`` responses per problem into ``out_dir``, resuming what is already there.

    Returns every sample of ``problems`` (SAMPLE_SCHEMA columns plus ``answer``, and ``token_ids``
    when asked for), in problem order. With ``grade=False`` the grade columns stay empty (``correct``
    null, ``grade_error`` "ungraded"), so no table can mistake them for wrong answers. The verdict
    cache defaults to ``out_dir/grades.sqlite``. ``extra`` is recorded in the manifest (e.g. method
    and seed of the checkpoint) without entering the resume check. Raises :class:`ResumeMismatch`
    when ``out_dir`` holds samples made with other arguments, or without token ids when they are
    asked for.
    """
    _check_problems(problems)
    out = Path(out_dir)
    prompts = render_prompts(backend, problems)
    units = plan_units(problems, prompts, sampling, unit_size)
    config = run_config(backend, problems, prompts, sampling, unit_size, grade, extra)
    store = ShardStore(out)
    if token_ids and any(not _has_token_ids(s) for s in store.shards()):
        raise ResumeMismatch(f"{out} holds samples without token ids; use another folder for samples with them")
    identity = {k: config[k] for k in IDENTITY_FIELDS}
    world = current_world()
    with stage(out, identity, sampling.seed, config=config, store=store), GradingPool(grade_workers) as grader:
        cache = GradeCache(_cache_file(out, cache_path, world)) if grade else None

        def produce(unit: WorkUnit) -> pd.DataFrame:
            chunk, unit_prompts = zip(*unit.items)
            return sample_and_grade(backend, chunk, replace(sampling, seed=unit.seed), prompts=unit_prompts,
                                    grade=grade, grader=grader, cache=cache, token_ids=token_ids)

        run_units(store, units, produce, desc=f"sampling {out.name}", progress=progress, unit="sample", world=world)
        frame = in_problem_order(store.read(), problems)
    if not token_ids and TOKEN_IDS.name in frame:
        frame = frame.drop(columns=TOKEN_IDS.name)
    total = len(problems) * sampling.n
    if len(frame) != total:
        raise RuntimeError(f"{out}: expected {total} samples on disk after sampling, found {len(frame)}")
    truncated = int((frame["finish_reason"] == "length").sum())
    graded = f"accuracy {100.0 * accuracy(frame):.1f}%" if grade else "ungraded"
    log.info("%s: %d samples, %s, %d truncated at %d tokens (counted wrong)",
             out, total, graded, truncated, sampling.max_new_tokens)
    return frame
