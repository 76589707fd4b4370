"""The paper's experiments on the toy world, with seeds and intervals: main table, DPAW ablation, tau sweep,
Pass@k paradox.

Each experiment is a list of variants (a recipe plus overrides); each variant is trained from the toy base
student with every seed, and every checkpoint is sampled ``n`` times on the toy test tiers. A difference
between methods is only worth reporting against the spread between seeds of one method, so the tables give
the mean over seeds with a Student-t 95 % interval, and the main table gives SCOPE - OPD as a paired
difference (the same seed means the same prompts in the same order), with the smallest difference the seed
count could detect. All checkpoints are sampled with the same sampling seed (common random numbers), which
makes differences between variants less noisy than either variant alone.

Training runs and sample folders are resumable and git-ignored (``results/toy/runs/experiments``,
``results/runs/toy-experiments``); what is committed is each experiment's per-problem correct counts
(``counts.csv.gz``, about 100 kB), from which the tables and figures are drawn again without sampling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from eval.curves import AVERAGE, pass_at_k_curves_from_counts
from eval.metrics import macro_average, pass_at_k, seed_ci
from workbench.errors import UserError
from workbench.layout import RUNS, TOY_RESULTS, TOY_RUNS, TOY_TIERS
from workbench.runs import check_recorded, is_finished, read_manifest

log = logging.getLogger(__name__)

EXPERIMENT_RUNS = TOY_RUNS / "experiments"
EXPERIMENT_SAMPLES = RUNS / "toy-experiments"
EXPERIMENT_RESULTS = TOY_RESULTS / "experiments"
COUNTS_FILE = "counts.csv.gz"
# gzip without a time stamp: the same counts give the same bytes.
COUNTS_COMPRESSION = {"method": "gzip", "mtime": 0}
BASE = "base"
METRICS = {"avg": "Avg@{n}", "pass": "Pass@{n} (unbiased, Chen et al.)"}
"""Each reported metric's label; ``{n}`` is the sample count."""
LEVEL = 0.95
POWER = 0.80


