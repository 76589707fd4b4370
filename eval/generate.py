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

A sample cut off at ``max_new_tokens`` (finish reason ``"length"``) never counts as solved: it is
graded like any other (so ``extracted`` shows what it had boxed so far), then forced to
``correct=False`` with ``grade_error="truncated"``, replacing whatever error the grader gave. Answers
boxed before the end of an unfinished response are not final answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tqdm.auto import tqdm

from workbench.data import get_spec
from workbench.errors import UserError
from workbench.grading import GradeCache, grade_batch
from workbench.models import Completion, Sampler, SamplingConfig
from workbench.prompts import render_prompt
from workbench.records import SAMPLE_SCHEMA, Problem, ShardStore
from workbench.runs import MANIFEST, REPO_ROOT, read_manifest, run_folder

log = logging.getLogger(__name__)

UnitSize = int | Literal["all"]

DEFAULT_UNIT_SIZE = 8
TRUNCATED = "truncated"
UNGRADED = "ungraded"
GRADE_CACHE_FILE = "grades.sqlite"
# The manifest fields that decide which samples a run produces; a resume must agree on all of them.
IDENTITY_FIELDS = ("model", "weights_sha256", "sampling", "unit_size", "problems", "prompts_sha256", "graded")
MAX_HASHED_WEIGHTS = 64 << 20


class ResumeMismatch(UserError):
    """The output folder holds samples made with other arguments; continuing would mix two runs."""


@dataclass(frozen=True)
class Unit:
    """A fixed slice of the problem list, sampled by one ``generate`` call with its own seed."""

    problems: tuple[Problem, ...]
    prompts: tuple[str, ...]
    seed: int


def _digest(lines: Sequence[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def unit_seed(base_seed: int, problems: Sequence[Problem]) -> int:
    """Seed of a unit: a hash of the base seed and its problems, independent of what ran before it.

    31 bits, because numpy's global seeding (used by transformers' ``set_seed``) takes at most 32.
    """
    digest = _digest([str(base_seed), *(f"{p.benchmark}/{p.problem_id}" for p in problems)])
    return int(digest[:8], 16) & 0x7FFFFFFF


def model_name(backend: Sampler) -> str:
    """How a backend identifies its model in manifests (``name`` attribute, else the class).

    A local folder inside the repository is named relative to it, so committed samples of a committed
    checkpoint still resume in a clone at another path.
    """
    name = str(getattr(backend, "name", type(backend).__name__))
    path = Path(name)
    if not path.is_dir():
        return name
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def weights_sha256(name: str) -> str | None:
    """A digest of a local checkpoint's safetensors, when small enough to read in a moment.

    Retraining a toy model keeps its folder name; without the digest a rerun would silently keep the
    old model's samples. Large (real) checkpoints are not hashed: None.
    """
    path = Path(name) if Path(name).is_dir() else REPO_ROOT / name
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files or sum(f.stat().st_size for f in files) > MAX_HASHED_WEIGHTS:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def render_prompts(backend: Sampler, problems: Sequence[Problem]) -> list[str]:
    """Each problem's prompt, in its benchmark's style and the backend's chat template."""
    tokenizer = getattr(backend, "tokenizer", None)
    return [render_prompt(p.problem, tokenizer, get_spec(p.benchmark).prompt_style) for p in problems]


def plan_units(problems: Sequence[Problem], prompts: Sequence[str], sampling: SamplingConfig,
               unit_size: UnitSize) -> list[Unit]:
    """Cut the problems, in order, into units of ``unit_size`` ("all": one unit)."""
    if unit_size == "all":
        size = max(1, len(problems))
    elif isinstance(unit_size, int) and not isinstance(unit_size, bool) and unit_size >= 1:
        size = unit_size
    else:
        raise ValueError(f"unit_size must be a positive int or 'all', got {unit_size!r}")
    units = []
    for start in range(0, len(problems), size):
        chunk = tuple(problems[start : start + size])
        units.append(Unit(chunk, tuple(prompts[start : start + size]), unit_seed(sampling.seed, chunk)))
    return units


def _check_problems(problems: Sequence[Problem]) -> None:
    if not problems:
        raise ValueError("no problems to sample")
    seen: set[tuple[str, str]] = set()
    for p in problems:
        if not isinstance(p, Problem):
            raise TypeError(f"problems must be workbench.records.Problem, got {type(p).__name__}")
        get_spec(p.benchmark)
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
            "sha256": _digest([f"{p.benchmark}/{p.problem_id}" for p in problems]),
        },
        "prompts_sha256": _digest(prompts),
        "graded": graded,
        "benchmarks": {b: sum(p.benchmark == b for p in problems) for b in benchmarks},
        "extra": dict(extra or {}),
    }


def check_resume(out_dir: Path, config: Mapping[str, Any]) -> None:
    """Refuse to continue a folder whose samples were made with other identity fields."""
    store = ShardStore(out_dir)
    if not (out_dir / MANIFEST).is_file():
        if store.shards():
            raise ResumeMismatch(f"{out_dir} holds sample shards but no {MANIFEST}; use an empty folder")
        return
    previous = read_manifest(out_dir).get("config", {})
    diffs = [f"{k}: on disk {previous.get(k)!r}, now {config[k]!r}"
             for k in IDENTITY_FIELDS if previous.get(k) != config[k]]
    if diffs:
        raise ResumeMismatch(
            f"{out_dir} holds samples made with other arguments; use the same arguments, another folder, or "
            "delete it to sample afresh.\n  "
            + "\n  ".join(diffs)
        )


