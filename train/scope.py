r"""The SCOPE objective (arXiv 2604.10688) in plain torch: dual-path weights and the routed loss.

Correct rollouts get student-PPL-weighted MLE (Eqs. 2, 4), wrong ones teacher-PPL-weighted OPD (Eqs. 3, 5), both
weights a softmax inside the prompt's group (Eq. 6). The whole objective lives here so that it can be checked
against the paper line by line; the notation, the signs and the authors' code's departures: docs/training.md.
"""

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from workbench.errors import UserError, did_you_mean

PathMode = Literal["ppl", "uniform", "reversed", "off"]
WeightScale = Literal["sum1", "mean1"]
Aggregation = Literal["sum", "seq_mean", "token_mean"]
# "paper": scope_objective (Eqs. 2-6); "authors": authors_objective, the released code's loss.
LossForm = Literal["paper", "authors"]
# How a rollout cut off at the length limit is routed: "wrong" (as evaluation counts it) or
# "grade" (its text graded like any other, as the released code does).
TruncatedRule = Literal["wrong", "grade"]

# Sign of log PPL inside the softmax, relative to each path's paper direction.
_MODE_SIGN = {"ppl": 1.0, "reversed": -1.0, "uniform": 0.0, "off": 0.0}


@dataclass(frozen=True)
class WeightConfig:
    """How the two paths weight their rollouts (Eqs. 4-5); validated on construction.

    tau: softmax temperature, > 0. Large tau flattens towards uniform, small tau picks the
        extreme rollout of each subset.
    student_mode: correct path. "ppl" is Eq. 4 (w ∝ PPL_S^(1/tau)), "reversed" flips the
        exponent's sign (w ∝ PPL_S^(-1/tau)), "uniform" gives 1/|C|, "off" gives 0 so the path
        contributes nothing.
    teacher_mode: incorrect path, the same choices around Eq. 5 (w ∝ PPL_T^(-1/tau)).
    scale: "sum1" (the paper) makes each (group, subset) sum to 1; "mean1" (the authors' code)
        multiplies by the number of weighted rollouts so they average 1.
    """

    tau: float = 1.0
    student_mode: PathMode = "ppl"
    teacher_mode: PathMode = "ppl"
    scale: WeightScale = "sum1"

    def __post_init__(self) -> None:
        """The home of these rules: train.config (recipes, flags) and analysis (tau sweeps) build a
        WeightConfig to check a weighting, so a mistake reads the same everywhere (UserError, one line)."""
        if isinstance(self.tau, bool) or not (isinstance(self.tau, (int, float)) and 0.0 < float(self.tau) < math.inf):
            raise UserError(f"tau must be a finite number > 0, got {self.tau!r}")
        for name, allowed in (("student_mode", get_args(PathMode)), ("teacher_mode", get_args(PathMode)),
                              ("scale", get_args(WeightScale))):
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, got {value!r}"
                                f"{did_you_mean(str(value), allowed)}")


# The paper's DPAW ablations (names as in the paper's ablation table); "no_X_weight" means that
# path's weights become uniform. "authors_code" is what the released training scripts run.
ABLATIONS: dict[str, WeightConfig] = {
    "scope": WeightConfig(),
    "no_dpaw_uniform_weights": WeightConfig(student_mode="uniform", teacher_mode="uniform"),
    "no_student_weight": WeightConfig(student_mode="uniform"),
    "no_teacher_weight": WeightConfig(teacher_mode="uniform"),
    "opposite_student_weight": WeightConfig(student_mode="reversed"),
    "opposite_teacher_weight": WeightConfig(teacher_mode="reversed"),
    "authors_code": WeightConfig(student_mode="reversed", scale="mean1"),
}


def _as_bool_rows(correct: Tensor, name: str) -> Tensor:
    """Accept rewards as bool or as exact 0/1 numbers, since verifiers emit either."""
    if correct.dtype == torch.bool:
        return correct
    if correct.is_complex() or not bool(((correct == 0) | (correct == 1)).all()):
        raise ValueError(f"{name} must be boolean or hold only 0/1 values (dtype {correct.dtype})")
    return correct != 0


def _subset_index(group_ids: Tensor, correct: Tensor) -> tuple[Tensor, int]:
    """Map each rollout to a dense (group, subset) segment id, so arbitrary ids cost nothing."""
    unique_ids, dense_group = torch.unique(group_ids, return_inverse=True)
    return dense_group * 2 + correct.long(), 2 * unique_ids.numel()