@dataclass(frozen=True)
class Variant:
    """One trained configuration: ``method``'s toy recipe with ``overrides`` (``base``: no training)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.name


def _scope(name: str, label: str, *overrides: str) -> Variant:
    return Variant(name, "scope", overrides, label)


EXPERIMENTS: dict[str, tuple[Variant, ...]] = {
    "main": (
        Variant(BASE, BASE, label="base student"),
        Variant("grpo", "grpo", label="GRPO"),
        Variant("kd", "kd", label="KD"),
        Variant("opd", "opd", label="OPD"),
        Variant("scope", "scope", label="SCOPE"),
    ),
    "dpaw": (
        Variant("scope", "scope", label="SCOPE"),
        _scope("scope-no_dpaw", "w/o DPAW", "--ablation", "no_dpaw_uniform_weights"),
        _scope("scope-no_student_weight", "w/o student weight", "--ablation", "no_student_weight"),
        _scope("scope-no_teacher_weight", "w/o teacher weight", "--ablation", "no_teacher_weight"),
        _scope("scope-opposite_student", "opposite student weight", "--ablation", "opposite_student_weight"),
        _scope("scope-opposite_teacher", "opposite teacher weight", "--ablation", "opposite_teacher_weight"),
        _scope("scope-authors_code", "authors' code", "--ablation", "authors_code", "--scope_loss", "authors"),
        # Routing off: every rollout of the group takes the OPD path (uniform weights), so a difference from
        # "w/o DPAW" is the MLE path's and a difference from OPD (1 rollout) the group size's.
        Variant("opd-8", "opd", ("--num_generations", "8", "--per_device_train_batch_size", "32"),
                "OPD, 8 rollouts (no MLE path)"),
    ),
    "tau": (
        _scope("scope-tau0.25", "τ = 0.25", "--tau", "0.25"),
        _scope("scope-tau0.5", "τ = 0.5", "--tau", "0.5"),
        Variant("scope", "scope", label="τ = 1"),
        _scope("scope-tau2", "τ = 2", "--tau", "2"),
        _scope("scope-tau4", "τ = 4", "--tau", "4"),
    ),
}
# Paired differences each table reports: (a, b) means a - b over the seeds both have.
PAIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "main": (("scope", "opd"), ("scope", "grpo"), ("scope", "kd")),
    "dpaw": tuple(("scope", v.name) for v in EXPERIMENTS["dpaw"] if v.name != "scope"),
    "tau": tuple(("scope", v.name) for v in EXPERIMENTS["tau"] if v.name != "scope"),
}


@dataclass(frozen=True)
class ExperimentConfig:
    """How big an experiment is; every field enters the manifest, and a change starts new folders.

    seeds: training seeds (at least 2 for an interval).
    max_steps: optimizer steps of every trained variant (4 prompts x 8 rollouts a step). The toy student
        is stopped mid-learning, so every method lifts it fast: by 96 steps SCOPE's Avg@32 is near 97 %
        and methods can no longer differ; 32 steps leave them room.
    problems_per_tier: test problems of each toy tier sampled for evaluation (50: every test problem
        of the smallest tier).
    n: samples a problem (Avg@n, Pass@k for k <= n); the rest of the sampling is the toy tiers'
        evaluation defaults (their BenchmarkSpec), as ``make reproduce-tables`` uses them.
    workers: processes training or sampling at once (one torch thread each).
    """

    seeds: tuple[int, ...] = tuple(range(10))
    max_steps: int = 32
    problems_per_tier: int = 50
    n: int = 32
    sample_seed: int = 0
    workers: int = 2
    tiers: tuple[str, ...] = TOY_TIERS
    runs: Path = EXPERIMENT_RUNS
    samples: Path = EXPERIMENT_SAMPLES
    results: Path = EXPERIMENT_RESULTS

    def __post_init__(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"experiments need at least 2 distinct seeds for an interval, got {list(self.seeds)}")
        for name in ("max_steps", "problems_per_tier", "n", "workers"):
            if getattr(self, name) < 1:
                raise UserError(f"experiments: {name} must be at least 1, got {getattr(self, name)}")
        unknown = sorted(set(self.tiers) - set(TOY_TIERS))
        if unknown:
            raise UserError(f"experiments: unknown toy tiers {unknown}; expected some of {', '.join(TOY_TIERS)}")

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.runs / f"steps{self.max_steps}" / variant.name / f"seed{seed}"

    def sample_dir(self, variant: Variant, seed: int) -> Path:
        tag = f"steps{self.max_steps}_n{self.n}_p{self.problems_per_tier}_s{self.sample_seed}"
        return self.samples / tag / variant.name / f"seed{seed}"


def variants_of(experiment: str) -> tuple[Variant, ...]:
    if experiment not in EXPERIMENTS:
        raise UserError(f"unknown experiment {experiment!r}; expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[experiment]


def _train(variant: Variant, seed: int, folder: Path, max_steps: int) -> float:
    """Train one (variant, seed) into ``folder`` in this process; returns the wall seconds."""
    import torch

    from train.methods import train_toy_run

    torch.set_num_threads(1)
    logging.getLogger("workbench.grading").setLevel(logging.WARNING)
    start = time.perf_counter()
    train_toy_run(variant.method, seed, folder, ["--max_steps", str(max_steps), *variant.overrides],
                  variant=variant.name)
    return time.perf_counter() - start


def _sample(model: str, folder: Path, cfg: ExperimentConfig, sample_seed: int) -> pd.DataFrame:
    """Per-problem sample and correct counts of one checkpoint on the test tiers (resumable)."""
    import torch

    from eval.generate import generate_samples
    from workbench.data import load_benchmark, suite_generation
    from workbench.models.hf import HFBackend

    torch.set_num_threads(1)
    logging.getLogger("workbench.grading").setLevel(logging.WARNING)
    problems = [p for tier in cfg.tiers for p in load_benchmark(tier, toy_size=cfg.problems_per_tier)]
    sampling = replace(suite_generation(cfg.tiers), n=cfg.n, seed=sample_seed)
    samples = generate_samples(HFBackend(model, device="cpu", progress=False), problems, sampling, folder,
                               unit_size="all", progress=False)
    grouped = samples.groupby(["benchmark", "problem_id"], sort=False)["correct"]
    return grouped.agg(n="size", c="sum").reset_index()


def _base_model() -> str:
    from train.config import parse_config
    from train.methods import toy_recipe

    return parse_config(["--config", str(toy_recipe("scope"))]).resolved_student()


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


def _map(jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int, desc: str,
         progress: bool = True) -> list[Any]:
    """Run ``jobs`` on ``workers`` processes (in this one when 1), with a progress bar, keeping order."""
    from tqdm.auto import tqdm

    if not jobs:
        return []
    if workers == 1:
        return [fn(*args) for fn, args in tqdm(jobs, desc=desc, unit="job", disable=not progress)]
    with _pool(workers) as pool:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
        results = []
        for future in tqdm(futures, desc=desc, unit="job", disable=not progress):
            results.append(future.result())
        return results


def train_all(variants: Sequence[Variant], cfg: ExperimentConfig, progress: bool = True) -> pd.DataFrame:
    """Train every (variant, seed) not finished yet; returns what ran and how long it took."""
    todo = [(v, s) for v in variants if v.method != BASE for s in cfg.seeds
            if not is_finished(cfg.run_dir(v, s))]
    seconds = _map([(_train, (v, s, cfg.run_dir(v, s), cfg.max_steps)) for v, s in todo], cfg.workers,
                   "training", progress)
    return pd.DataFrame([{"variant": v.name, "seed": s, "wall_s": round(t, 1)} for (v, s), t in zip(todo, seconds)])


def count_all(variants: Sequence[Variant], cfg: ExperimentConfig, progress: bool = True) -> pd.DataFrame:
    """Per-problem (n, c) of every checkpoint and of the base student once per seed.

    Trained checkpoints share the sampling seed ``cfg.sample_seed`` (common random numbers); the base student is
    sampled with sampling seed ``sample_seed + s`` for seed ``s``, so its own sampling noise is inside every
    method - base interval (paired by seed)."""
    jobs, keys = [], []
    for v in variants:
        for s in cfg.seeds:
            model = _base_model() if v.method == BASE else str(cfg.run_dir(v, s) / "model")
            if v.method != BASE and not is_finished(cfg.run_dir(v, s)):
                raise RuntimeError(f"{cfg.run_dir(v, s)} has not finished training")
            sample_seed = cfg.sample_seed + s if v.method == BASE else cfg.sample_seed
            jobs.append((_sample, (model, cfg.sample_dir(v, s), cfg, sample_seed)))
            keys.append((v.name, s))
    frames = _map(jobs, cfg.workers, "sampling", progress)
    return pd.concat([f.assign(variant=name, seed=s) for (name, s), f in zip(keys, frames)], ignore_index=True)[
        ["variant", "seed", "benchmark", "problem_id", "n", "c"]]


def per_seed_scores(counts: pd.DataFrame, k: int) -> pd.DataFrame:
    """Avg@n and Pass@k (unbiased) per (variant, seed, tier), in percent, plus each seed's macro
    ``Average`` over tiers (the paper's unweighted mean)."""
    rows = []
    for (variant, seed, tier), part in counts.groupby(["variant", "seed", "benchmark"], sort=False):
        n, c = part["n"].to_numpy(), part["c"].to_numpy()
        rows.append({"variant": variant, "seed": seed, "benchmark": tier,
                     "avg": 100.0 * float(np.mean(c / n)), "pass": 100.0 * float(np.mean(pass_at_k(n, c, k)))})
    frame = pd.DataFrame(rows)
    average = (frame.groupby(["variant", "seed"], sort=False)
               .apply(lambda g: pd.Series({m: macro_average(dict(zip(g["benchmark"], g[m]))) for m in ("avg", "pass")}),
                      include_groups=False)
               .reset_index().assign(benchmark="Average"))
    return pd.concat([frame, average], ignore_index=True)


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Half-width of the Student-t interval of the mean (``eval.metrics.seed_ci``) and the sample standard
    deviation; NaN for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan"), float("nan")
    mean, _, hi = seed_ci(values, level)
    return hi - mean, float(values.std(ddof=1))


def detectable_effect(sd: float, seeds: int, level: float = LEVEL, power: float = POWER) -> float:
    """Smallest true mean difference a paired t-test over ``seeds`` finds with ``power`` at ``level``
    (two-sided), given the standard deviation of the per-seed differences."""
    df = seeds - 1
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * sd / np.sqrt(seeds))


