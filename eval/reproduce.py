"""Reproduce the paper's six-benchmark tables (Avg@k, Pass@k) on the toy world or on a real model.

    python -m eval.reproduce                                  # toy
    python -m eval.reproduce --model smollm2 --limit 2 --n 8 --max-new-tokens 256
    python -m eval.reproduce --from-samples results/toy/samples

The command line only: every mode builds its tables from the samples on disk the same way, so a rebuild
writes the same bytes. The three modes: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import shlex
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules at import time: a mistyped flag must be answered before torch, transformers or
# pandas load (seconds on a laptop). The heavy ones are imported inside the functions that need them.
from eval.folders import (
    MODEL_ALIASES,
    TOY_SIZE,
    TOY_UNIT_SIZE,
    check_subsets,
    discover_checkpoints,
    model_label,
    real_folder,
    real_generation,
    real_settings,
    real_tables_dir,
    real_tables_of,
    repo_path,
    subset_folders,
    toy_folders,
    toy_generation,
    toy_settings,
    toy_settings_of,
    toy_tables_dir,
)
from eval.running import evaluate_real, evaluate_toy, load_problems
from eval.table_sets import check_replace, find_sample_dirs, rebuild
from workbench.data import BENCHMARKS, REAL_BENCHMARKS, TOY_BENCHMARKS, suite_generation
from workbench.distributed import World, join_world, pin_gpus
from workbench.errors import UserArgumentParser, UserError, main_guard
from workbench.options import replace_checked
from workbench.layout import (
    REAL_EVAL_RUNS,
    TABLES,
    TOY_EVAL_RUNS,
    TOY_RUNS,
    TOY_SAMPLES,
)
from workbench.runs import read_manifest, run_lock

if TYPE_CHECKING:
    from eval.generate import UnitSize

log = logging.getLogger(__name__)

ENGINES = ("hf", "vllm", "server")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_LABEL = re.compile(r"[A-Za-z0-9][\w.-]*")
PROBE_BYTES = 1 << 20


def check_writable(folder: Path, flag: str) -> None:
    """Create ``folder`` and write, sync and delete a 1 MiB file in it, so a read-only or full disk
    stops the command now, not after hours of sampling."""
    probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with open(probe, "xb") as fh:
                fh.write(bytes(PROBE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        from workbench.errors import FULL_ERRNOS, READ_ONLY_ERRNOS

        what = ("read-only" if exc.errno in READ_ONLY_ERRNOS else "disk full" if exc.errno in FULL_ERRNOS
                else "cannot write there")
        raise UserError(f"{flag} {folder}: {what} ({exc.strerror or exc}); "
                        + ("make it writable" if what == "read-only" else "free some space")
                        + f" or pick another folder with {flag}") from None


def _positive(flag: str, value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{flag} must be a whole number >= 1 ({what}), got {value}")


def check_model(model: str, gguf_file: str | None = None) -> None:
    """A model is an alias, a local model folder, or something shaped like a hub id ("org/name").

    A path that exists nowhere would otherwise reach the hub client, which answers minutes later
    (or offline, never) with an error about repositories rather than about the typo.
    """
    if model in MODEL_ALIASES:
        return
    path = Path(model).expanduser()
    if path.is_dir():
        needed = gguf_file or "config.json"
        if not (path / needed).is_file():
            raise UserError(f"--model {model}: the folder has no {needed}, so it is not a model folder"
                            + ("" if gguf_file else " (a GGUF file needs --gguf-file)"))
        return
    if path.exists():
        raise UserError(f"--model {model} is a file; pass the model's folder (and --gguf-file for a GGUF file)")
    first = Path(model.split("/")[0]).expanduser()
    local = model.startswith((".", "/", "~")) or first.is_dir()
    if local or not _HUB_ID.fullmatch(model) or "--" in model or ".." in model:
        raise UserError(f"--model {model}: no such folder, and not a hub id of the form org/name")


def check_hub_model(model: str, gguf_file: str | None = None) -> None:
    """A model that is neither an alias nor a local folder is a hub id: it must be in the local cache or
    known to a reachable hub, checked in seconds before anything loads (offline, transformers would
    retry for half a minute and end in a traceback)."""
    if model in MODEL_ALIASES or Path(model).expanduser().is_dir():
        return
    from workbench.hub import check_hub_model as check

    check("--model", model, gguf_file or "config.json")


def _unit_size(text: str) -> UnitSize:
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 or 'all', got {text!r}")
    return value


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _check_benchmarks(names: Sequence[str], toy: bool) -> None:
    suite, registered = ("toy", TOY_BENCHMARKS) if toy else ("real", REAL_BENCHMARKS)
    unknown = [n for n in names if n not in registered]
    if unknown:
        other = [n for n in unknown if n in BENCHMARKS]
        why = f" ({', '.join(other)} {'is' if len(other) == 1 else 'are'} not a {suite} benchmark)" if other else ""
        raise UserError(f"--benchmarks: unknown {', '.join(unknown)}{why}; the {suite} ones are "
                        f"{', '.join(registered)}")
    if len(set(names)) != len(names):
        raise UserError(f"--benchmarks names a benchmark twice: {','.join(names)}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; every mistake is a UserError naming the flag."""
    p = UserArgumentParser(prog="python -m eval.reproduce", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("mode (default: every toy checkpoint)")
    mode.add_argument("--from-samples", type=Path, help="rebuild tables from the sample folders under DIR")
    mode.add_argument("--model", help="evaluate this model on the real benchmarks (hub id, folder, or 'smollm2')")
    p.add_argument("--backend", default="hf", choices=ENGINES,
                   help="sampling engine: hf (transformers), vllm (in-process engine), server (an OpenAI-compatible "
                        "vLLM server, real mode, with --base-url)")
    p.add_argument("--benchmarks", type=_names, help="comma-separated benchmarks to sample (default: all six real, "
                                                     "or all six toy tiers); runs of other subsets merge into one table")
    p.add_argument("--tensor-parallel-size", type=int, help="GPUs per vLLM engine (each torchrun worker owns this many)")
    p.add_argument("--base-url", type=_names, help="server backend: URL[,URL...] of vLLM servers (replicas of one model)")
    p.add_argument("--concurrency", type=int, help="server backend: requests in flight per worker (default 64)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="hf backend: where the model runs (default: the CPU "
                                                             "for the toy models, else a GPU when there is one)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="hf backend: weights' dtype")
    p.add_argument("--data-dir", type=Path, help="folder of the real benchmarks' JSONL files")
    p.add_argument("--limit", type=int, help="first LIMIT problems of each real benchmark")
    p.add_argument("--n", "--num-samples", dest="n", type=int, help=f"samples per problem (k of Avg@k / Pass@k; under torchrun spell it --num-samples); default: "
                                         f"{real_generation().n} real, {toy_generation().n} toy")
    p.add_argument("--max-new-tokens", type=int, help=f"default: {real_generation().max_new_tokens} real, "
                                                      f"{toy_generation().max_new_tokens} toy")
    p.add_argument("--repetition-penalty", type=float, help="default: the paper's for the model (1.0 unless Qwen3)")
    p.add_argument("--seed", type=int, default=real_generation().seed, help="sampling seed of a real run")
    p.add_argument("--gguf-file", help="GGUF file inside --model's folder")
    p.add_argument("--label", help="row label and folder name of a real run (default: from the model name)")
    p.add_argument("--unit-size", type=_unit_size, help="problems per resumable unit, or 'all'")
    p.add_argument("--toy-size", type=int, default=TOY_SIZE, help="problems per toy tier")
    p.add_argument("--runs-root", type=Path, default=TOY_RUNS, help="trained toy runs to discover")
    p.add_argument("--base", type=Path, help="base toy student (default: the committed one)")
    p.add_argument("--samples-dir", type=Path, help=f"where samples go (default {repo_path(TOY_SAMPLES)} toy at the "
                                                    f"default settings, else {repo_path(TOY_EVAL_RUNS)}/<settings>; "
                                                    f"{repo_path(REAL_EVAL_RUNS)} real)")
    p.add_argument("--tables-dir", type=Path, help=f"where tables go (default {repo_path(TABLES)}; other toy "
                                                   "settings: toy/<settings>; real runs: real/<run>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing tables even when the new ones lack some of their runs")
    p.add_argument("--no-figure", action="store_true", help="skip the Pass@k curve figure")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    p.add_argument("--check-only", action="store_true",
                   help="check the command line and the output folders, then stop (make runs this before torchrun)")
    args = p.parse_args(argv)
    if args.from_samples and args.model:
        raise UserError("--from-samples and --model are different modes; give one")
    if args.limit is not None and not args.model:
        raise UserError("--limit applies to real benchmarks (with --model)")
    if args.gguf_file and not args.model:
        raise UserError("--gguf-file applies to a real model (with --model)")
    _positive("--limit", args.limit, "problems per benchmark")
    _positive("--toy-size", args.toy_size, "problems per toy tier")
    _positive("--tensor-parallel-size", args.tensor_parallel_size, "GPUs per engine")
    _positive("--concurrency", args.concurrency, "requests in flight")
    if args.benchmarks is not None:
        if args.from_samples:
            raise UserError("--benchmarks chooses what to sample; --from-samples rebuilds tables from what is there")
        _check_benchmarks(args.benchmarks, toy=not args.model)
    # the sampling rules are SamplingConfig's; the registered protocol with these options must pass them
    replace_checked(suite_generation(args.benchmarks or (REAL_BENCHMARKS if args.model else TOY_BENCHMARKS)),
                    n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed,
                    repetition_penalty=args.repetition_penalty)
    if (args.device or args.dtype) and args.backend != "hf":
        raise UserError("--device and --dtype apply to --backend hf (vLLM picks its own)")
    if args.tensor_parallel_size not in (None, 1) and args.backend != "vllm":
        raise UserError("--tensor-parallel-size applies to --backend vllm")
    if args.backend == "server":
        if not args.model:
            raise UserError("--backend server samples a real model: give --model (the served model's name) "
                            "and --base-url")
        if not args.base_url:
            raise UserError("--backend server needs --base-url URL[,URL...] (e.g. http://node:8000)")
    elif args.base_url or args.concurrency:
        raise UserError("--base-url and --concurrency apply to --backend server")
    if args.label is not None and not _LABEL.fullmatch(args.label):
        raise UserError(f"--label {args.label!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if args.from_samples is not None and not args.from_samples.is_dir():
        raise UserError(f"--from-samples {args.from_samples}: no such folder")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} (DATA_DIR= in make): no such folder; give the folder of "
                        "the six benchmark JSONL files, or leave it unset to read them from the hub")
    if args.base is not None and not (args.base / "config.json").is_file():
        raise UserError(f"--base {args.base}: not a model folder (no config.json)")
    if args.model and args.backend != "server":
        check_model(args.model, args.gguf_file)
    if args.backend == "vllm" and not args.from_samples and importlib.util.find_spec("vllm") is None:
        raise UserError("--backend vllm needs vLLM, which this Python lacks: run `make setup-vllm`, then use "
                        ".venv-vllm/bin/python (make reproduce-tables BACKEND=vllm does)")
    return args


def _resume_command(argv: Sequence[str]) -> str:
    return shlex.join([sys.executable, "-m", "eval.reproduce", *argv])


def _kept(folders: Sequence[Path]) -> tuple[int, int]:
    """Shards and samples on disk in ``folders``."""
    from workbench.records import ShardStore

    shards = samples = 0
    for folder in folders:
        if folder.is_dir():
            store = ShardStore(folder)
            shards += len(store.shards())
            samples += len(store.keys())
    return shards, samples


def _backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "server":
        return {"base_url": args.base_url if len(args.base_url) > 1 else args.base_url[0],
                "concurrency": args.concurrency or 64}
    if args.backend == "vllm" and args.tensor_parallel_size:
        return {"llm_kwargs": {"tensor_parallel_size": args.tensor_parallel_size}}
    if args.backend == "hf":
        return {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v}
    return {}


def _checked(tables_dir: Path) -> int:
    print(f"command line and folders checked; tables would go to {repo_path(Path(tables_dir))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    with contextlib.ExitStack() as locks:
        return _main(argv, locks)


def _main(argv: Sequence[str] | None, locks: contextlib.ExitStack) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    world = World() if args.from_samples else join_world()
    logging.basicConfig(level=logging.WARNING if args.quiet or not world.is_writer else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = not args.quiet and world.is_writer
    if args.backend in ("hf", "vllm") and not args.from_samples:
        pin_gpus(world, args.tensor_parallel_size or 1, share=args.backend == "hf")
    start = time.perf_counter()
    if args.from_samples:
        dirs = find_sample_dirs(args.from_samples)
        toy = all(read_manifest(d).get("config", {}).get("extra", {}).get("suite") == "toy" for d in dirs)
        tables_dir = args.tables_dir or (toy_tables_dir(toy_settings_of(dirs, args.from_samples)) if toy
                                         else real_tables_of(dirs, args.from_samples))
        check_writable(tables_dir, "--tables-dir")
        if world.is_writer:
            locks.enter_context(run_lock(tables_dir))  # a second run on these tables is refused now
        if args.check_only:
            return _checked(tables_dir)
        report = rebuild(dirs, tables_dir, figure=not args.no_figure, overwrite=args.overwrite)
    else:
        if args.model:
            benchmarks = args.benchmarks or REAL_BENCHMARKS
            defaults = suite_generation(benchmarks)
            n, tokens = args.n or defaults.n, args.max_new_tokens or defaults.max_new_tokens
            label = args.label or model_label(args.model, args.gguf_file)
            problems = load_problems(benchmarks, args.data_dir, limit=args.limit)
            if args.backend != "server":
                check_hub_model(args.model, args.gguf_file)
            folders = [real_folder(args.model, args.samples_dir or REAL_EVAL_RUNS, n=n, max_new_tokens=tokens,
                                   limit=args.limit, seed=args.seed, engine=args.backend, label=label,
                                   unit_size=args.unit_size, benchmarks=args.benchmarks)]
            samples_root = folders[0]
            check_subsets(folders[0], benchmarks)
            tables_dir = args.tables_dir or real_tables_dir(label, real_settings(
                n, tokens, args.limit, args.seed, args.backend, args.unit_size))
            suite, rows, hint = "real", [(label, args.seed)], ""
        else:
            benchmarks = args.benchmarks or TOY_BENCHMARKS
            defaults = suite_generation(benchmarks)
            n, tokens = args.n or defaults.n, args.max_new_tokens or defaults.max_new_tokens
            unit = args.unit_size or TOY_UNIT_SIZE
            settings = toy_settings(n, tokens, args.toy_size, unit, args.backend, args.benchmarks)
            checkpoints = discover_checkpoints(args.runs_root, args.base)
            problems = load_problems(benchmarks, toy_size=args.toy_size)
            samples_root = args.samples_dir or (TOY_SAMPLES if settings is None else TOY_EVAL_RUNS / settings)
            folders = toy_folders(checkpoints, samples_root)
            tables_dir = args.tables_dir or toy_tables_dir(settings)
            suite, rows = "toy", [(c.method, c.seed) for c in checkpoints]
            hint = f" (no finished checkpoints of theirs under {repo_path(args.runs_root)}; `make train-toy` trains them)"
        check_replace(tables_dir, suite, n, rows, overwrite=args.overwrite, missing_hint=hint)
        check_writable(samples_root, "--samples-dir")
        check_writable(tables_dir, "--tables-dir")
        if world.is_writer:
            locks.enter_context(run_lock(tables_dir))  # a second run on these tables is refused now
        if args.check_only:
            return _checked(tables_dir)
        try:
            if args.quiet:
                os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
            if args.model:
                evaluate_real(args.model, backend=args.backend, data_dir=args.data_dir, limit=args.limit, n=n,
                              max_new_tokens=tokens, repetition_penalty=args.repetition_penalty, seed=args.seed,
                              label=label, gguf_file=args.gguf_file, unit_size=args.unit_size,
                              samples_root=args.samples_dir or REAL_EVAL_RUNS, problems=problems, progress=progress,
                              backend_kwargs=_backend_kwargs(args), subset=args.benchmarks)
                folders = subset_folders(folders[0])
            else:
                evaluate_toy(checkpoints, samples_root, toy_size=args.toy_size, n=n, max_new_tokens=tokens,
                             unit_size=unit, engine=args.backend, problems=problems, progress=progress,
                             hf_kwargs=_backend_kwargs(args))
            if not world.is_writer:
                return 0  # rank 0 writes the tables
            report = rebuild(folders, tables_dir, figure=not args.no_figure, overwrite=args.overwrite)
        except KeyboardInterrupt:
            shards, samples = _kept(folders)
            raise KeyboardInterrupt(f"kept {samples} samples in {shards} shard{'' if shards == 1 else 's'} under "
                                    f"{repo_path(samples_root)}; "
                                    f"rerun to resume: {_resume_command(argv)}") from None
    elapsed = time.perf_counter() - start
    engine = "" if args.from_samples else f", {args.backend}" + (f", {world.size} workers" if world.size > 1 else "")
    print(f"{report['suite']} Avg@{report['k']} (%), {len(report['runs'])} runs{engine}, {elapsed:.0f} s:")
    print(report["avg_table"].round(1).to_string())
    for run in report["runs"]:
        if run["truncated"]:
            print(f"  {run['method']}/seed{run['seed']}: {run['truncated']} samples truncated (counted wrong)")
    print(f"tables in {repo_path(Path(tables_dir))}: " + ", ".join(k for k in report["written"]))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