def _rows(unit: Unit, groups: list[list[Completion]], n: int) -> list[dict[str, Any]]:
    if len(groups) != len(unit.problems) or any(len(g) != n for g in groups):
        shape = [len(g) for g in groups]
        raise RuntimeError(f"backend returned {shape} completions for {len(unit.problems)} prompts x n={n}")
    rows = []
    for problem, prompt, group in zip(unit.problems, unit.prompts, groups):
        for idx, completion in enumerate(group):
            rows.append({
                "benchmark": problem.benchmark, "problem_id": problem.problem_id, "sample_idx": idx,
                "prompt": prompt, "response": completion.text, "n_tokens": completion.n_tokens,
                "finish_reason": completion.finish_reason, "answer": problem.answer,
            })
    return rows


def grade_rows(rows: list[dict[str, Any]], *, workers: int | None, cache: GradeCache | None,
               progress: bool) -> None:
    """Fill ``correct``, ``extracted``, ``grade_error`` in place; truncated samples count as wrong."""
    grades = grade_batch([(r["response"], r["answer"], r["benchmark"]) for r in rows],
                         workers=workers, cache=cache, progress=progress)
    for row, g in zip(rows, grades):
        truncated = row["finish_reason"] == "length"
        row["correct"] = bool(g.correct) and not truncated
        row["extracted"] = g.extracted
        row["grade_error"] = TRUNCATED if truncated else g.error


def _ordered(frame: pd.DataFrame, problems: Sequence[Problem]) -> pd.DataFrame:
    """The requested problems' samples in problem order, then sample index."""
    order = {(p.benchmark, p.problem_id): i for i, p in enumerate(problems)}
    pos = pd.Series([order.get(k) for k in zip(frame["benchmark"], frame["problem_id"])], index=frame.index)
    frame = frame[pos.notna()].assign(_pos=pos[pos.notna()].astype(int))
    return frame.sort_values(["_pos", "sample_idx"]).drop(columns="_pos").reset_index(drop=True)


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
) -> pd.DataFrame:
    """Sample ``sampling.n`` responses per problem into ``out_dir``, resuming what is already there.

    Returns every sample of ``problems`` (SAMPLE_SCHEMA columns plus ``answer``), in problem order.
    With ``grade=False`` the grade columns stay empty (``correct`` null, ``grade_error``
    "ungraded"), so no table can mistake them for wrong answers. The verdict cache defaults to ``out_dir/grades.sqlite``. ``extra``
    is recorded in the manifest (e.g. method and seed of the checkpoint) without entering the resume
    check. Raises :class:`ResumeMismatch` when ``out_dir`` holds samples made with other arguments.
    """
    _check_problems(problems)
    out = Path(out_dir)
    prompts = render_prompts(backend, problems)
    units = plan_units(problems, prompts, sampling, unit_size)
    config = run_config(backend, problems, prompts, sampling, unit_size, grade, extra)
    check_resume(out, config)
    store = ShardStore(out)
    on_disk = store.keys()
    todo = [u for u in units
            if not all((p.benchmark, p.problem_id, i) in on_disk for p in u.problems for i in range(sampling.n))]
    total = len(problems) * sampling.n
    done = total - sum(len(u.problems) for u in todo) * sampling.n
    if done:
        log.info("%s: %d of %d units already on disk, %d to sample", out, len(units) - len(todo), len(units), len(todo))
    with run_folder(out, config, sampling.seed):
        cache = GradeCache(cache_path if cache_path is not None else out / GRADE_CACHE_FILE) if grade else None
        bar = tqdm(total=total, initial=done, unit="sample", desc=f"sampling {out.name}", disable=not progress)
        tokens, start = 0, time.perf_counter()
        for unit in todo:
            groups = backend.generate(list(unit.prompts), replace(sampling, seed=unit.seed))
            rows = _rows(unit, groups, sampling.n)
            if grade:
                grade_rows(rows, workers=grade_workers, cache=cache, progress=False)
            else:
                for row in rows:
                    row.update(correct=None, extracted=None, grade_error=UNGRADED)
            store.append(pd.DataFrame(rows, columns=[*SAMPLE_SCHEMA.names, "answer"]))
            tokens += sum(r["n_tokens"] for r in rows)
            bar.update(len(rows))
            bar.set_postfix(tok_per_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}")
        bar.close()
        frame = _ordered(store.read(), problems)
    if len(frame) != total:
        raise RuntimeError(f"{out}: expected {total} samples on disk after sampling, found {len(frame)}")
    truncated = int((frame["finish_reason"] == "length").sum())
    accuracy = f"accuracy {100.0 * frame['correct'].astype(float).mean():.1f}%" if grade else "ungraded"
    log.info("%s: %d samples, %s, %d truncated at %d tokens (counted wrong)",
             out, total, accuracy, truncated, sampling.max_new_tokens)
    return frame
