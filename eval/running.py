"""Sampling the toy checkpoints or a real model on the benchmarks, on any engine and any number of
workers (each torchrun worker takes its share of the resumable units: :mod:`workbench.distributed`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.folders import (
    TOY_SIZE,
    TOY_UNIT_SIZE,
    Checkpoint,
    default_unit_size,
    model_label,
    real_folder,
    repo_path,
    toy_folders,
)
from workbench.data import REAL_BENCHMARKS, TOY_BENCHMARKS, suite_generation
from workbench.errors import UserError
from workbench.layout import REAL_EVAL_RUNS, TOY_SAMPLES

if TYPE_CHECKING:
    from eval.generate import UnitSize
    from workbench.records import Problem

TOY_BATCH_SEQUENCES = 1024
# The paper's evaluation uses repetition penalty 1.08 for its Qwen3 student and 1.0 otherwise.
PAPER_REPETITION_PENALTY = {"qwen3-1.7b-base": 1.08}
SET_DATA_DIR = ("to read the real benchmarks from a folder of their six JSONL files, set DATA_DIR=/path "
                "(make), --data-dir /path, or the environment variable SCOPE_DATA_DIR")


def load_problems(benchmarks: Sequence[str], data_dir: str | Path | None = None, *, limit: int | None = None,
                  toy_size: int = TOY_SIZE) -> list[Problem]:
    """The problems of several benchmarks in order; a missing, empty or malformed file, or a hub that
    cannot serve them when no data folder is set, is a UserError."""
    from workbench.data import DataError, default_data_dir, get_spec, load_benchmark

    folder = data_dir if data_dir is not None else default_data_dir()
    from_hub = [spec.hf_id for spec in map(get_spec, benchmarks)
                if spec.suite != "toy" and spec.hf_id and (folder is None or spec.local_file is None)]
    if from_hub:
        from workbench.hub import check_hub_datasets

        check_hub_datasets(list(dict.fromkeys(from_hub)), SET_DATA_DIR)
    problems = []
    for name in benchmarks:
        try:
            problems += load_benchmark(name, data_dir, limit=limit, toy_size=toy_size)
        except (DataError, FileNotFoundError, ValueError) as exc:
            raise UserError(f"{exc}; {SET_DATA_DIR}" if isinstance(exc, FileNotFoundError) else str(exc)) from None
        except OSError as exc:  # datasets' ConnectionError offline, a cache it cannot read
            raise UserError(f"{name}: the hub dataset could not be loaded ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); {SET_DATA_DIR}") from None
    return problems


def toy_sampler(engine: str, path: Path, hf_kwargs: dict[str, Any] | None = None) -> Any:
    from workbench.models import IN_PROCESS_ENGINE, TOY_ENGINE_KWARGS, load_backend

    if engine == "vllm":
        for key, value in IN_PROCESS_ENGINE.items():
            os.environ.setdefault(key, value)
        return load_backend("vllm", str(path), progress=False, llm_kwargs=TOY_ENGINE_KWARGS)
    kwargs = {"device": "cpu", "max_batch_sequences": TOY_BATCH_SEQUENCES, "progress": False, **(hf_kwargs or {})}
    return load_backend("hf", str(path), **kwargs)


def evaluate_toy(
    checkpoints: Sequence[Checkpoint],
    samples_root: str | Path = TOY_SAMPLES,
    *,
    toy_size: int = TOY_SIZE,
    n: int | None = None,
    max_new_tokens: int | None = None,
    unit_size: UnitSize = TOY_UNIT_SIZE,
    engine: str = "hf",
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
    hf_kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
) -> list[Path]:
    """Sample every checkpoint on the six toy tiers into ``<samples_root>/<method>/seed<k>``; returns the folders.

    ``problems`` defaults to the first ``toy_size`` of each tier; ``n``, ``max_new_tokens`` and the
    sampling ``seed`` to the tiers' registered protocol; ``hf_kwargs`` (e.g. a CUDA device) go to the
    transformers backend, which runs the toy models on the CPU otherwise. One engine is alive at a time:
    each checkpoint's is dropped before the next loads, which matters for vLLM's preallocated KV cache.
    """
    import gc

    from eval.generate import generate_samples

    if problems is None:
        problems = load_problems(TOY_BENCHMARKS, toy_size=toy_size)
    defaults = suite_generation({p.benchmark for p in problems})
    sampling = replace(defaults, n=n or defaults.n, max_new_tokens=max_new_tokens or defaults.max_new_tokens,
                       seed=defaults.seed if seed is None else seed)
    folders = toy_folders(checkpoints, samples_root)
    for ckpt, out in zip(checkpoints, folders):
        sampler = toy_sampler(engine, ckpt.path, hf_kwargs)
        generate_samples(sampler, problems, sampling, out, unit_size=unit_size, progress=progress,
                         extra={"suite": "toy", "method": ckpt.method, "seed": ckpt.seed, "backend": engine,
                                "checkpoint": repo_path(ckpt.path), "toy_size": toy_size})
        del sampler
        gc.collect()
    return folders


def _resolve_model(model: str) -> str:
    if model == "smollm2":
        from workbench.models.smollm import smollm2_model_dir

        return smollm2_model_dir()
    return model


def evaluate_real(
    model: str,
    *,
    backend: str = "hf",
    data_dir: str | Path | None = None,
    benchmarks: Sequence[str] | None = None,
    limit: int | None = None,
    n: int | None = None,
    max_new_tokens: int | None = None,
    repetition_penalty: float | None = None,
    seed: int = 0,
    label: str | None = None,
    gguf_file: str | None = None,
    unit_size: UnitSize | None = None,
    samples_root: str | Path = REAL_EVAL_RUNS,
    backend_kwargs: dict[str, Any] | None = None,
    problems: Sequence[Problem] | None = None,
    progress: bool = True,
    subset: Sequence[str] | None = None,
) -> Path:
    """Sample one model on the real benchmarks (the first ``limit`` problems of each); returns the folder.

    ``benchmarks`` defaults to the six real ones, ``problems`` to theirs loaded from ``data_dir``;
    ``n`` and ``max_new_tokens`` to the benchmarks' registered sampling defaults (the paper's
    protocol). Under torchrun every worker takes its share of the units (:mod:`workbench.distributed`).
    ``subset`` names the benchmarks when they are not all six (it names the folder).
    """
    from eval.generate import generate_samples
    from workbench.models import load_backend

    label = label or model_label(model, gguf_file)
    if repetition_penalty is None:
        repetition_penalty = PAPER_REPETITION_PENALTY.get(label, 1.0)
    if problems is None:
        problems = load_problems(benchmarks or REAL_BENCHMARKS, data_dir, limit=limit)
    defaults = suite_generation({p.benchmark for p in problems})
    n, max_new_tokens = n or defaults.n, max_new_tokens or defaults.max_new_tokens
    sampling = replace(defaults, n=n, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty, seed=seed)
    kwargs: dict[str, Any] = {"progress": False, **(backend_kwargs or {})}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    out = real_folder(model, samples_root, n=n, max_new_tokens=max_new_tokens, limit=limit, seed=seed,
                      engine=backend, label=label, unit_size=unit_size, benchmarks=subset)
    if unit_size is None:
        unit_size = default_unit_size(backend)
    sampler = load_backend(backend, model if backend == "server" else _resolve_model(model), **kwargs)
    generate_samples(sampler, problems, sampling, out, unit_size=unit_size, progress=progress,
                     extra={"suite": "real", "method": label, "seed": seed, "backend": backend, "limit": limit,
                            "data_dir": str(data_dir) if data_dir else None})
    return out
