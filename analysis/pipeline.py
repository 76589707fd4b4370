"""The perplexity analyses as one call: student rollouts, then the corrective and boundary experiments
and the SCOPE weights on the same rollouts.

``python -m analysis.cli toy|run`` is a thin wrapper over :func:`run` and :func:`write_tables`, so a
notebook that calls them with the same settings gets the same numbers as the command line. Every
setting lives in a config object of :mod:`analysis.configs` (:class:`RolloutConfig`, :class:`CorrectiveConfig`,
:class:`BoundaryConfig`, :class:`ModelConfig`, :class:`ProblemSet`); models are given as loaded
backends or as names to load. With a ``run_dir`` every stage is resumable (a killed run, rerun with
the same settings, continues); without one the stages go to a temporary folder that is removed
afterwards.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import pandas as pd

from analysis.boundary import BoundaryAnalysis, run_boundary, write_boundary
from analysis.configs import BoundaryConfig, CorrectiveConfig, ModelConfig, ProblemSet, RolloutConfig
from analysis.corrective import RecoveryAnalysis, run_corrective, write_recovery
from analysis.rollouts import ANALYSIS_KIND, sample_rollouts
from analysis.weights import DEFAULT_TAUS, case_study, prepare, summarise, tau_sweep
from train.scope import WeightConfig
from workbench.errors import UserError, check_model_name
from workbench.models import Backend, check_same_vocab, load_backend
from workbench.records import SAMPLE_KEY, Problem
from workbench.runs import run_folder, write_manifest
from workbench.stages import model_name, weights_sha256

log = logging.getLogger(__name__)

TABLES_KIND = "perplexity-analysis-tables"
CASE_STUDY_GROUPS = 4  # groups shown in the weights case study

ModelRef = Union[Backend, str, os.PathLike]
"""A loaded backend, or a hub id / local folder that :class:`ModelConfig` says how to load."""

__all__ = [
    "BoundaryConfig", "CorrectiveConfig", "ModelConfig", "PipelineResult", "ProblemSet", "RolloutConfig",
    "load_models", "run", "write_tables",
]


@dataclass(frozen=True)
class PipelineResult:
    """What one run found; :func:`write_tables` writes it as the command line does.

    config: the settings as the manifests record them.
    problems: the problems analysed, in order.
    rollouts: the student's graded rollouts (SAMPLE_SCHEMA columns, ``token_ids``, ``answer``).
    recovery: teacher PPL vs recovery (None when not run): ``table`` (recovery % by ratio x
        teacher-PPL bucket, with intervals and the paper's values), ``per_rollout``, ``buckets``,
        ``statistics``.
    boundary: student PPL vs solve rate (None when not run): ``per_rollout``, ``buckets``, ``statistics``.
    weights: per rollout: key, ``correct``, student and teacher log-PPL (both experiments only).
    weights_summary: SCOPE's weights over the tau sweep, by tau and path (both experiments only).
    skipped: experiment -> why it did not run (too few rollouts on its path for its buckets).
    timings: seconds per stage.
    run_dir: where the stages lie, None after an in-memory run (their temporary folder is gone).
    """

    config: dict[str, Any]
    problems: list[Problem]
    rollouts: pd.DataFrame
    recovery: RecoveryAnalysis | None
    boundary: BoundaryAnalysis | None
    weights: pd.DataFrame | None
    weights_summary: pd.DataFrame | None
    skipped: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None

    def case_study(self, tau: float = 1.0, groups: int = CASE_STUDY_GROUPS) -> pd.DataFrame | None:
        """The highest- and lowest-weighted rollouts of each path in a few groups, as text (None
        without weights); see :func:`analysis.weights.case_study`."""
        if self.weights is None:
            return None
        texts = self.rollouts[[*SAMPLE_KEY, "prompt", "response"]]
        return case_study(self.weights.merge(texts, on=list(SAMPLE_KEY)), tau, groups)

    @property
    def teacher_solve_rates(self) -> pd.DataFrame | None:
        """The teacher's from-scratch solve rate of each problem with a wrong rollout."""
        if self.recovery is None:
            return None
        keys = ["benchmark", "problem_id"]
        return (self.recovery.per_rollout[[*keys, "teacher_solve_rate"]].drop_duplicates(keys)
                .sort_values(keys).reset_index(drop=True))


def _is_name(ref: ModelRef | None) -> bool:
    return isinstance(ref, (str, os.PathLike))


def load_models(student: ModelRef, teacher: ModelRef | None, models: ModelConfig = ModelConfig(), *,
                progress: bool = True) -> tuple[Backend, Backend, dict[str, Any]]:
    """The two backends (names loaded, one model loaded once when it plays both roles) and their
    description for the manifests. A teacher of None is the student. The teacher scores the
    student's own token ids, so two models must share a vocabulary (TokenizerMismatch otherwise)."""
    if teacher is None:
        teacher, teacher_gguf = student, models.teacher_gguf or models.student_gguf
    else:
        teacher_gguf = models.teacher_gguf
    refs = {"student": (student, models.student_gguf), "teacher": (teacher, teacher_gguf)}
    spec: dict[str, Any] = {"backend": models.backend} if any(_is_name(r) for r, _ in refs.values()) else {}
    backends: dict[str, Backend] = {}
    loaded: dict[tuple[str, str | None], Backend] = {}
    for role, (ref, gguf) in refs.items():
        if not _is_name(ref):
            backends[role], spec[role] = ref, model_name(ref)  # type: ignore[assignment]
            continue
        name = spec[role] = os.fspath(ref)  # type: ignore[arg-type]
        if (name, gguf) not in loaded:
            kwargs: dict[str, Any] = {"progress": progress}
            if models.backend == "hf":
                kwargs.update(device=models.device, gguf_file=gguf, max_batch_sequences=models.batch_sequences)
            if models.backend == "server":
                kwargs["base_url"] = models.base_url
            loaded[(name, gguf)] = load_backend(models.backend, name, **kwargs)
        backends[role] = loaded[(name, gguf)]
    if models.student_gguf or teacher_gguf:
        spec.update(student_gguf=models.student_gguf, teacher_gguf=teacher_gguf)
    for role in refs:
        digest = weights_sha256(spec[role])
        if digest is not None:
            spec[f"{role}_sha256"] = digest
    tokenizers = [getattr(backends[role], "tokenizer", None) for role in refs]
    if backends["student"] is not backends["teacher"] and None not in tokenizers:
        check_same_vocab(*tokenizers)
    return backends["student"], backends["teacher"], spec


def _check_names(student: ModelRef, teacher: ModelRef | None, models: ModelConfig) -> None:
    if models.backend == "server":
        return
    for role, ref in (("student", student), ("teacher", teacher)):
        if _is_name(ref):
            check_model_name(role, os.fspath(ref))  # type: ignore[arg-type]


def _weights(rollouts: pd.DataFrame, student_scores: pd.DataFrame, recovery: RecoveryAnalysis,
             taus: Sequence[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-rollout log-PPLs (teacher's on wrong rollouts only: it scores no correct one) and the tau sweep."""
    teacher = recovery.per_rollout.drop_duplicates(list(SAMPLE_KEY))[[*SAMPLE_KEY, "teacher_log_ppl"]]
    frame = rollouts[[*SAMPLE_KEY, "correct"]].merge(
        student_scores[[*SAMPLE_KEY, "log_ppl"]].rename(columns={"log_ppl": "student_log_ppl"}), on=list(SAMPLE_KEY))
    frame = frame.merge(teacher, on=list(SAMPLE_KEY), how="left")
    return frame, summarise(tau_sweep(prepare(frame), taus))


def run(student: ModelRef, teacher: ModelRef | None, problems: Sequence[Problem] | ProblemSet,
        corrective: CorrectiveConfig | None, boundary: BoundaryConfig | None, run_dir: str | os.PathLike | None,
        *, rollouts: RolloutConfig = RolloutConfig(), models: ModelConfig = ModelConfig(),
        taus: Sequence[float] = DEFAULT_TAUS, grade_workers: int | None = None,
        progress: bool = True) -> PipelineResult:
    """Sample and grade the student's rollouts, then run each experiment whose config is given.

    ``teacher`` None: the student plays both roles. An experiment whose path has fewer rollouts
    than its buckets (all rollouts correct, say) is skipped with the reason in ``skipped``. The
    weights need both experiments (student and teacher log-PPLs). ``taus``: the temperatures the
    weight summary sweeps. Settings are checked and problems loaded before any model loads.
    """
    if not taus:
        raise UserError("taus must name at least one temperature for the weight summary")
    for tau in taus:
        WeightConfig(tau=tau)  # tau's rule is WeightConfig's (UserError)
    _check_names(student, teacher, models)
    selection = problems if isinstance(problems, ProblemSet) else None
    chosen = selection.load() if selection else list(problems)  # type: ignore[arg-type]
    if not chosen or not all(isinstance(p, Problem) for p in chosen):
        raise UserError("problems must be a ProblemSet or a non-empty list of workbench.records.Problem")
    experiments = {"corrective": corrective, "boundary": boundary}
    started = time.perf_counter()
    student_backend, teacher_backend, model_spec = load_models(student, teacher, models, progress=progress)
    timings: dict[str, float] = {}
    if _is_name(student) or _is_name(teacher):
        timings["load_models_s"] = time.perf_counter() - started
    sampling = rollouts.sampling
    config = {"models": model_spec, "benchmarks": sorted({p.benchmark for p in chosen}),
              "n_problems": len(chosen), "limit": selection.limit if selection else None,
              "rollouts": asdict(sampling),
              "corrective": asdict(corrective) if corrective else None,
              "boundary": asdict(boundary) if boundary else None,
              "experiments": sorted(k for k, v in experiments.items() if v is not None),
              "weight_taus": [float(t) for t in taus]}
    recovery = edge = weights = weights_summary = None
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        folder = Path(run_dir) if run_dir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="scope-analysis-")))
        stack.enter_context(run_folder(folder, config, rollouts.seed, kind=ANALYSIS_KIND))
        t0 = time.perf_counter()
        frame = sample_rollouts(student_backend, chosen, sampling, folder / "rollouts",
                                unit_size=rollouts.items_per_unit(), grade_workers=grade_workers, progress=progress)
        timings["rollouts_s"] = time.perf_counter() - t0
        n_correct = int(frame["correct"].sum())
        for name, have, what in (("corrective", len(frame) - n_correct, "wrong"), ("boundary", n_correct, "correct")):
            cfg = experiments[name]
            if cfg is not None and have < cfg.n_buckets:
                skipped[name] = f"{have} {what} rollouts, fewer than the {cfg.n_buckets} buckets"
                log.warning("%s experiment skipped: %s", name, skipped[name])
        if corrective is not None and "corrective" not in skipped:
            t0 = time.perf_counter()
            recovery = run_corrective(student_backend, teacher_backend, frame, chosen, corrective, folder,
                                      grade_workers=grade_workers, progress=progress)
            timings["corrective_s"] = time.perf_counter() - t0
        if boundary is not None and "boundary" not in skipped:
            t0 = time.perf_counter()
            edge, student_scores = run_boundary(student_backend, frame, chosen, boundary, folder,
                                                grade_workers=grade_workers, progress=progress)
            timings["boundary_s"] = time.perf_counter() - t0
            if recovery is not None:
                weights, weights_summary = _weights(frame, student_scores, recovery, taus)
    timings["total_s"] = time.perf_counter() - started
    return PipelineResult(config, chosen, frame, recovery, edge, weights, weights_summary, skipped, timings,
                          Path(run_dir) if run_dir is not None else None)


def write_tables(result: PipelineResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """The small tables the command line writes (recovery, boundary, weights) and their manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if result.recovery is not None:
        paths.update({f"recovery.{k}": v for k, v in write_recovery(result.recovery, out).items()})
    if result.boundary is not None:
        paths.update({f"boundary.{k}": v for k, v in write_boundary(result.boundary, out).items()})
    if result.weights is not None and result.weights_summary is not None:
        paths["weights.rollouts"] = out / "weights_rollouts.csv"
        result.weights.to_csv(paths["weights.rollouts"], index=False, float_format="%.6g")
        paths["weights.summary"] = out / "weights_summary.csv"
        result.weights_summary.to_csv(paths["weights.summary"], index=False)
        case = result.case_study()
        if case is not None and not case.empty:
            paths["weights.case_study"] = out / "weights_case_study.md"
            paths["weights.case_study"].write_text(
                "# Case study: the highest- and lowest-weighted rollout of each path (tau = 1)\n\n"
                "MLE path (correct rollouts): weight from the student's PPL^(+1/tau), so an unsure but right "
                "answer counts more. OPD path (wrong rollouts): weight from the teacher's PPL^(-1/tau), so a "
                "mistake the teacher finds plausible counts more. Groups whose paths both hold two or more "
                "rollouts, widest weight range first.\n\n"
                + case.to_markdown(index=False, floatfmt=".3f") + "\n")
    paths["manifest"] = write_manifest(out, result.config, result.config["rollouts"]["seed"], kind=TABLES_KIND,
                                       run_dir=None if result.run_dir is None else str(result.run_dir),
                                       timings=result.timings)
    return paths
