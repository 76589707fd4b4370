"""Where an evaluation's samples and tables live: one folder per setting, named by one function.

Every setting that changes the samples names its own folders, so a run at n=8 neither overwrites the
n=32 samples nor is refused for disagreeing with them: the toy world at its default settings (n=32, the
tiers' registered token limit, 10 problems a tier, transformers) keeps the committed
``results/toy/samples`` and ``results/tables``; any other toy setting goes to
``results/runs/toy-eval/<settings>`` and ``results/tables/toy/<settings>``; a real run goes to
``results/runs/eval/<model>/<settings>``, and runs of other subsets of the benchmarks beside it merge
into its one table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.data import REAL_BENCHMARKS, TOY_BENCHMARKS, suite_generation
from workbench.errors import UserError
from workbench.layout import REPO_ROOT, TABLES, TOY_RUNS
from workbench.runs import MANIFEST, read_manifest

if TYPE_CHECKING:
    from eval.generate import UnitSize
    from workbench.models import SamplingConfig

log = logging.getLogger(__name__)

BASE_METHOD = "base"
TOY_SIZE = 10  # problems per tier: 13 checkpoints x 60 problems x 32 samples run in a few minutes on 2 cores
TOY_UNIT_SIZE = 20
MODEL_ALIASES = {"smollm2": "smollm2-135m-instruct"}
VLLM_UNIT_SIZE = 32
"""Problems per resumable unit on vLLM or a server: 32 problems x 32 samples keep a GPU's batch full,
and a killed run loses at most one unit per worker."""
SUBSET_MARK = "_only-"
_SEED_DIR = re.compile(r"seed(\d+)")
# A hub repository id as huggingface_hub accepts it: "org/name", word characters, '-' and '.'.


@dataclass(frozen=True)
class Checkpoint:
    """A toy model to evaluate: the method that trained it, its training seed, its HF folder."""

    method: str
    seed: int
    path: Path


def repo_path(path: Path) -> str:
    """Paths inside the repository are recorded relative to it, so manifests do not name a machine."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def discover_checkpoints(runs_root: str | Path = TOY_RUNS, base: str | Path | None = None) -> list[Checkpoint]:
    """The base student, then every finished ``<runs_root>/<method>/seed<k>/model`` (method, then seed order).

    A run whose manifest says "running" or "failed" is left out with a warning: its model folder may be
    a half-written or unfinished checkpoint. ``base`` defaults to the committed toy student.
    """
    if base is None:
        from workbench.toy import STUDENT_DIR

        base = STUDENT_DIR
    base = Path(base)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"base student not found at {base} (no config.json); run `make toy-models`")
    found = [Checkpoint(BASE_METHOD, 0, base)]
    root = Path(runs_root)
    if not root.is_dir():
        log.info("no trained toy runs under %s: evaluating the base student only", root)
        return found
    trained = []
    for seed_dir in sorted(root.glob("*/seed*")):
        match = _SEED_DIR.fullmatch(seed_dir.name)
        model = seed_dir / "model"
        if match is None or not (model / "config.json").is_file():
            continue
        status = read_manifest(seed_dir).get("status") if (seed_dir / MANIFEST).is_file() else None
        if status in ("running", "failed", "interrupted"):
            log.warning("skipping %s: its run manifest says %r", model, status)
            continue
        if seed_dir.parent.name == BASE_METHOD:
            raise UserError(f"{seed_dir}: method name {BASE_METHOD!r} is reserved for the untrained student")
        trained.append(Checkpoint(seed_dir.parent.name, int(match.group(1)), model))
    found += sorted(trained, key=lambda c: (c.method, c.seed))
    log.info("found %d toy checkpoints: %s", len(found), ", ".join(f"{c.method}/seed{c.seed}" for c in found))
    return found


def toy_generation() -> SamplingConfig:
    """The toy tiers' sampling defaults (their registry entries)."""
    return suite_generation(TOY_BENCHMARKS)


def real_generation() -> SamplingConfig:
    """The real benchmarks' sampling defaults: the paper's protocol (their registry entries)."""
    return suite_generation(REAL_BENCHMARKS)


def settings_name(n: int, max_new_tokens: int, scope: str, engine: str, unit_size: UnitSize | None,
                  default_unit: UnitSize, benchmarks: Sequence[str] | None, suite: Sequence[str]) -> str:
    """The one rule that names a setting's folder: samples per problem, token limit and the problems'
    ``scope`` (``size10``, ``limit2_seed0``), then the engine, the unit size and a subset of the suite
    (``_only-aime24+math500``), each only where it is not the default."""
    subset = list(benchmarks or [])
    return (f"n{n}_tok{max_new_tokens}_{scope}" + ("" if engine == "hf" else f"_{engine}")
            + ("" if unit_size in (None, default_unit) else f"_unit{unit_size}")
            + (SUBSET_MARK + "+".join(subset) if subset and set(subset) != set(suite) else ""))


