"""The spread dial's dose-response: does SCOPE's weighting matter more when the weights have more to weigh?

The same variants and seeds are trained in every dial world, so the SCOPE - uniform gap can be read
against each world's ESS/n. Variants, controls and what is committed: docs/toy-dial.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.experiments import (
    BASE, COUNTS_COMPRESSION, COUNTS_FILE, Variant, _map, paired_difference, per_seed_scores, summary_table,
    t_interval, wall_cost,
)
from workbench.errors import UserError
from workbench.layout import RUNS, TOY_RUNS, TOY_TIERS
from workbench.runs import is_finished, read_manifest, run_folder
from workbench.toy import DIAL_DIR, DIAL_WORLDS, dial_student_dir

log = logging.getLogger(__name__)

DOSE_RUNS = TOY_RUNS / "dial"
DOSE_SAMPLES = RUNS / "toy-dial"
TRACES_FILE = "traces.csv.gz"
PASS_LABEL = "Pass@{n} (unbiased, Chen et al.)"
AVG_LABEL = "Avg@{n}"
# The comparisons of the dose-response, each a - b over the seeds both have (same seed: same prompts).
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("scope", "scope-uniform"),
    ("scope", "opd"),
    ("scope", "opd-32x1"),
    ("scope", "opd-8xsteps"),
    ("opd-32x1", "opd"),
    ("opd-8xsteps", "opd"),
)


@dataclass(frozen=True)
class DoseConfig:
    """How big one world's dose-response run is; every field enters the manifest.

    seeds: training seeds (and the base student's sampling seeds). max_steps: steps of every trained variant
    (the 8x-steps control takes 8 times as many). heldout_*: the learning curve (held-out test accuracy every
    ``heldout_every`` steps on ``heldout_problems_per_tier`` problems a tier, ``heldout_samples`` samples each).
    problems_per_tier, n: the final checkpoint's evaluation (Avg@n, Pass@n). workers: processes at once.
    controls: also train the two compute-matched OPD controls (they answer a question about sample count,
    not about the spread, so one world is enough for them when CPU is short).
    Sized for 2 shared CPU cores (about 30 checkpoints a world; sampling one at n = 16 took 100 s under
    load): n = 4 (not the paper's 32; Avg@4 over 300 problems, and Pass@4) and a learning curve on 10 problems
    a tier (240 samples a point; the seeds average it).
    """

    world: str = "low"
    seeds: tuple[int, ...] = tuple(range(5))
    max_steps: int = 32
    heldout_every: int = 8
    heldout_problems_per_tier: int = 10
    heldout_samples: int = 4
    problems_per_tier: int = 50
    n: int = 4
    workers: int = 2
    controls: bool = True
    tiers: tuple[str, ...] = TOY_TIERS
    runs: Path = DOSE_RUNS
    samples: Path = DOSE_SAMPLES
    results: Path = DIAL_DIR

    def __post_init__(self) -> None:
        if self.world not in DIAL_WORLDS:
            raise UserError(f"unknown dial world {self.world!r}; expected one of {', '.join(DIAL_WORLDS)}")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"the dose-response needs at least 2 distinct seeds, got {list(self.seeds)}")
        for name in ("max_steps", "heldout_every", "heldout_problems_per_tier", "heldout_samples",
                     "problems_per_tier", "n", "workers"):
            if getattr(self, name) < 1:
                raise UserError(f"dose-response: {name} must be at least 1, got {getattr(self, name)}")
        unknown = sorted(set(self.tiers) - set(TOY_TIERS))
        if unknown:
            raise UserError(f"dose-response: unknown toy tiers {unknown}; expected some of {', '.join(TOY_TIERS)}")

    @property
    def tag(self) -> str:
        return (f"steps{self.max_steps}_h{self.heldout_every}x{self.heldout_problems_per_tier}x"
                f"{self.heldout_samples}")

    def run_dir(self, variant: Variant, seed: int) -> Path:
        return self.runs / self.world / self.tag / variant.name / f"seed{seed}"

    def sample_dir(self, variant: Variant, seed: int) -> Path:
        return (self.samples / self.world / f"{self.tag}_n{self.n}_p{self.problems_per_tier}_"
                f"{'-'.join(self.tiers)}" / variant.name / f"seed{seed}")

    @property
    def out(self) -> Path:
        return self.results / self.world / "dose"

    def student(self) -> Path:
        path = dial_student_dir(self.world)
        if not (path / "config.json").is_file():
            raise UserError(f"no student for dial world {self.world!r} at {path}; build it with make toy-dial-worlds")
        return path


def variants(cfg: DoseConfig) -> tuple[Variant, ...]:
    """The dose-response's variants; rollouts a step: SCOPE 4 x 8, OPD 4 x 1, OPD-32x1 32 x 1."""
    steps8 = str(8 * cfg.max_steps)
    every = (
        Variant(BASE, BASE, label="base student"),
        Variant("scope", "scope", label="SCOPE"),
        Variant("scope-uniform", "scope", ("--ablation", "no_dpaw_uniform_weights"), "SCOPE, uniform weights"),
        Variant("opd", "opd", label="OPD (4 prompts x 1)"),
        Variant("opd-32x1", "opd", ("--per_device_train_batch_size", "32"), "OPD, 32 prompts x 1"),
        Variant("opd-8xsteps", "opd", ("--max_steps", steps8, "--heldout_every", str(8 * cfg.heldout_every)),
                "OPD, 8x steps"),
    )
    return every if cfg.controls else tuple(v for v in every if v.name not in ("opd-32x1", "opd-8xsteps"))


def _overrides(variant: Variant, cfg: DoseConfig) -> list[str]:
    # later flags win, so a variant's own --max_steps / --heldout_every replace the common ones
    return ["--model_name_or_path", str(cfg.student()), "--max_steps", str(cfg.max_steps),
            "--heldout_every", str(cfg.heldout_every), "--heldout_problems_per_tier",
            str(cfg.heldout_problems_per_tier), "--heldout_samples", str(cfg.heldout_samples), *variant.overrides]


def _train(variant: Variant, seed: int, folder: Path, overrides: list[str], world: str) -> float:
    """Train one (variant, seed) into ``folder`` in this process; returns the wall seconds."""
    import torch

    from train.methods import train_toy_run

    torch.set_num_threads(1)
    logging.getLogger("workbench.grading").setLevel(logging.WARNING)
    start = time.perf_counter()
    train_toy_run(variant.method, seed, folder, overrides, variant=variant.name, world=world)
    return time.perf_counter() - start


def _sample(model: str, folder: Path, cfg: DoseConfig, sample_seed: int) -> pd.DataFrame:
    """Per-problem (n, c) of one checkpoint on the test tiers (resumable)."""
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


def trace_of(folder: Path) -> pd.DataFrame:
    """Per logged step of one run: held-out accuracy (%), ESS/n of each path's weights (mean ESS over the
    step's subsets / mean subset size, as the trainer logs them), rollouts and completion tokens per update."""
    rows = [json.loads(line) for line in (folder / "log_history.jsonl").read_text().splitlines() if line]
    cfg = read_manifest(folder)["config"]
    rollouts = int(cfg["per_device_train_batch_size"]) * int(cfg.get("gradient_accumulation_steps", 1))
    out = []
    for row in rows:
        if "step" not in row:
            continue
        rec: dict[str, Any] = {"step": int(row["step"])}
        held = [k for k in row if k.startswith("heldout/")]
        if held:
            rec["heldout"] = 100.0 * float(row[held[0]])
        for path in ("mle", "opd"):
            if f"weights/ess_{path}" in row and row.get(f"weights/size_{path}"):
                rec[f"ess_frac_{path}"] = float(row[f"weights/ess_{path}"]) / float(row[f"weights/size_{path}"])
        if "completions/mean_length" in row:
            rec["rollouts_per_update"] = rollouts
            rec["completion_tokens_per_update"] = rollouts * float(row["completions/mean_length"])
        if len(rec) > 1:
            out.append(rec)
    frame = pd.DataFrame(out)
    return frame.groupby("step", as_index=False).first() if not frame.empty else frame


@dataclass
class DoseResult:
    """One world's dose-response: counts, per-seed scores, summary, paired differences (Holm-adjusted),
    per-step traces and the wall times of what this call ran."""

    world: str
    counts: pd.DataFrame
    traces: pd.DataFrame
    scores: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    compute: pd.DataFrame
    timings: dict[str, float]


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control, any dependence); NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def analyse(world: str, counts: pd.DataFrame, traces: pd.DataFrame, n: int,
            variant_list: Sequence[Variant]) -> DoseResult:
    """Tables of one world from its counts and traces (no sampling)."""
    scores = per_seed_scores(counts, k=n)
    summary = summary_table(scores, variant_list)
    names = set(scores["variant"])
    pairs = [p for p in COMPARISONS if set(p) <= names]
    pairs += [(v.name, BASE) for v in variant_list if v.name != BASE and {v.name, BASE} <= names]
    paired = pd.concat([paired_difference(scores, a, b) for a, b in pairs], ignore_index=True)
    # Holm over the family this table tests: every comparison on the Average, per metric.
    paired["p_holm"] = np.nan
    for metric in ("avg", "pass"):
        rows = (paired["benchmark"] == "Average") & (paired["metric"] == metric)
        paired.loc[rows, "p_holm"] = holm(paired.loc[rows, "p_value"].to_numpy())
    compute = compute_table(traces, variant_list)
    return DoseResult(world, counts, traces, scores, summary, paired, compute, {})


def compute_table(traces: pd.DataFrame, variant_list: Sequence[Variant]) -> pd.DataFrame:
    """Per variant: steps, rollouts and completion tokens per update and in total (mean over seeds), and the
    mean ESS/n of each path's weights over the run's steps."""
    rows = []
    for v in variant_list:
        part = traces[traces["variant"] == v.name] if not traces.empty else traces
        if part.empty:
            continue
        steps = part[part["rollouts_per_update"].notna()] if "rollouts_per_update" in part else part.iloc[:0]
        per_seed = steps.groupby("seed").agg(steps=("step", "max"), rollouts=("rollouts_per_update", "mean"),
                                            tokens=("completion_tokens_per_update", "mean"),
                                            total=("completion_tokens_per_update", "sum"))
        row = {"variant": v.name, "label": v.display, "steps": float(per_seed["steps"].mean()),
               "rollouts_per_update": float(per_seed["rollouts"].mean()),
               "completion_tokens_per_update": float(per_seed["tokens"].mean()),
               "rollouts_total": float((per_seed["steps"] * per_seed["rollouts"]).mean()),
               "completion_tokens_total": float(per_seed["total"].mean())}
        for path in ("mle", "opd"):
            column = f"ess_frac_{path}"
            row[f"train_ess_frac_{path}"] = float(part[column].mean()) if column in part else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg: DoseConfig, progress: bool = True) -> DoseResult:
    """Train what is missing, sample every final checkpoint and the base student (all resumable)."""
    variant_list = variants(cfg)
    trained = [v for v in variant_list if v.method != BASE]
    started = time.perf_counter()
    # seed by seed, so a run stopped early leaves whole seeds (every variant) to report with fewer --seeds
    todo = [(v, s) for s in cfg.seeds for v in trained if not is_finished(cfg.run_dir(v, s))]
    _map([(_train, (v, s, cfg.run_dir(v, s), _overrides(v, cfg), cfg.world)) for v, s in todo], cfg.workers,
         f"training ({cfg.world})", progress)
    trained_s = time.perf_counter() - started
    jobs, keys = [], []
    for v in variant_list:
        for s in cfg.seeds:
            model = str(cfg.student()) if v.method == BASE else str(cfg.run_dir(v, s) / "model")
            # trained checkpoints share sampling seed 0 (common random numbers); the base takes seed s
            jobs.append((_sample, (model, cfg.sample_dir(v, s), cfg, s if v.method == BASE else 0)))
            keys.append((v.name, s))
    started = time.perf_counter()
    sampled = _map(jobs, cfg.workers, f"sampling ({cfg.world})", progress)
    sampled_s = time.perf_counter() - started
    counts = pd.concat([f.assign(variant=name, seed=s) for (name, s), f in zip(keys, sampled)],
                       ignore_index=True)[["variant", "seed", "benchmark", "problem_id", "n", "c"]]
    traces = pd.concat([trace_of(cfg.run_dir(v, s)).assign(variant=v.name, seed=s) for v in trained
                        for s in cfg.seeds], ignore_index=True)
    result = analyse(cfg.world, counts, traces, cfg.n, variant_list)
    result.timings = wall_cost([cfg.run_dir(v, s) for v in trained for s in cfg.seeds],
                               [cfg.sample_dir(v, s) for v in variant_list for s in cfg.seeds], trained_s, sampled_s)
    return result


