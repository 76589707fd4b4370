"""Resuming a run: which checkpoint ``--resume_from_checkpoint`` names, and the trainer's own state file.

``--resume_from_checkpoint`` is TRL's (TrainingArguments') field: a checkpoint folder, or ``true`` /
``last`` for the newest ``checkpoint-N`` in output_dir. Checkpoints are written as the recipe's
``save_strategy`` / ``save_steps`` say; a ScopeTrainer checkpoint also holds SCOPE_STATE (the
generation counter and the snapshot shards written up to it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.errors import UserError

SCOPE_STATE = "scope_state.json"
LAST = ("true", "last", "True")


def resolve_checkpoint(output_dir: str | Path, value: str | bool, *, missing_ok: bool = False) -> str | None:
    """The checkpoint folder `value` names (``true``/``last``: the newest in `output_dir`; None when there is
    none yet and `missing_ok`)."""
    from transformers.trainer_utils import get_last_checkpoint

    if value is True or str(value) in LAST:
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if last is None and missing_ok:
            return None
        if last is None:
            raise UserError(f"--resume_from_checkpoint {value}: no checkpoint-N folder in {output_dir}; "
                            "pass a checkpoint folder, or run with --save_strategy steps --save_steps N first")
        return last
    if not (Path(str(value)) / "trainer_state.json").is_file():
        raise UserError(f"--resume_from_checkpoint {value} is not a checkpoint folder (no trainer_state.json)")
    return str(value)


class ExactResume:
    """Trainer mixin: a run resumed from a checkpoint ends as the uninterrupted run (TRL restores weights,
    optimizer, scheduler, RNG and log history; this adds the trainer's own counters and HF's train_loss,
    which averages the losses of one train() call only). Subclasses add to `_resume_state` and read it
    back in `_restore_resume_state`."""

    _loss_sum_before = 0.0  # the summed step losses of the run before a resume

    def _resume_state(self) -> dict[str, Any]:
        # SFTTrainer counts its logged num_tokens itself (GRPOTrainer uses the restored trainer state)
        return {"loss_sum": self._total_loss_scalar + self._tr_loss.item() + self._loss_sum_before,
                "total_train_tokens": getattr(self, "_total_train_tokens", None)}

    def _restore_resume_state(self, state: dict[str, Any], checkpoint: Path) -> None:
        self._loss_sum_before = float(state["loss_sum"])
        if state.get("total_train_tokens") is not None:
            self._total_train_tokens = state["total_train_tokens"]

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> Any:
        if resume_from_checkpoint:
            resume_from_checkpoint = resolve_checkpoint(self.args.output_dir, resume_from_checkpoint)
            state_file = Path(resume_from_checkpoint) / SCOPE_STATE
            if not state_file.is_file():
                raise UserError(f"{resume_from_checkpoint} has no {SCOPE_STATE}: it was not written by the "
                                "workbench's trainers, so the run cannot be continued exactly from it")
            self._restore_resume_state(json.loads(state_file.read_text()), Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.accelerator.is_main_process:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            (folder / SCOPE_STATE).write_text(json.dumps(self._resume_state()))

    def _finalize_training(self, trial: Any, num_train_samples: Any, start_time: Any) -> Any:
        resumed_at = self._initial_global_step
        output = super()._finalize_training(trial, num_train_samples, start_time)
        if resumed_at and self.state.global_step:
            train_loss = (self._total_loss_scalar + self._loss_sum_before) / self.state.global_step
            self.state.log_history[-1]["train_loss"] = train_loss
            output = output._replace(training_loss=train_loss, metrics={**output.metrics, "train_loss": train_loss})
        return output
