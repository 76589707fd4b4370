r"""ScopeTrainer: TRL's GRPOTrainer with SCOPE's correctness-routed, perplexity-weighted loss.

GRPOTrainer already does everything around the loss that SCOPE needs: it repeats each prompt
``num_generations`` times, samples the group (transformers ``generate`` on CPU, vLLM colocate or
server on GPU), grades it with the reward function, keeps the behaviour policy's log-probs, splits
the generation batch into micro-batches and logs. This subclass changes two things:

1. After TRL has generated and graded a batch (``_generate_and_score_completions``) it
   - makes sure the behaviour log-probs log pi_old exist (TRL skips them when one update per batch
     makes them equal to the current ones; SCOPE needs them earlier, for the weights),
   - asks the teacher for log pi_T of every sampled token, EOS included,
   - computes the dual-path weights over the *whole* generation batch (gathered across processes,
     so a group is normalised as one even if micro-batching or data parallelism splits it):
     student log-PPL from log pi_old on correct rollouts, teacher log-PPL on incorrect ones,
   - logs routing statistics and writes a weight snapshot.
2. The loss (``_compute_loss``) is ``train.scope.scope_objective`` on those tensors.

Methods behind ``ScopeConfig.method``:

- ``scope``: route correct -> MLE (Eq. 2), incorrect -> OPD (Eq. 3), weights from ``scope_weights``
  with the configured ablation preset / tau / scale.
- ``opd``: uniform on-policy distillation: every rollout takes the OPD path with weight 1/N in its
  group (1 with one rollout per prompt, the paper's setting), whatever its correctness.
- ``grpo``: TRL's own loss, untouched, on the grader's 0/1 reward; no teacher is loaded.

Loss scale: with aggregation "sum"/"seq_mean" each micro-batch divides by the number of prompt
groups one optimizer step covers on this process (per_device_train_batch_size x
gradient_accumulation_steps / num_generations), so the accumulated gradient is that of J (Eq. 6)
averaged over the step's prompts and data-parallel averaging keeps it so. Logged per-path losses
are in the same units (they sum to the logged ``loss``).

With vLLM, TRL recomputes log pi_old with the trainer's model (as verl does); TRL's extra
truncated importance factor between vLLM's and the trainer's log-probs is not applied to the
routed losses.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from trl import GRPOTrainer

from train.config import ROUTED_METHODS, ScopeConfig
from train.reward import CorrectnessReward
from train.scope import WeightConfig, scope_objective, scope_weights
from train.snapshots import RolloutBatch, snapshot_rows, snapshot_store
from workbench.models import Scorer
from workbench.models.base import Completion
from workbench.perplexity import log_perplexity

log = logging.getLogger(__name__)

# OPD: every rollout on the incorrect path, uniform inside its group.
OPD_WEIGHTS = WeightConfig(teacher_mode="uniform")


class ScopeTrainer(GRPOTrainer):
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
        self.correctness = CorrectnessReward(args.grader_workers, args.grader_timeout)
        super().__init__(model=model, reward_funcs=[self.correctness], args=args, train_dataset=train_dataset,
                         processing_class=processing_class, callbacks=callbacks)
        self.method = args.method
        self.weight_cfg = args.weight_config() if args.method == "scope" else OPD_WEIGHTS
        self.teacher: Scorer | None = None
        if self.method in ROUTED_METHODS:
            if teacher is None:
                from train.teacher import load_teacher

                teacher = load_teacher(args, self._tokenizer, str(self.accelerator.device))
            self.teacher = teacher
        self._last_rewards: torch.Tensor | None = None
        self._generation = 0
        self._snapshots = (snapshot_store(args.output_dir)
                           if self.method in ROUTED_METHODS and args.snapshot_every > 0 else None)

    # ------------------------------------------------------------------------ rollouts
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        """Keep the gathered rewards: routing needs them per rollout, TRL keeps only advantages."""
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
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

        mask = self._loss_mask(out)
        if out.get("old_per_token_logps") is None:
            out["old_per_token_logps"] = self._behaviour_logps(out, mode)
        old = out["old_per_token_logps"]
        local = slice(self.accelerator.process_index * len(mask), (self.accelerator.process_index + 1) * len(mask))
        correct = correct_all[local]
        route_all = correct_all if self.method == "scope" else torch.zeros_like(correct_all)
        route = route_all[local]

        needs_teacher = ~route if (self.method == "scope" and not self.args.teacher_on_correct) else torch.ones_like(route)
        teacher_rows = self._score_with_teacher(out, mask, needs_teacher)
        teacher_logps = torch.full_like(old, float("nan"))
        for i, lp in teacher_rows.items():
            teacher_logps[i, : len(lp)] = lp.to(teacher_logps)

        student_lppl = log_perplexity(old, mask)
        teacher_lppl = log_perplexity(teacher_logps, mask)
        gather = self.accelerator.gather
        s_all, t_all = gather(student_lppl), gather(teacher_lppl)
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        group_ids = torch.arange(len(route_all), device=route_all.device) // group_size
        weights_all = scope_weights(group_ids, route_all, s_all, t_all, self.weight_cfg)
        self._log_routing(mode, route_all, group_ids, weights_all, s_all, t_all)

        out["teacher_per_token_logps"] = teacher_logps
        out["scope_route"] = route
        out["scope_weights"] = weights_all[local]
        if mode == "train":
            if self._snapshots is not None and self._generation % self.args.snapshot_every == 0:
                self._write_snapshot(inputs, out, mask, correct, teacher_rows, student_lppl, teacher_lppl,
                                     first_row=local.start, batch_rows=len(route_all), group_size=group_size)
            self._generation += 1
        return out

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

    def _score_with_teacher(self, batch: dict[str, Any], mask: torch.Tensor,
                            needs_teacher: torch.Tensor) -> dict[int, torch.Tensor]:
        """Teacher log-probs of each selected rollout's completion tokens (EOS included), by row."""
        assert self.teacher is not None
        rows = [i for i in range(len(mask)) if bool(needs_teacher[i]) and int(mask[i].sum()) > 0]
        if not rows:
            return {}
        prompt_ids = [batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist() for i in rows]
        completion_ids = [batch["completion_ids"][i][mask[i].bool()].tolist() for i in rows]
        scores = self.teacher.token_logprobs(prompt_ids, completion_ids)
        return dict(zip(rows, scores, strict=True))

    # ------------------------------------------------------------------------- logging
    def _log_routing(self, mode: str, route: torch.Tensor, group_ids: torch.Tensor, weights: torch.Tensor,
                     student_lppl: torch.Tensor, teacher_lppl: torch.Tensor) -> None:
        """Per-path PPLs and weight statistics of one generation batch, for TRL's logs."""
        metrics = self._metrics[mode]
        segment = group_ids * 2 + route.long()
        n_seg = 2 * (int(group_ids.max()) + 1)
        w = weights.double()
        w_sum = torch.zeros(n_seg, dtype=w.dtype, device=w.device).index_add(0, segment, w)
        w_sq = torch.zeros(n_seg, dtype=w.dtype, device=w.device).index_add(0, segment, w * w)
        size = torch.zeros(n_seg, dtype=w.dtype, device=w.device).index_add(0, segment, torch.ones_like(w))
        for name, on_path in (("mle", True), ("opd", False)):
            rows = route == on_path
            if not bool(rows.any()):
                continue
            for who, lppl in (("student", student_lppl), ("teacher", teacher_lppl)):
                ppl = lppl[rows].exp()
                ppl = ppl[torch.isfinite(ppl)]
                if ppl.numel():
                    metrics[f"ppl/{who}_{name}"].append(ppl.mean().item())
            seg_on_path = (torch.arange(n_seg, device=w.device) % 2 == int(on_path)) & (w_sq > 0)
            ess = w_sum[seg_on_path] ** 2 / w_sq[seg_on_path]
            metrics[f"weights/max_{name}"].append(weights[rows].max().item())
            metrics[f"weights/ess_{name}"].append(ess.mean().item() if ess.numel() else float("nan"))
            metrics[f"weights/size_{name}"].append(size[seg_on_path].mean().item() if ess.numel() else float("nan"))

    def _write_snapshot(self, inputs: list[dict[str, Any]], batch: dict[str, Any], mask: torch.Tensor,
                        correct: torch.Tensor, teacher_rows: dict[int, torch.Tensor], student_lppl: torch.Tensor,
                        teacher_lppl: torch.Tensor, *, first_row: int, batch_rows: int, group_size: int) -> None:
        assert self._snapshots is not None
        tok = self._tokenizer
        eos = set(self.eos_token_ids)
        completions, prompts, student = [], [], []
        for i in range(len(mask)):
            ids = batch["completion_ids"][i][mask[i].bool()].tolist()
            reason = "stop" if ids and ids[-1] in eos else "length"
            completions.append(Completion(tok.decode(ids, skip_special_tokens=True), tuple(ids), reason))
            prompts.append(tok.decode(batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()))
            student.append(batch["old_per_token_logps"][i][mask[i].bool()].float().cpu())
        grades = self.correctness.last_grades
        if len(grades) != len(completions) or any(bool(g.correct) != bool(c) for g, c in zip(grades, correct)):
            raise RuntimeError("the grader's last verdicts do not match this batch's rewards")
        rows = range(first_row, first_row + len(mask))
        snapshot = RolloutBatch(
            benchmarks=[str(x["benchmark"]) for x in inputs],
            problem_ids=[str(x["problem_id"]) for x in inputs],
            prompts=prompts,
            completions=completions,
            grades=grades,
            route_mle=batch["scope_route"].cpu(),
            weights=batch["scope_weights"].cpu(),
            student_logps=student,
            teacher_logps=[teacher_rows.get(i) for i in range(len(mask))],
            student_log_ppl=student_lppl.cpu(),
            teacher_log_ppl=teacher_lppl.cpu(),
        )
        self._snapshots.append(snapshot_rows(
            snapshot, step=self.state.global_step, generation=self._generation,
            sample_idx=[self._generation * batch_rows + r for r in rows],
            group_ids=[(self._generation * batch_rows + r) // group_size for r in rows],
            keep_token_logps=self.args.snapshot_token_logps,
        ))

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
        if mode == "train":
            accumulation = self.current_gradient_accumulation_steps
            groups = self.args.per_device_train_batch_size * accumulation / self.num_generations
        else:
            accumulation = 1
            groups = self.args.per_device_eval_batch_size / self.num_generations_eval
        aggregation = self.args.loss_aggregation
        loss, stats = scope_objective(
            logps, inputs["old_per_token_logps"], inputs["teacher_per_token_logps"], mask,
            inputs["scope_route"], inputs["scope_weights"], aggregation=aggregation, n_groups=groups,  # type: ignore[arg-type]
        )
        if aggregation == "token_mean":
            loss = loss / accumulation
        # Scaled so that the mean over an optimizer step's micro-batches is the step's total.
        per_step = accumulation if aggregation != "token_mean" else 1
        metrics = self._metrics[mode]
        metrics["loss/mle"].append(stats["loss_mle"] * per_step)
        metrics["loss/opd"].append(stats["loss_opd"] * per_step)
        if stats["n_tokens_opd"]:
            metrics["opd/log_ratio"].append(stats["opd_log_ratio_mean"])
        with torch.no_grad():
            totals = torch.stack([(entropies * mask).sum(), mask.sum().to(entropies.dtype)])
            totals = self.accelerator.reduce(totals, reduction="sum")
            metrics["entropy"].append((totals[0] / totals[1].clamp(min=1.0)).item())
        return loss