def manifest_config(cfg: DoseConfig) -> dict[str, Any]:
    return {"experiment": "dose-response", "variants": [asdict(v) for v in variants(cfg)],
            "student": str(cfg.student()),
            **{k: v for k, v in asdict(cfg).items() if k not in ("runs", "samples", "results")}}


def _cell(mean: float, half: float) -> str:
    return f"{mean:.1f}" if not np.isfinite(half) else f"{mean:.1f} ± {half:.1f}"


def markdown(result: DoseResult, cfg: DoseConfig, spread_ess: dict[str, float] | None = None) -> str:
    """One world's tables: final scores, paired differences with Holm, compute per update, learning curves."""
    n = cfg.n
    avg = result.summary[result.summary["benchmark"] == "Average"]
    final = pd.DataFrame({"variant": avg["label"], "seeds": avg["seeds"],
                          AVG_LABEL.format(n=n): [_cell(m, h) for m, h in zip(avg["avg"], avg["avg_ci"])],
                          PASS_LABEL.format(n=n): [_cell(m, h) for m, h in zip(avg["pass"], avg["pass_ci"])]})
    paired = result.paired[result.paired["benchmark"] == "Average"].copy()
    paired["metric"] = paired["metric"].map({"avg": AVG_LABEL.format(n=n), "pass": PASS_LABEL.format(n=n)})
    curves = learning_curves(result.traces)
    ess = "" if not spread_ess else (
        f"ESS/n of this world's weights at tau = 1 on the base student's rollouts (make toy-dial-spread): "
        f"MLE path {spread_ess['mle']:.3f}, OPD path {spread_ess['opd']:.3f}.")
    return "\n".join([
        f"# Dose-response in dial world {result.world!r}", "",
        f"{len(cfg.seeds)} seeds; {cfg.max_steps} steps"
        f"{f' (OPD, 8x steps: {8 * cfg.max_steps})' if cfg.controls else ''}; final checkpoints "
        f"sampled n = {n} on {cfg.problems_per_tier} test problems per tier ({', '.join(cfg.tiers)}). The base "
        f"student is sampled with {len(cfg.seeds)} sampling seeds, paired with the training seeds, so its "
        "sampling noise is inside every method - base interval. Cells: mean over seeds ± 95 % Student-t "
        "half-width, macro Average over tiers.", "", ess, "",
        "## Final checkpoint", "", final.to_markdown(index=False), "",
        "## Paired differences (Average over tiers; p_holm: Holm-adjusted over this table's comparisons of "
        "one metric)", "",
        paired[["comparison", "metric", "difference", "ci", "p_value", "p_holm", "seeds", "detectable"]]
        .round({"difference": 2, "ci": 2, "p_value": 4, "p_holm": 4, "detectable": 2}).to_markdown(index=False), "",
        "## Compute per update and ESS/n of the weights during training (mean over seeds and steps)", "",
        result.compute.drop(columns="variant").round(3).to_markdown(index=False), "",
        "## Learning curves: held-out accuracy (%) by step, mean ± 95 % t half-width over seeds", "",
        curves.to_markdown(index=False) if not curves.empty else "(no held-out points)", "",
    ])