def summary_table(scores: pd.DataFrame, variants: Sequence[Variant]) -> pd.DataFrame:
    """Mean over seeds with its 95 % t half-width, per variant and tier (rows in experiment order)."""
    rows = []
    for v in variants:
        part = scores[scores["variant"] == v.name]
        if part.empty:
            continue
        for tier, cell in part.groupby("benchmark", sort=False):
            row = {"variant": v.name, "label": v.display, "benchmark": tier, "seeds": len(cell)}
            for metric in ("avg", "pass"):
                half, _ = t_interval(cell[metric].to_numpy())
                row[metric] = float(cell[metric].mean())
                row[f"{metric}_ci"] = half
            rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(scores: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """``a - b`` per tier and metric over the seeds both have, with its t interval and the detectable effect."""
    rows: list[dict[str, Any]] = []
    for tier, part in scores.groupby("benchmark", sort=False):
        wide = part.pivot(index="seed", columns="variant", values=["avg", "pass"])
        for metric in ("avg", "pass"):
            if (metric, a) not in wide or (metric, b) not in wide:
                continue
            diff = (wide[(metric, a)] - wide[(metric, b)]).dropna().to_numpy()
            half, sd = t_interval(diff)
            p = float(stats.ttest_1samp(diff, 0.0).pvalue) if diff.size >= 2 and sd > 0 else float("nan")
            rows.append({"comparison": f"{a} - {b}", "benchmark": tier, "metric": metric,
                         "difference": float(diff.mean()), "ci": half,
                         "p_value": p, "seeds": int(diff.size),
                         "detectable": detectable_effect(sd, diff.size) if diff.size >= 2 else float("nan")})
    return pd.DataFrame(rows)


def pass_at_k_curves(counts: pd.DataFrame, ks: Sequence[int] | None = None) -> pd.DataFrame:
    """Macro Pass@k (percent, unbiased) per variant (column ``method``, as the Pass@k panel reads it),
    seed and k (default 1, 2, 4, ..., n), in column ``value``."""
    curves = pass_at_k_curves_from_counts(counts.rename(columns={"variant": "method"}), ks)
    return curves[curves["benchmark"] == AVERAGE].drop(columns="benchmark").reset_index(drop=True)


def change_from_base(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and k: mean change of Pass@k from the base student, paired by seed (the base sampled with
    that seed's sampling seed), and its t half-width over seeds."""
    base = curves[curves["method"] == BASE].set_index(["seed", "k"])["value"]
    delta = curves[curves["method"] != BASE]
    delta = delta.assign(change=delta["value"].to_numpy() - base.reindex(pd.MultiIndex.from_frame(
        delta[["seed", "k"]])).to_numpy()).dropna(subset=["change"])
    rows = [{"method": method, "k": k, "change": float(part["change"].mean()),
             "ci": t_interval(part["change"].to_numpy())[0]}
            for (method, k), part in delta.groupby(["method", "k"], sort=False)]
    return pd.DataFrame(rows)


@dataclass
class ExperimentResult:
    """What one experiment measured: counts, per-seed scores, the summary and (where defined) a paired
    difference; ``timings`` lists the training runs this call made, ``wall_seconds`` what the counts cost."""

    name: str
    counts: pd.DataFrame
    scores: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame | None
    curves: pd.DataFrame | None = None
    timings: pd.DataFrame = field(default_factory=pd.DataFrame)
    wall_seconds: dict[str, float] = field(default_factory=dict)
    """What producing the counts cost (:func:`wall_cost`)."""


def analyse(name: str, counts: pd.DataFrame, n: int) -> ExperimentResult:
    """Tables of one experiment from its per-problem counts (no sampling)."""
    variants = variants_of(name)
    scores = per_seed_scores(counts, k=n)
    pairs = PAIRED.get(name, ())
    paired = pd.concat([paired_difference(scores, a, b) for a, b in pairs], ignore_index=True) if pairs else None
    # The Pass@k paradox is read off the main experiment's checkpoints: Pass@1 up to Pass@n, before and after.
    curves = pass_at_k_curves(counts) if name == "main" else None
    return ExperimentResult(name, counts, scores, summary_table(scores, variants), paired, curves)


def run(name: str, cfg: ExperimentConfig = ExperimentConfig(), progress: bool = True) -> ExperimentResult:
    """Train what is missing and sample every checkpoint of experiment ``name`` (both resumable)."""
    variants = variants_of(name)
    started = time.perf_counter()
    timings = train_all(variants, cfg, progress)
    trained_s = time.perf_counter() - started
    started = time.perf_counter()
    result = analyse(name, count_all(variants, cfg, progress), cfg.n)
    sampled_s = time.perf_counter() - started
    result.timings = timings
    result.wall_seconds = wall_cost([cfg.run_dir(v, s) for v in variants if v.method != BASE for s in cfg.seeds],
                                    [cfg.sample_dir(v, s) for v in variants for s in cfg.seeds], trained_s, sampled_s)
    return result


def wall_cost(run_dirs: Sequence[Path], sample_dirs: Sequence[Path], training_s: float,
              sampling_s: float) -> dict[str, float]:
    """What producing counts cost: this call's training and sampling seconds, and the sum of every training run's
    and sampling job's own wall time, from their manifests (so a call that resumes finished work still counts it)."""
    def total(folders: Sequence[Path]) -> float:
        seconds = 0.0
        for folder in folders:
            manifest = read_manifest(folder)
            start, end = manifest.get("started_at"), manifest.get("finished_at")
            if start and end:
                seconds += (pd.Timestamp(end) - pd.Timestamp(start)).total_seconds()
        return round(seconds, 1)

    return {"training_this_call_s": round(training_s, 1), "training_runs_wall_s_sum": total(run_dirs),
            "sampling_this_call_s": round(sampling_s, 1), "sampling_jobs_wall_s_sum": total(sample_dirs)}


def manifest_config(name: str, cfg: ExperimentConfig) -> dict[str, Any]:
    """What the committed counts of experiment ``name`` were made with (paths are not part of it)."""
    return {"experiment": name, "variants": [asdict(v) for v in variants_of(name)],
            **{k: v for k, v in asdict(cfg).items() if k not in ("runs", "samples", "results")}}


def read_counts(name: str, results: Path = EXPERIMENT_RESULTS) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An experiment's committed counts and its manifest config."""
    folder = results / name
    if not (folder / COUNTS_FILE).is_file():
        raise UserError(f"no counts for experiment {name!r} in {folder}; run `make toy-{name}` first")
    counts = check_recorded(folder / COUNTS_FILE, f"restore it (git checkout) or run `make toy-{name}` again")
    return pd.read_csv(counts, dtype={"problem_id": str}), read_manifest(folder).get("config", {})
