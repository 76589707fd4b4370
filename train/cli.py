"""Train one run from a recipe: ``python -m train.cli --config train/recipes/toy_scope.yaml [--field value ...]``.

Any ScopeConfig / GRPOConfig field can be overridden on the command line, e.g. ``--seed 1
--output_dir results/toy/runs/scope/seed1``, ``--ablation no_teacher_weight``, ``--tau 0.5``,
``--method opd --num_generations 1``. The output folder gets a manifest (config, seed, versions,
git commit, status) written by workbench.runs, then the model, log history and snapshots.

``--help`` imports neither torch nor TRL and answers at once. A value no run can use (non-positive
batch or group size, temperature, missing model folder) is refused by train.recipe before TRL is
imported; a name the config does not have, a name a field does not take and a bad weighting are
refused by train.config once the config classes are imported (the seconds that takes); an unwritable
or used output folder after that; all before any model loads, as one line with exit status 2. Ctrl-C
stops with exit status 130 and one line saying what the run folder kept.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from train.recipe import check_command_line as check_values_first
from workbench.errors import UserError, main_guard
from workbench.layout import METHODS

HELP = f"""\
usage: python -m train.cli --config RECIPE.yaml [--FIELD VALUE ...]

Train one run (SCOPE or a baseline) from a YAML recipe. Every recipe field can be overridden as
--FIELD VALUE; the options below are the ones usually set. --help-all lists every field (TRL's
GRPOConfig and the workbench's; it imports TRL, so it takes a few seconds).

  --config PATH              the recipe, e.g. train/recipes/toy_scope.yaml (others: toy_opd, toy_grpo,
                             toy_grpo_kl, toy_kd, paper_r1distill_skywork, paper_qwen3_base)
  --method NAME              {' | '.join(METHODS)}
  --ablation NAME            weighting preset for method scope: scope | no_dpaw_uniform_weights |
                             no_student_weight | no_teacher_weight | opposite_student_weight |
                             opposite_teacher_weight | authors_code
  --tau FLOAT                softmax temperature of both paths' weights (default: the preset's)
  --seed INT                 training seed
  --output_dir DIR           the run folder: manifest.json, model/, log_history.jsonl, snapshots/;
                             it must not hold an earlier run
  --model_name_or_path M     the student: hub id, local folder, or toy:student
  --teacher_model M          a local teacher: hub id, local folder, or toy:teacher
  --teacher_server_url URL   or a teacher behind an OpenAI-compatible vLLM server, with
                             --teacher_server_model NAME (API key from $SCOPE_TEACHER_API_KEY)
  --num_generations N        rollouts per prompt (the group SCOPE's weights normalise over)
  --max_steps N              optimizer steps
  --learning_rate FLOAT
  --use_vllm BOOL            generate with vLLM (needs a CUDA GPU)
  --dry-run                  print the plan (batch arithmetic, worst-case micro-batch, GPU memory per
                             device, the teacher server's --max-model-len) and load nothing; with
                             --world_size N, --gpu_memory_gb GB (refuses a plan that does not fit),
                             --accelerate_config train/launch/zero3.yaml, --plan-format shell
  -h, --help                 this text
  --help-all                 every field with its help (also: --help --all)

examples:
  python -m train.cli --config train/recipes/toy_scope.yaml --seed 1 --output_dir results/toy/runs/scope/seed1
  python -m train.cli --config train/recipes/toy_scope.yaml --ablation no_teacher_weight --tau 0.5 \\
      --output_dir results/toy/runs/scope-no-teacher/seed0
  accelerate launch --num_processes 8 -m train.cli --config train/recipes/paper_r1distill_skywork.yaml \\
      --teacher_server_url http://TEACHER_HOST:8000
"""


def check_writable(folder: str | Path) -> None:
    """Create the output folder and write a file in it now, not after the models have loaded."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise UserError(f"output_dir {folder} is not writable ({exc.strerror or exc}); "
                        "pass --output_dir with a folder you can write to") from None


def check_fresh(folder: str | Path) -> None:
    """An output folder holding an earlier run would mix two runs' logs, snapshots and models."""
    from workbench.runs import MANIFEST, launch_rank_and_world, read_manifest

    manifest = Path(folder) / MANIFEST
    if launch_rank_and_world()[0] != 0 or not manifest.is_file():
        return  # under torchrun / accelerate launch, rank 0 checks; the others would see its new manifest
    try:
        status = read_manifest(folder).get("status")
    except (OSError, ValueError):
        status = "unreadable"
    said = f", status {status!r}" if status else ""
    raise UserError(f"output_dir {folder} already holds a run ({MANIFEST}{said}); "
                    "pass a fresh --output_dir, or delete the folder to run it again")


def check_resumable(folder: str | Path) -> None:
    """Resuming continues a run that stopped; a finished run's model and logs are not to be overwritten."""
    from workbench.runs import MANIFEST, launch_rank_and_world, read_manifest

    if launch_rank_and_world()[0] != 0 or not (Path(folder) / MANIFEST).is_file():
        return
    try:
        status = read_manifest(folder).get("status")
    except (OSError, ValueError):
        return
    if status == "finished":
        raise UserError(f"output_dir {folder} holds a finished run; --resume_from_checkpoint continues a run that "
                        "stopped: pass a fresh --output_dir to train again")


def interrupted_message(output_dir: str | Path, trainer: Any | None) -> str:
    """What a run stopped by Ctrl-C left in its folder, with the log history written out first."""
    from workbench.runs import MANIFEST

    out = Path(output_dir)
    again = f"to run it again, delete {out} or pass a fresh --output_dir"
    if trainer is None:
        return f"stopped before training started; {out}/{MANIFEST} records the run as interrupted; {again}"
    from transformers.trainer_utils import get_last_checkpoint

    from train.methods import LOG_JSONL, write_log_history

    history = trainer.state.log_history
    kept = []
    if history and trainer.accelerator.is_main_process:
        write_log_history(history, out)
        kept.append(f"{LOG_JSONL} ({len(history)} log entries)")
    checkpoint = get_last_checkpoint(str(out)) if out.is_dir() else None
    kept.append(f"{Path(checkpoint).name} (the model, loadable as a folder)" if checkpoint
                else "no checkpoint (set --save_strategy steps --save_steps N for some)")
    if (out / "snapshots").is_dir():
        kept.append("snapshots/")
    kept.append(f"{MANIFEST} (status 'interrupted')")
    return (f"stopped at step {trainer.state.global_step} of {trainer.state.max_steps}; kept in {out}: "
            f"{', '.join(kept)}; " + (f"to continue, run the same command with --resume_from_checkpoint "
                                      f"{checkpoint}; " if checkpoint else "") + again)


def _help(argv: Sequence[str]) -> str | None:
    if "--help-all" in argv or (("-h" in argv or "--help" in argv) and "--all" in argv):
        return "all"
    return "short" if ("-h" in argv or "--help" in argv) else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    wanted = _help(argv)
    if wanted == "short":
        print(HELP, end="")
        return 0
    if wanted == "all":
        from train.config import config_parser

        config_parser().print_help()
        return 0
    if not argv:
        raise UserError("give a recipe, e.g. python -m train.cli --config train/recipes/toy_scope.yaml "
                        "(--help lists the usual options)")
    if "--dry-run" in argv:
        from train.plan import dry_run

        print(dry_run(argv), end="")
        return 0
    check_values_first(argv)  # before TRL is imported
    from train.config import check_command_line

    early = check_command_line(argv).values
    early_output = early.get("output_dir")
    resuming = early.get("resume_from_checkpoint") not in (None, "None", "none", "null", False)
    if isinstance(early_output, str):
        if resuming:
            check_resumable(early_output)
        else:
            check_fresh(early_output)
        check_writable(early_output)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from train.config import parse_config
    from train.methods import build_trainer, train_run
    from workbench.runs import run_folder

    cfg = parse_config(argv)
    if cfg.output_dir != early_output:
        if resuming:
            check_resumable(cfg.output_dir)
        else:
            check_fresh(cfg.output_dir)
        check_writable(cfg.output_dir)
    if resuming:
        from train.checkpoints import resolve_checkpoint

        # kd keeps its teacher samples before the first checkpoint: `last` then starts training from step 0
        cfg.resume_from_checkpoint = resolve_checkpoint(cfg.output_dir, cfg.resume_from_checkpoint,
                                                        missing_ok=cfg.method == "kd")
        if cfg.resume_from_checkpoint is None:
            logging.getLogger(__name__).info("no checkpoint in %s yet: training starts at step 0, reusing the "
                                             "teacher samples kept there", cfg.output_dir)
    trainer = None
    try:
        with run_folder(cfg.output_dir, cfg.to_dict(), cfg.seed, method=cfg.method):
            trainer = build_trainer(cfg)
            summary = train_run(cfg, trainer)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(cfg.output_dir, trainer)) from None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