def learning_curves(traces: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy by variant and step, "mean ± half-width" over seeds (wide: one column per variant)."""
    if traces.empty or "heldout" not in traces:
        return pd.DataFrame()
    held = traces.dropna(subset=["heldout"])
    cells = []
    for (variant, step), part in held.groupby(["variant", "step"], sort=True):
        half, _ = t_interval(part["heldout"].to_numpy())
        cells.append({"variant": variant, "step": step, "cell": _cell(float(part["heldout"].mean()), half)})
    wide = pd.DataFrame(cells).pivot(index="step", columns="variant", values="cell").reset_index()
    return wide.fillna("")


def save(result: DoseResult, cfg: DoseConfig, spread_ess: dict[str, float] | None = None,
         **manifest: Any) -> Path:
    """Counts, traces, tables and the manifest of one world's dose-response (traces as committed: 6 decimals,
    so the tables drawn here are the ones :func:`load` draws again)."""
    out = cfg.out
    started = time.perf_counter()
    result.traces = result.traces.round(6)
    text = markdown(result, cfg, spread_ess)
    result.timings["reporting_s"] = round(time.perf_counter() - started, 2)
    with run_folder(out, manifest_config(cfg), None, kind="toy-dose-response", wall_seconds=result.timings,
                    **manifest):
        result.counts.to_csv(out / COUNTS_FILE, index=False, compression=COUNTS_COMPRESSION)
        result.traces.to_csv(out / TRACES_FILE, index=False, compression=COUNTS_COMPRESSION)
        result.summary.round(3).to_csv(out / "summary.csv", index=False)
        result.paired.round(4).to_csv(out / "paired.csv", index=False)
        result.compute.round(3).to_csv(out / "compute.csv", index=False)
        (out / "table.md").write_text(text)
    return out


def load(world: str, results: Path = DIAL_DIR) -> tuple[DoseResult, DoseConfig]:
    """One world's tables recomputed from its committed counts and traces (no model, nothing written)."""
    folder = results / world / "dose"
    if not (folder / COUNTS_FILE).is_file():
        raise UserError(f"no dose-response counts for world {world!r} in {folder}; run `make toy-dial` first")
    config = read_manifest(folder)["config"]
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()
              if k in DoseConfig.__dataclass_fields__ and k not in ("runs", "samples", "results")}
    cfg = DoseConfig(results=results, **fields)
    counts = pd.read_csv(folder / COUNTS_FILE, dtype={"problem_id": str})
    traces = pd.read_csv(folder / TRACES_FILE)
    return analyse(world, counts, traces, cfg.n, variants(cfg)), cfg


