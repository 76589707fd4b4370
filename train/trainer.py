"""ScopeTrainer: TRL's GRPOTrainer with SCOPE's correctness-routed, perplexity-weighted loss.

GRPOTrainer already samples, grades and micro-batches groups of rollouts; this subclass only adds the
teacher's scores and the dual-path weights after generation and replaces the loss, so SCOPE, OPD and
GRPO share one trainer. Loss scale, log pi_old and several processes: docs/training.md.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

from train.checkpoints import ExactResume
from train.config import ROUTED_METHODS, ScopeConfig
from train.reward import CorrectnessReward
from train.scope import (
    WeightConfig, authors_objective, effective_sample_size, scope_objective, scope_weights, step_token_count,
)
from train.snapshots import FLUSH_ROWS, RowMeta, rollout_row, snapshot_store
from workbench.checks import check_logprobs
from workbench.grading import GradingPool
from workbench.models import Scorer, check_same_vocab
from workbench.models.base import Completion
from workbench.perplexity import log_perplexity

log = logging.getLogger(__name__)

# OPD: every rollout on the incorrect path, uniform inside its group.
OPD_WEIGHTS = WeightConfig(teacher_mode="uniform")


class ScopeTrainer(ExactResume, GRPOTrainer):
    """GRPOTrainer whose loss is SCOPE's (or uniform OPD's), selected by ``args.method``.

    Args:
        model: student, as GRPOTrainer takes it (hub id, folder or model object).
        args: a ScopeConfig.
        train_dataset: rows with ``prompt``, ``answer``, ``benchmark`` and ``problem_id``
            (see train.dataset.build_train_dataset).
        processing_class: the student's tokenizer (loaded from the model when None).
        teacher: a Scorer to use instead of the one the config names (scope/opd only).
        callbacks: TRL/transformers callbacks.
    """

    _tag_names = ["trl", "scope"]
    _name = "SCOPE"

    def __init__(self, model: Any, args: ScopeConfig, train_dataset: Any, processing_class: Any = None,
                 teacher: Scorer | None = None, callbacks: list | None = None) -> None:
        if args.method not in ("scope", "opd", "grpo"):
            raise ValueError(f"ScopeTrainer runs scope, opd or grpo; method {args.method!r} has its own trainer")
        snapshots = (snapshot_store(args.output_dir)
                     if args.method in ROUTED_METHODS and args.snapshot_every > 0 else None)
        if snapshots is not None and snapshots.shards() and not args.resume_from_checkpoint:
            raise ValueError(f"{snapshots.path} already holds snapshots of an earlier run; "
                             "use a fresh output_dir or delete them")
        self.correctness = CorrectnessReward(args.grader_workers, args.grader_timeout,
                                             truncated_rollouts=args.truncated_rollouts)
        super().__init__(model=model, reward_funcs=[self.correctness], args=args, train_dataset=train_dataset,
                         processing_class=processing_class, callbacks=callbacks)
        self.correctness.eos_token_ids = set(self.eos_token_ids)
        self.method = args.method
        self.weight_cfg = args.weight_config() if args.method == "scope" else OPD_WEIGHTS
        self.teacher: Scorer | None = None
        if self.method in ROUTED_METHODS:
            if teacher is None:
                from train.teacher import load_teacher

                teacher = load_teacher(args, self._tokenizer, str(self.accelerator.device))
            elif getattr(teacher, "tokenizer", None) is not None:
                check_same_vocab(self._tokenizer, teacher.tokenizer)  # type: ignore[attr-defined]
            self.teacher = teacher
        self._last_rewards: torch.Tensor | None = None
        self._generation = 0
        self._snapshots = snapshots
        self._snapshot_rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------ rollouts
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        """The rewards, gathered (the truncation rule is the reward's, train.reward); kept, because
        routing needs them per rollout and TRL keeps only advantages."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        reward = self.correctness
        local = torch.tensor([cut and right for cut, right in zip(reward.last_truncated, reward.last_graded_correct,
                                                                  strict=True)],
                             dtype=torch.long, device=rewards.device)
        graded_correct = self.accelerator.gather(local).bool()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["truncated/graded_correct"].append(graded_correct.float().mean().item())
        self._last_rewards = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):  # type: ignore[override]
        out = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        assert self._last_rewards is not None
        correct_all = self._last_rewards[:, 0] > 0.5
        self._metrics[mode]["frac_correct"].append(correct_all.float().mean().item())
        if self.method not in ROUTED_METHODS:
            return out

        n_local = len(out["completion_ids"])
        local = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        route = (correct_all if self.method == "scope" else torch.zeros_like(correct_all))[local]
        out["scope_route"] = route
        out["scope_group"] = (torch.arange(len(correct_all), device=route.device) // group_size)[local]

        scored = ~route if (self.method == "scope" and not self.args.teacher_on_correct) else torch.ones_like(route)
        started = time.perf_counter()
        out["teacher_per_token_logps"] = self._teacher_logps(out, scored)
        self._metrics[mode]["timing/teacher_scoring_s"].append(time.perf_counter() - started)

        if mode == "train":
            if self._snapshots is not None and self._generation % self.args.snapshot_every == 0:
                out["scope_meta"] = self._row_meta(inputs, correct_all[local], local, len(correct_all), group_size)
            self._generation += 1
        if not self._weights_at_loss(out, mode):
            if out.get("old_per_token_logps") is None:
                started = time.perf_counter()
                out["old_per_token_logps"] = self._behaviour_logps(out, mode)
                self._metrics[mode]["timing/old_logprob_s"].append(time.perf_counter() - started)
            out["scope_weights"] = self._weigh(out, out["old_per_token_logps"], mode)
        return out

    def _weights_at_loss(self, batch: dict[str, Any], mode: str) -> bool:
        """TRL's own shortcut, extended to the weights: with one micro-batch per generation batch, one
        process and no stale policy, the loss's forward pass gives log pi_old (= log pi_theta, detached)
        for free and sees whole groups, so the weights are computed there instead of after an extra
        no-grad forward."""
        return (mode == "train" and batch.get("old_per_token_logps") is None
                and self.args.steps_per_generation == 1 and self.accelerator.num_processes == 1)

    @staticmethod
    def _loss_mask(batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["completion_mask"]
        return mask * batch["tool_mask"] if batch.get("tool_mask") is not None else mask

    def _behaviour_logps(self, batch: dict[str, Any], mode: str) -> torch.Tensor:
        """log pi_old of the sampled tokens, with TRL's own forward (same temperature, same kernel)."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        with torch.no_grad():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention, batch["completion_ids"].size(1), batch_size=size
            )
        return logps

    def _teacher_logps(self, batch: dict[str, Any], scored: torch.Tensor) -> torch.Tensor:
        """[B, T] teacher log-probs of each completion token (EOS included); NaN where not scored."""
        assert self.teacher is not None
        mask = self._loss_mask(batch)
        out = torch.full(mask.shape, float("nan"), dtype=torch.float32, device=mask.device)
        rows = [i for i in range(len(mask)) if bool(scored[i]) and int(mask[i].sum()) > 0]
        if not rows:
            return out
        prompt_ids = [batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist() for i in rows]
        completion_ids = [batch["completion_ids"][i][mask[i].bool()].tolist() for i in rows]
        teacher = getattr(self.teacher, "url", None) or getattr(self.teacher, "name", type(self.teacher).__name__)
        for i, lp in zip(rows, self.teacher.token_logprobs(prompt_ids, completion_ids), strict=True):
            out[i, : len(lp)] = check_logprobs(lp, f"teacher {teacher}, batch row {i}").to(out)
        return out

    def _weigh(self, batch: dict[str, Any], old_logps: torch.Tensor, mode: str) -> torch.Tensor:
        """This process's rows' weights, normalised over whole groups of the gathered batch; also
        logs the routing statistics and buffers the snapshot rows when the batch carries them."""
        mask = self._loss_mask(batch)
        student_lppl = log_perplexity(old_logps, mask)
        teacher_lppl = log_perplexity(batch["teacher_per_token_logps"], mask)
        gather = self.accelerator.gather
        route_all, group_all = gather(batch["scope_route"]), gather(batch["scope_group"])
        s_all, t_all = gather(student_lppl), gather(teacher_lppl)
        weights_all = scope_weights(group_all, route_all, s_all, t_all, self.weight_cfg)
        self._log_routing(mode, route_all, group_all, weights_all, s_all, t_all)
        n = len(mask)
        weights = weights_all[self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n]
        if batch.get("scope_meta") is not None:
            self._buffer_snapshot(batch, old_logps, weights, student_lppl, teacher_lppl)
        return weights

    # ------------------------------------------------------------------------- logging
    def _log_routing(self, mode: str, route: torch.Tensor, group_ids: torch.Tensor, weights: torch.Tensor,
                     student_lppl: torch.Tensor, teacher_lppl: torch.Tensor) -> None:
        """Per-path PPLs and weight statistics of one generation batch, for TRL's logs."""
        metrics = self._metrics[mode]
        for name, on_path in (("mle", True), ("opd", False)):
            rows = route == on_path
            if not bool(rows.any()):
                continue
            for who, lppl in (("student", student_lppl), ("teacher", teacher_lppl)):
                ppl = lppl[rows].exp()
                ppl = ppl[torch.isfinite(ppl)]
                if ppl.numel():
                    metrics[f"ppl/{who}_{name}"].append(ppl.mean().item())
            ess, size = effective_sample_size(weights[rows], group_ids[rows])
            weighted = ess > 0  # subsets with some weight; an all-zero one has no ESS to average
            metrics[f"weights/max_{name}"].append(weights[rows].max().item())
            if bool(weighted.any()):
                metrics[f"weights/ess_{name}"].append(ess[weighted].mean().item())
                metrics[f"weights/size_{name}"].append(size[weighted].mean().item())

    def _row_meta(self, inputs: list[dict[str, Any]], correct: torch.Tensor, local: slice, batch_rows: int,
                  group_size: int) -> list[RowMeta]:
        grades = self.correctness.last_grades
        if len(grades) != len(inputs) or any(bool(g.correct) != bool(c) for g, c in zip(grades, correct)):
            raise RuntimeError("the grader's last verdicts do not match this batch's rewards")
        first = self._generation * batch_rows + local.start
        return [
            RowMeta(benchmark=str(x["benchmark"]), problem_id=str(x["problem_id"]), sample_idx=first + i,
                    group_id=(first + i) // group_size, grade=g, step=self.state.global_step,
                    generation=self._generation)
            for i, (x, g) in enumerate(zip(inputs, grades, strict=True))
        ]

    def _buffer_snapshot(self, batch: dict[str, Any], old_logps: torch.Tensor, weights: torch.Tensor,
                         student_lppl: torch.Tensor, teacher_lppl: torch.Tensor) -> None:
        """Every process's rows of the generation batch, buffered on the main process only (in rank
        order), so one writer produces whole steps; every process calls this for the same batches."""
        tok = self._tokenizer
        eos = set(self.eos_token_ids)
        keep = self.args.snapshot_token_logps
        mask = self._loss_mask(batch).bool()
        rows = []
        for i, meta in enumerate(batch["scope_meta"]):
            ids = batch["completion_ids"][i][mask[i]].tolist()
            teacher = batch["teacher_per_token_logps"][i][mask[i]]
            rows.append(rollout_row(
                meta,
                prompt=tok.decode(batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()),
                completion=Completion(tok.decode(ids, skip_special_tokens=True), tuple(ids),
                                      "stop" if ids and ids[-1] in eos else "length"),
                route_mle=bool(batch["scope_route"][i]),
                weight=float(weights[i]),
                student_logps=old_logps[i][mask[i]].float().tolist() if keep else [],
                teacher_logps=teacher.tolist() if keep and not bool(teacher.isnan().all()) else [],
                student_log_ppl=float(student_lppl[i]),
                teacher_log_ppl=float(teacher_lppl[i]),
            ))
        if self.accelerator.num_processes > 1:
            parts: list[list[dict[str, Any]]] | None = (
                [[] for _ in range(self.accelerator.num_processes)] if self.accelerator.is_main_process else None)
            torch.distributed.gather_object(rows, parts, dst=0)
            rows = [row for part in parts for row in part] if parts is not None else []
        self._snapshot_rows.extend(rows)
        if len(self._snapshot_rows) >= FLUSH_ROWS:
            self._flush_snapshots()

    def _flush_snapshots(self) -> None:
        if self._snapshots is not None and self._snapshot_rows:
            self._snapshots.append(self._snapshot_rows)
            self._snapshot_rows = []

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's train (resumable, see ExactResume) with grading workers of its own for the reward, stopped
        when it ends; buffered snapshot rows are written when it returns or fails."""
        try:
            with GradingPool(self.correctness.workers) as pool:
                self.correctness.pool = pool
                return super().train(*args, **kwargs)
        finally:
            self.correctness.pool = None
            self._flush_snapshots()

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        self._flush_snapshots()  # the checkpoint then covers exactly the shards on disk
        super()._save_checkpoint(model, trial)

    def _resume_state(self) -> dict[str, Any]:
        shards = [p.name for p in self._snapshots.shards()] if self._snapshots is not None else []
        return {**super()._resume_state(), "generation": self._generation, "snapshot_shards": shards}

    def _restore_resume_state(self, state: dict[str, Any], checkpoint: Path) -> None:
        super()._restore_resume_state(state, checkpoint)
        self._generation = int(state["generation"])
        if self._snapshots is not None and self.accelerator.is_main_process:
            keep = set(state["snapshot_shards"])
            for shard in self._snapshots.shards():
                if shard.name not in keep:  # rows of generations after the checkpoint: made again now
                    shard.unlink()

    # ---------------------------------------------------------------------------- loss
    def _compute_loss(self, model, inputs):  # type: ignore[override]
        if self.method not in ROUTED_METHODS:
            return super()._compute_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = self._loss_mask(inputs)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention, inputs["completion_ids"].size(1), compute_entropy=True
        )
        if inputs.get("scope_weights") is None:  # see _weights_at_loss
            old = logps.detach()
            inputs = {**inputs, "old_per_token_logps": old, "scope_weights": self._weigh(inputs, old, mode)}
        if mode == "train":
            accumulation = self.current_gradient_accumulation_steps
            per_generation = self.args.steps_per_generation
            groups = self.args.per_device_train_batch_size * accumulation / self.num_generations
        else:
            accumulation = per_generation = 1
            groups = self.args.per_device_eval_batch_size / self.num_generations_eval
        tensors = (logps, inputs["old_per_token_logps"], inputs["teacher_per_token_logps"], mask,
                   inputs["scope_route"], inputs["scope_weights"])
        if self.args.scope_loss == "authors":
            loss, stats = authors_objective(*tensors, clip_low=self.epsilon_low, clip_high=self.epsilon_high)
            loss = loss / accumulation
            # stats are this micro-batch's terms, whose mean over the step's micro-batches is the step's loss.
            per_step = 1
        else:
            aggregation = self.args.loss_aggregation
            step_tokens = (step_token_count(inputs["num_items_in_batch"], self.accelerator.num_processes,
                                            accumulation, per_generation) if aggregation == "token_mean" else None)
            loss, stats = scope_objective(*tensors, aggregation=aggregation, n_groups=groups, n_tokens=step_tokens)
            # stats are this micro-batch's share of the step's loss: scaled so their mean over the step's
            # micro-batches is the step's total.
            per_step = accumulation
        with torch.no_grad():
            # The tokens opd_log_ratio_mean averages (incorrect rows of nonzero weight), so that the
            # processes' means combine into the mean over all of them.
            n_ratio = float((mask.bool() & (inputs["scope_weights"] != 0).unsqueeze(1)
                             & ~inputs["scope_route"].bool().unsqueeze(1)).sum())
            totals = torch.tensor(
                [stats["loss_mle"] * per_step, stats["loss_opd"] * per_step, stats["opd_log_ratio_mean"] * n_ratio,
                 n_ratio, float((entropies * mask).sum()), float(mask.sum())],
                dtype=torch.float32, device=logps.device,
            )
            # The logged loss is the processes' mean (each divides by its own share of the groups), so
            # the per-path losses are too; counts and sums are pooled.
            mle, opd, ratio_sum, ratio_n, entropy_sum, n_tokens = (
                self.accelerator.reduce(totals, reduction="sum").tolist())
        processes = self.accelerator.num_processes
        metrics = self._metrics[mode]
        metrics["loss/mle"].append(mle / processes)
        metrics["loss/opd"].append(opd / processes)
        if ratio_n:
            metrics["opd/log_ratio"].append(ratio_sum / ratio_n)
        metrics["entropy"].append(entropy_sum / max(n_tokens, 1.0))
        return loss