def scope_weights(
    group_ids: Tensor,
    correct: Tensor,
    student_log_ppl: Tensor,
    teacher_log_ppl: Tensor,
    cfg: WeightConfig = WeightConfig(),
) -> Tensor:
    r"""Dual-path adaptive weights (Eqs. 4-5) for a flat batch of B rollouts, as one segment softmax.

    Eq. 4, i in C:  w_i = softmax_{j in C}( +log PPL_S(y_j) / tau )_i = PPL_S^(1/tau) / sum PPL_S^(1/tau)
    Eq. 5, i in W:  w_i = softmax_{j in W}( -log PPL_T(y_j) / tau )_i = PPL_T^(-1/tau) / sum PPL_T^(-1/tau)

    Working in log-PPL space (log PPL = mean NLL over response tokens) keeps the softmax stable;
    each (group, subset) segment subtracts its own max before exponentiating. The computation is
    a handful of scatter/index ops over the whole batch, with no Python loop over rollouts.

    Args:
        group_ids: [B] integers naming each rollout's prompt; any values, in any order.
        correct: [B] verifier outcome (bool or 0/1): True routes to the student path.
        student_log_ppl: [B] student log PPL; read on correct rows only.
        teacher_log_ppl: [B] teacher log PPL on the student's rollout; read on incorrect rows
            only, so it may be NaN on correct rows.
        cfg: temperature, per-path mode and scale.

    Returns:
        [B] weights (no gradient: they are constants of the update). Defined behaviour:
        a subset of one rollout gets weight 1 (both scales); a group with only correct (only
        incorrect) rollouts has only that path; a rollout whose log PPL is NaN or +-inf gets 0
        and is left out of its subset's normalisation and count (a subset with none finite is
        all 0); a path in "off" mode is all 0.
    """
    tensors = {"group_ids": group_ids, "correct": correct,
               "student_log_ppl": student_log_ppl, "teacher_log_ppl": teacher_log_ppl}
    for name, t in tensors.items():
        if t.dim() != 1:
            raise ValueError(f"{name} must be 1-D [B], got shape {tuple(t.shape)}")
    sizes = {name: t.shape[0] for name, t in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"scope_weights inputs disagree on batch size: {sizes}")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    for name in ("student_log_ppl", "teacher_log_ppl"):
        if not tensors[name].is_floating_point():
            raise ValueError(f"{name} must be floating point, got dtype {tensors[name].dtype}")
    is_correct = _as_bool_rows(correct, "correct")
    # At least float32: half-precision log-PPLs would make the weights needlessly coarse.
    dtype = torch.promote_types(student_log_ppl.dtype, teacher_log_ppl.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    student = student_log_ppl.detach().to(dtype)
    teacher = teacher_log_ppl.detach().to(dtype)

    # Each rollout's log PPL, its signed softmax logit (+log PPL_S / tau on the correct path,
    # -log PPL_T / tau on the incorrect one, per mode), and whether it takes part at all.
    log_ppl = torch.where(is_correct, student, teacher)
    slope = torch.where(
        is_correct, _MODE_SIGN[cfg.student_mode] / cfg.tau, -_MODE_SIGN[cfg.teacher_mode] / cfg.tau
    )
    valid = torch.isfinite(log_ppl)
    if cfg.student_mode == "off":
        valid &= ~is_correct
    if cfg.teacher_mode == "off":
        valid &= is_correct
    logit = torch.where(valid, slope * log_ppl, -torch.inf)

    seg, n_seg = _subset_index(group_ids, is_correct)
    seg_max = torch.full((n_seg,), -torch.inf, dtype=dtype, device=logit.device)
    seg_max = seg_max.scatter_reduce(0, seg, logit, reduce="amax", include_self=True)
    # exp(-inf - max) = 0 leaves invalid rows out of the sums; a segment with no valid row
    # turns NaN here, but none of its rows is read below.
    numer = (logit - seg_max[seg]).exp()
    denom = torch.zeros(n_seg, dtype=dtype, device=logit.device).index_add(0, seg, numer)
    # Valid rows always have denom >= 1 (their segment's max contributes exp(0)).
    weights = torch.where(valid, numer / denom[seg], 0.0)
    if cfg.scale == "mean1":
        count = torch.zeros(n_seg, dtype=dtype, device=logit.device).index_add(0, seg, valid.to(dtype))
        weights = weights * count[seg]
    return weights


def effective_sample_size(weights: Tensor, subset_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per subset of rollouts: how many its weights really use, ESS = (sum w)^2 / sum w^2, and its size.

    A softmax that puts a subset's whole mass on one rollout learns from one sample (ESS 1); uniform
    weights use all of them (ESS = size), so ESS / size says how much of a (group, path) subset an
    update draws on. Subsets are the distinct ``subset_ids`` in ascending order; a subset whose
    weights are all 0 (a NaN perplexity, an "off" path) has ESS 0. Returns float64 ``(ess, size)``.
    """
    if weights.dim() != 1 or subset_ids.shape != weights.shape:
        raise ValueError(f"weights and subset_ids must be 1-D of one length, got {tuple(weights.shape)} "
                         f"and {tuple(subset_ids.shape)}")
    ids, index = torch.unique(subset_ids, return_inverse=True)
    w = weights.detach().to(torch.float64)
    zeros = torch.zeros(ids.numel(), dtype=torch.float64, device=w.device)
    w_sum, w_sq = zeros.index_add(0, index, w), zeros.index_add(0, index, w * w)
    ess = torch.where(w_sq > 0, w_sum**2 / torch.where(w_sq > 0, w_sq, 1.0), 0.0)
    return ess, zeros.index_add(0, index, torch.ones_like(w))


def mle_token_loss(logp: Tensor, old_logp: Tensor) -> Tensor:
    """Eq. 2 per token: -rho_t, rho_t = exp(log pi_theta - log pi_old).

    Its gradient at theta = theta_old is -grad log pi_theta(a_t): maximum likelihood on the
    student's own correct tokens, with the ratio correcting for a stale behaviour policy.
    """
    return -torch.exp(logp - old_logp.detach())


def opd_token_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor) -> Tensor:
    """Eq. 3 per token: rho_t * (sg[log pi_S(a_t)] - log pi_T(a_t)).

    The detached log-ratio acts as a per-token negative advantage, so the gradient at
    theta = theta_old is the sampled-token reverse-KL policy gradient
    (log pi_S - log pi_T) * grad log pi_S.
    """
    rho = torch.exp(logp - old_logp.detach())
    return rho * (logp.detach() - teacher_logp.detach())


def step_token_count(num_items_in_batch: float, num_processes: int, accumulation: int,
                     steps_per_generation: int) -> float:
    """Response tokens one optimizer step covers on one process, counted as TRL's "dapo" loss counts them.

    TRL gives every micro-batch ``num_items_in_batch``: the response tokens of the whole generation
    batch, summed over all processes. A generation batch feeds ``steps_per_generation`` micro-batches
    per process, ``accumulation`` of which make one optimizer step, and data parallelism averages
    the processes' gradients; so dividing each micro-batch's token sum by this count makes the step's
    gradient the mean over all the step's tokens, whatever the micro-batch layout (when the
    generation batch spans several optimizer steps, over their average token count). In evaluation
    pass ``accumulation = steps_per_generation = 1``.
    """
    if min(num_processes, accumulation, steps_per_generation) < 1:
        raise ValueError("num_processes, accumulation and steps_per_generation must be >= 1, got "
                         f"{num_processes}, {accumulation}, {steps_per_generation}")
    return max(float(num_items_in_batch), 1.0) / num_processes * accumulation / steps_per_generation


def _check_batch(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, mask: Tensor, correct: Tensor,
                 weights: Tensor) -> None:
    token_inputs = {"logp": logp, "old_logp": old_logp, "teacher_logp": teacher_logp, "mask": mask}
    for name, t in token_inputs.items():
        if t.dim() != 2 or t.shape != logp.shape:
            raise ValueError(
                f"{name} must be [B, T] like logp {tuple(logp.shape)}, got {tuple(t.shape)}"
            )
    for name, t in {"correct": correct, "weights": weights}.items():
        if t.shape != logp.shape[:1]:
            raise ValueError(f"{name} must be [B] = [{logp.shape[0]}], got {tuple(t.shape)}")


def _path_stats(per_row: Tensor, is_correct: Tensor, w: Tensor, n_tok_row: Tensor, wrong_active: Tensor,
                log_ratio: Tensor) -> dict[str, float]:
    """The logging numbers both objectives report; ``per_row`` holds each row's share of the loss."""
    n_wrong_tok = int(wrong_active.sum())
    return {
        "loss_mle": float(per_row[is_correct].sum()),
        "loss_opd": float(per_row[~is_correct].sum()),
        "n_tokens_mle": int(n_tok_row[is_correct].sum()),
        "n_tokens_opd": int(n_tok_row[~is_correct].sum()),
        "n_rollouts_mle": int(is_correct.sum()),
        "n_rollouts_opd": int((~is_correct).sum()),
        "weight_sum_mle": float(w[is_correct].sum()),
        "weight_sum_opd": float(w[~is_correct].sum()),
        "opd_log_ratio_mean": float(log_ratio[wrong_active].sum()) / n_wrong_tok if n_wrong_tok else 0.0,
    }


def scope_objective(
    logp: Tensor,
    old_logp: Tensor,
    teacher_logp: Tensor,
    mask: Tensor,
    correct: Tensor,
    weights: Tensor,
    aggregation: Aggregation = "sum",
    n_groups: float | None = None,
    n_tokens: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    r"""J_SCOPE (Eq. 6) for a flat batch: MLE (Eq. 2) on correct rows, OPD (Eq. 3) on the rest.

        J = (1/G) sum_groups [ sum_{i in C} w_i L_MLE(y_i) + sum_{i in W} w_i L_OPD(y_i) ]

    Every aggregation divides by a count of the whole optimizer step (``n_groups`` or
    ``n_tokens``), never by one of the micro-batch, so accumulating micro-batches gives the same
    gradient however a step's rollouts are split.

    Args:
        logp: [B, T] current-policy log-probs of the sampled tokens (carries the gradient).
        old_logp: [B, T] behaviour-policy log-probs (treated as constants).
        teacher_logp: [B, T] teacher log-probs of the same tokens; read on incorrect rows only,
            so it may be NaN elsewhere. Padding may hold anything in every [B, T] input.
        mask: [B, T] response-token mask (bool or 0/1).
        correct: [B] verifier outcome (bool or 0/1).
        weights: [B] per-rollout weights, e.g. from ``scope_weights``; treated as constants.
            A row of weight 0 contributes exactly 0 (its tokens are never read), so rollouts
            that ``scope_weights`` excluded cannot leak NaN or inf into the loss.
        aggregation: how tokens and rollouts become one number.
            "sum" (the paper): per-sequence sum over tokens, weighted sum over rollouts,
            divided by ``n_groups`` so J is an expectation over prompts.
            "seq_mean": the same with a per-sequence token mean instead of a sum (length-neutral).
            "token_mean": each token's loss times its row weight, summed and divided by
            ``n_tokens``, the response tokens of the whole optimizer step: TRL's "dapo"
            normalisation. (The released code's loss, a token mean per micro-batch with a
            PPO-clipped OPD term, is ``authors_objective``.)
        n_groups: number of prompts G the step's weights were normalised over; required for
            "sum" and "seq_mean". Passed explicitly so that gradient accumulation over
            micro-batches can divide by the full step's G.
        n_tokens: response tokens of the optimizer step (see ``step_token_count``); required for
            "token_mean".

    Returns:
        (loss, stats): loss is the scalar to minimise; stats hold floats for logging, in the
        loss's own normalisation where they are losses (loss = loss_mle + loss_opd):
        loss_mle, loss_opd, n_tokens_mle, n_tokens_opd, n_rollouts_mle, n_rollouts_opd,
        weight_sum_mle, weight_sum_opd, and opd_log_ratio_mean (mean of log pi_S - log pi_T
        over weighted incorrect tokens: a sampled reverse-KL estimate).
    """
    if aggregation not in get_args(Aggregation):
        raise ValueError(f"aggregation must be one of {get_args(Aggregation)}, got {aggregation!r}")
    _check_batch(logp, old_logp, teacher_logp, mask, correct, weights)
    if aggregation == "token_mean":
        if n_tokens is None or not n_tokens > 0:
            raise ValueError(f"aggregation 'token_mean' needs n_tokens > 0, got {n_tokens!r}")
    elif n_groups is None or not n_groups > 0:
        raise ValueError(f"aggregation {aggregation!r} needs n_groups > 0, got {n_groups!r}")

    is_correct = _as_bool_rows(correct, "correct")
    w = weights.detach().to(logp.dtype)
    token_mask = _as_bool_rows(mask, "mask")
    active = token_mask & (w != 0).unsqueeze(1)
    row_correct = is_correct.unsqueeze(1).expand_as(active)
    zero = torch.zeros_like(logp)

    # Sanitise before any arithmetic: torch.where passes NaN gradients from unselected branches.
    safe_logp = torch.where(active, logp, zero)
    safe_old = torch.where(active, old_logp.detach(), zero)
    safe_teacher = torch.where(active & ~row_correct, teacher_logp.detach(), safe_logp.detach())
    tok = torch.where(
        row_correct,
        mle_token_loss(safe_logp, safe_old),
        opd_token_loss(safe_logp, safe_old, safe_teacher),
    )
    tok = torch.where(active, tok, zero)

    n_tok_row = token_mask.sum(dim=1)
    if aggregation == "sum":
        per_row = w * tok.sum(dim=1) / n_groups
    elif aggregation == "seq_mean":
        per_row = w * tok.sum(dim=1) / n_tok_row.clamp_min(1) / n_groups
    else:
        per_row = w * tok.sum(dim=1) / n_tokens
    loss = per_row.sum()

    with torch.no_grad():
        stats = _path_stats(per_row, is_correct, w, n_tok_row, active & ~row_correct,
                            safe_logp.detach() - safe_teacher)
    return loss, stats


# The released code's PPO settings (verl's actor defaults, unchanged by its scripts).
AUTHORS_CLIP = 0.2
AUTHORS_DUAL_CLIP = 3.0


def authors_objective(
    logp: Tensor,
    old_logp: Tensor,
    teacher_logp: Tensor,
    mask: Tensor,
    correct: Tensor,
    weights: Tensor,
    clip_low: float = AUTHORS_CLIP,
    clip_high: float = AUTHORS_CLIP,
    dual_clip: float = AUTHORS_DUAL_CLIP,
) -> tuple[Tensor, dict[str, float]]:
    r"""The loss the released code (a verl fork) optimises, for one micro-batch.

    Offered beside the paper's J so that a result can be traced to the objective rather than to
    its implementation. Per micro-batch, with M its response mask and A_t the OPD advantage:

        A_t      = w_i (log pi_T(a_t) - log pi_old(a_t))  on incorrect rows, 0 on correct rows
                   (the reverse-KL reward log pi_T - log pi_S, read at the behaviour policy, used
                   directly as the advantage)
        pg_t     = max(-A_t r_t, -A_t clip(r_t, 1 - clip_low, 1 + clip_high)),   r_t = pi_theta / pi_old
        pg_t     = min(pg_t, -A_t dual_clip)  where A_t < 0                      (dual-clip PPO)
        L_OPD    = sum_t pg_t M_t / sum_t M_t           over ALL response tokens of the micro-batch
        L_MLE    = sum_t -w_i log pi_theta(a_t) C_t / sum_t C_t,  C = M on correct rows with w_i > 0
        loss     = L_OPD + L_MLE

    The trainer scales each micro-batch's loss by its share of the step's rollouts (1 /
    gradient accumulation), as verl does, so unlike ``scope_objective`` the step's gradient
    depends on how the step is split into micro-batches. Against the paper: the MLE term is
    -log pi rather than -rho (the same gradient at theta = theta_old), the two paths are averaged
    over different token counts, and the OPD tokens of an incorrect rollout are clipped. verl adds
    1e-8 to each token count where this takes max(count, 1) (a relative difference below 1e-8).

    Args: as ``scope_objective`` (teacher_logp read on incorrect rows of nonzero weight only),
        plus the PPO clip range and the dual-clip bound (verl's defaults, which the released
        scripts keep).

    Returns:
        (loss, stats) with the keys of ``scope_objective``'s stats; loss_mle and loss_opd are the
        two terms above.
    """
    _check_batch(logp, old_logp, teacher_logp, mask, correct, weights)
    if not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip!r}")
    is_correct = _as_bool_rows(correct, "correct")
    w = weights.detach().to(logp.dtype)
    token_mask = _as_bool_rows(mask, "mask")
    row_correct = is_correct.unsqueeze(1).expand_as(token_mask)
    weighted = (w != 0).unsqueeze(1)
    mle_tokens = token_mask & row_correct & weighted
    opd_tokens = token_mask & ~row_correct & weighted
    zero = torch.zeros_like(logp)

    safe_logp = torch.where(token_mask, logp, zero)
    safe_old = torch.where(token_mask, old_logp.detach(), zero)
    safe_teacher = torch.where(opd_tokens, teacher_logp.detach(), safe_old)
    advantage = torch.where(opd_tokens, w.unsqueeze(1) * (safe_teacher - safe_old), zero)
    ratio = torch.exp(safe_logp - safe_old)
    clipped = torch.maximum(-advantage * ratio, -advantage * ratio.clamp(1.0 - clip_low, 1.0 + clip_high))
    pg = torch.where(advantage < 0, torch.minimum(clipped, -advantage * dual_clip), clipped)
    pg = torch.where(token_mask, pg, zero)
    nll = torch.where(mle_tokens, -w.unsqueeze(1) * safe_logp, zero)

    n_all = token_mask.sum().clamp_min(1)
    n_mle = mle_tokens.sum().clamp_min(1)
    per_row = pg.sum(dim=1) / n_all + nll.sum(dim=1) / n_mle
    loss = per_row.sum()

    with torch.no_grad():
        stats = _path_stats(per_row, is_correct, w, token_mask.sum(dim=1), opd_tokens,
                            safe_logp.detach() - safe_teacher)
    return loss, stats