def dose_response(results: Path = DIAL_DIR) -> pd.DataFrame:
    """Across worlds: ESS/n of the MLE and OPD paths (tau 1, base student) beside the SCOPE - uniform and
    SCOPE - OPD gaps (Average Avg@n, paired over seeds), and the SCOPE - uniform test's p-value, raw and
    Holm-adjusted over the worlds; worlds without a dose-response run are left out."""
    rows = []
    for world in DIAL_WORLDS:
        folder = results / world / "dose"
        if not (folder / COUNTS_FILE).is_file():
            continue
        paired = pd.read_csv(folder / "paired.csv")
        ess = spread_ess_of(world, results)
        row: dict[str, Any] = {"world": world, "mle_ess_frac": ess.get("mle", np.nan),
                               "opd_ess_frac": ess.get("opd", np.nan)}
        for a, b in (("scope", "scope-uniform"), ("scope", "opd"), ("opd-32x1", "opd")):
            cell = paired[(paired["comparison"] == f"{a} - {b}") & (paired["benchmark"] == "Average")
                          & (paired["metric"] == "avg")]
            if not cell.empty:
                row[f"{a} - {b}"] = float(cell["difference"].iat[0])
                row[f"{a} - {b} ci"] = float(cell["ci"].iat[0])
                row["seeds"] = int(cell["seeds"].iat[0])
                if b == "scope-uniform":
                    row["scope - scope-uniform p"] = float(cell["p_value"].iat[0])
        rows.append(row)
    table = pd.DataFrame(rows)
    if "scope - scope-uniform p" in table:
        # the dose-response asks the same question in every world: Holm over the worlds' tests
        table["scope - scope-uniform p_holm_worlds"] = holm(table["scope - scope-uniform p"].to_numpy())
    return table