def toy_settings(n: int, max_new_tokens: int, toy_size: int, unit_size: UnitSize = TOY_UNIT_SIZE,
                 engine: str = "hf", benchmarks: Sequence[str] | None = None, seed: int = 0) -> str | None:
    """The folder name of a toy evaluation's settings, None for the default ones (the committed folders);
    a sampling ``seed`` other than the registered one is part of the name."""
    defaults = toy_generation()
    scope = f"size{toy_size}" + ("" if seed == defaults.seed else f"_seed{seed}")
    name = settings_name(n, max_new_tokens, scope, engine, unit_size, TOY_UNIT_SIZE, benchmarks, TOY_BENCHMARKS)
    default = settings_name(defaults.n, defaults.max_new_tokens, f"size{TOY_SIZE}", "hf", None, TOY_UNIT_SIZE,
                            None, TOY_BENCHMARKS)
    return None if name == default else name


def default_unit_size(engine: str) -> UnitSize:
    """Problems per unit: small on transformers (it batches one unit at a time), larger on vLLM engines."""
    from eval.generate import DEFAULT_UNIT_SIZE

    return DEFAULT_UNIT_SIZE if engine == "hf" else VLLM_UNIT_SIZE


def real_settings(n: int, max_new_tokens: int, limit: int | None, seed: int, engine: str = "hf",
                  unit_size: UnitSize | None = None, benchmarks: Sequence[str] | None = None) -> str:
    """The folder name of a real run's settings."""
    return settings_name(n, max_new_tokens, f"limit{limit or 'all'}_seed{seed}", engine, unit_size,
                         default_unit_size(engine), benchmarks, REAL_BENCHMARKS)


def toy_folders(checkpoints: Sequence[Checkpoint], samples_root: str | Path) -> list[Path]:
    """Where each checkpoint's samples go: ``<samples_root>/<method>/seed<k>``."""
    return [Path(samples_root) / c.method / f"seed{c.seed}" for c in checkpoints]


def model_label(model: str, gguf_file: str | None = None) -> str:
    """A short, file-name-safe model name: the alias, the GGUF file's stem or the last path part."""
    name = MODEL_ALIASES.get(model) or (Path(gguf_file).stem if gguf_file else Path(model.rstrip("/")).name)
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")


def real_folder(model: str, samples_root: str | Path, *, n: int, max_new_tokens: int, limit: int | None,
                seed: int, engine: str = "hf", label: str | None = None, gguf_file: str | None = None,
                unit_size: UnitSize | None = None, benchmarks: Sequence[str] | None = None) -> Path:
    """``<samples_root>/<label>/<settings>``: differently sized runs, other engines or other subsets of
    the benchmarks never meet (subsets meet again in one table: :func:`subset_folders`)."""
    return (Path(samples_root) / (label or model_label(model, gguf_file))
            / real_settings(n, max_new_tokens, limit, seed, engine, unit_size, benchmarks))


def subset_folders(folder: Path) -> list[Path]:
    """A real run's folder and its siblings that sampled other subsets of the benchmarks with the same
    model and settings: the sample folders one table is built from."""
    base = folder.name.split(SUBSET_MARK)[0]
    siblings = [f for f in sorted(folder.parent.glob(f"{base}*")) if f.is_dir() and (f / MANIFEST).is_file()
                and (f.name == base or f.name.startswith(base + SUBSET_MARK))]
    return siblings or [folder]


def check_subsets(folder: Path, benchmarks: Sequence[str]) -> None:
    """Refuse, before sampling, a subset run that would sample a benchmark one of its siblings holds."""
    for sibling in subset_folders(folder):
        if sibling == folder:
            continue
        held = sorted(set(read_manifest(sibling).get("config", {}).get("benchmarks", {})) & set(benchmarks))
        if held:
            raise UserError(f"{repo_path(sibling)} already holds {', '.join(held)} for this model and settings; "
                            "leave them out of --benchmarks (its table merges both runs)")


def real_tables_dir(label: str, settings: str) -> Path:
    """``results/tables/real/<model>/<settings>``: one real run's tables."""
    return TABLES / "real" / label / settings


def real_tables_of(dirs: Sequence[Path], root: Path) -> Path:
    """Where the tables of real sample folders go: one run's own folder, named from its manifest (so a
    copy of its samples, e.g. committed beside its tables, finds the same tables), else
    ``results/tables/real/<root name>``."""
    config = read_manifest(dirs[0]).get("config", {}) if len(dirs) == 1 else {}
    sampling, extra = config.get("sampling", {}), config.get("extra", {})
    if not (extra.get("method") and "n" in sampling and "max_new_tokens" in sampling):
        return TABLES / "real" / Path(root).resolve().name
    return real_tables_dir(extra["method"], real_settings(
        sampling["n"], sampling["max_new_tokens"], extra.get("limit"), sampling.get("seed", 0),
        extra.get("backend", "hf"), config.get("unit_size")))  # every subset of one run: one table


def toy_tables_dir(settings: str | None) -> Path:
    """``results/tables`` for the default toy settings, ``results/tables/toy/<settings>`` for others."""
    return TABLES if settings is None else TABLES / "toy" / settings


def toy_settings_of(dirs: Sequence[Path], root: Path) -> str | None:
    """The settings name shared by toy sample folders, from their manifests (the root's name if mixed)."""
    names = set()
    for folder in dirs:
        config = read_manifest(folder).get("config", {})
        sampling, extra = config.get("sampling", {}), config.get("extra", {})
        names.add(toy_settings(sampling.get("n"), sampling.get("max_new_tokens"), extra.get("toy_size"),
                               config.get("unit_size"), extra.get("backend", "hf"), list(config.get("benchmarks", {}))))
    return names.pop() if len(names) == 1 else Path(root).resolve().name