def gap_contrast(results: Path, low: str, high: str) -> dict[str, float]:
    """(SCOPE - uniform gap in world ``high``) - (gap in world ``low``): Welch interval over the per-seed gaps
    (the worlds have different students, so seeds do not pair across them)."""
    gaps = {}
    for world in (low, high):
        result, _ = load(world, results)
        s = result.scores[result.scores["benchmark"] == "Average"].pivot(index="seed", columns="variant",
                                                                          values="avg")
        gaps[world] = (s["scope"] - s["scope-uniform"]).dropna().to_numpy()
    a, b = gaps[high], gaps[low]
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else np.inf
    half = float(stats.t.ppf(0.975, df) * se) if se > 0 else 0.0
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue) if se > 0 else np.nan
    return {"difference": diff, "ci": half, "p_value": p, "df": float(df)}


def spread_folder(world: str, results: Path = DIAL_DIR) -> Path:
    """Where a world's spread measurement is committed (the committed world's is the toy world's own)."""
    from workbench.layout import TOY_RESULTS

    return TOY_RESULTS / "spread" if world == "low" else results / world / "spread"


def per_rollout_of(world: str, results: Path = DIAL_DIR) -> pd.DataFrame:
    """Every base-student rollout of a world's spread measurement, with its correctness and both log-PPLs."""
    from analysis.spread import read_per_rollout

    return read_per_rollout(spread_folder(world, results) / "per_rollout.parquet")


def spread_ess_of(world: str, results: Path = DIAL_DIR) -> dict[str, float]:
    """ESS/n at tau 1 per path (mean over all subsets) of a world's committed spread measurement."""
    path = spread_folder(world, results) / "ess.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    at1 = table[table["tau"] == 1.0].set_index("path")["ess_frac_mean"]
    return {p: float(v) for p, v in at1.items()}


def quick(cfg: DoseConfig) -> DoseConfig:
    """A tiny end-to-end version (2 seeds, 2 steps, 2 tiers) for CI: every stage, minutes on 2 cores."""
    return replace(cfg, seeds=(0, 1), max_steps=2, heldout_every=1, heldout_problems_per_tier=1, heldout_samples=1,
                   problems_per_tier=2, n=2, tiers=("toy-1", "toy-2"))
