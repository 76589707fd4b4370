"""Tests for the SCOPE objective: weights (Eqs. 4-5), path losses (Eqs. 2-3) and J (Eq. 6).

Expected values are worked out by hand from the paper's formulas, or by an independent
per-rollout loop written here in plain Python, never by the functions under test.
"""

import csv
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from repo_scripts import load_script

from train.scope import (
    ABLATIONS,
    WeightConfig,
    effective_sample_size,
    mle_token_loss,
    opd_token_loss,
    scope_objective,
    scope_weights,
)

torch.set_num_threads(1)
NAN = float("nan")
INF = float("inf")
REPO = Path(__file__).resolve().parents[1]


def _weights(rows, cfg=WeightConfig()):
    """rows: (group, correct, student PPL, teacher PPL) with PPLs in PPL space (not log)."""
    g = torch.tensor([r[0] for r in rows])
    c = torch.tensor([r[1] for r in rows], dtype=torch.bool)
    s = torch.tensor([r[2] for r in rows], dtype=torch.float64).log()
    t = torch.tensor([r[3] for r in rows], dtype=torch.float64).log()
    return scope_weights(g, c, s, t, cfg)


def _random_batch(seed, n_groups=12, n_rollouts=8, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(1000, generator=gen)[:n_groups] - 500  # sparse, some negative
    g = ids.repeat_interleave(n_rollouts)
    c = torch.rand(g.shape[0], generator=gen) < 0.5
    s = torch.empty(g.shape[0], dtype=dtype).uniform_(0.05, 2.5, generator=gen)
    t = torch.empty(g.shape[0], dtype=dtype).uniform_(0.05, 3.0, generator=gen)
    perm = torch.randperm(g.shape[0], generator=gen)
    return g[perm], c[perm], s[perm], t[perm]


def _subsets(g, c):
    out = defaultdict(list)
    for i, key in enumerate(zip(g.tolist(), c.tolist())):
        out[key].append(i)
    return out


def _authors_loop(g, c, s, t, tau):
    """Independent copy of the released code's semantics: per group and subset,
    softmax(+mean log-prob / tau) = softmax(-log PPL / tau), times subset size; singletons get 1."""
    s, t = s.tolist(), t.tolist()
    out = [0.0] * len(s)
    for (_, is_correct), idx in _subsets(g, c).items():
        log_ppl = s if is_correct else t
        if len(idx) == 1:
            out[idx[0]] = 1.0
            continue
        z = [-log_ppl[i] / tau for i in idx]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        for i, v in zip(idx, e):
            out[i] = v / sum(e) * len(idx)
    return torch.tensor(out, dtype=torch.float64)


# ---------------------------------------------------------------- weights: the paper's example

def test_figure2_example_in_one_shuffled_mixed_batch():
    rows = [
        (7, True, 1.2, NAN), (7, True, 2.6, NAN), (7, True, 3.8, NAN),
        (7, False, 1.5, 4.5), (7, False, 1.5, 2.9), (7, False, 1.5, 1.7),
        (-3, True, 2.0, NAN), (-3, True, 2.0, NAN), (-3, False, 9.0, 2.0),
        (1000, True, 1.1, NAN), (1000, True, 1.9, NAN), (1000, True, 5.0, NAN),
        (42, False, 1.0, 4.5), (42, False, 1.0, 2.9), (42, False, 1.0, 1.7),
    ]
    perm = [11, 3, 14, 0, 8, 5, 12, 1, 9, 6, 2, 13, 4, 10, 7]
    w = _weights([rows[i] for i in perm])
    by_row = {perm[k]: float(w[k]) for k in range(len(perm))}

    student = [by_row[0], by_row[1], by_row[2]]
    assert student == pytest.approx([0.158, 0.342, 0.500], abs=5e-4)
    assert student == pytest.approx([1.2 / 7.6, 2.6 / 7.6, 3.8 / 7.6], abs=1e-12)
    # The paper prints 0.192, 0.298, 0.510; exact values are 0.19235, 0.29848, 0.50917
    # (the paper rounds the last so the three sum to 1), so "to 3 decimals" means within 1e-3.
    inv = [1 / 4.5, 1 / 2.9, 1 / 1.7]
    for group_rows in ([3, 4, 5], [12, 13, 14]):
        teacher = [by_row[i] for i in group_rows]
        assert teacher == pytest.approx([0.192, 0.298, 0.510], abs=1e-3)
        assert teacher == pytest.approx([v / sum(inv) for v in inv], abs=1e-12)
    assert [by_row[6], by_row[7], by_row[8]] == pytest.approx([0.5, 0.5, 1.0], abs=1e-12)
    assert [by_row[9], by_row[10], by_row[11]] == pytest.approx([1.1 / 8.0, 1.9 / 8.0, 5.0 / 8.0], abs=1e-12)


# ---------------------------------------------------------------- weights: hand values per mode

# Correct pair with student PPL 1 and 3, incorrect pair with teacher PPL 1 and 3.
PAIR_ROWS = [(0, True, 1.0, NAN), (0, True, 3.0, NAN), (1, False, 5.0, 1.0), (1, False, 5.0, 3.0)]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("ppl", [0.25, 0.75, 0.75, 0.25]),
        ("reversed", [0.75, 0.25, 0.25, 0.75]),
        ("uniform", [0.5, 0.5, 0.5, 0.5]),
        ("off", [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_two_rollout_hand_values_per_mode(mode, expected):
    w = _weights(PAIR_ROWS, WeightConfig(student_mode=mode, teacher_mode=mode))
    assert w.tolist() == pytest.approx(expected, abs=1e-12)
    w = _weights(PAIR_ROWS, WeightConfig(student_mode=mode, teacher_mode=mode, scale="mean1"))
    assert w.tolist() == pytest.approx([2 * v for v in expected], abs=1e-12)


def test_two_rollout_hand_values_tau_two():
    r3 = math.sqrt(3.0)
    w = _weights(PAIR_ROWS, WeightConfig(tau=2.0))
    assert w.tolist() == pytest.approx([1 / (1 + r3), r3 / (1 + r3), r3 / (1 + r3), 1 / (1 + r3)], abs=1e-12)


def test_one_path_off_leaves_the_other_untouched():
    w = _weights(PAIR_ROWS, WeightConfig(student_mode="off"))
    assert w.tolist() == pytest.approx([0.0, 0.0, 0.75, 0.25], abs=1e-12)
    w = _weights(PAIR_ROWS, WeightConfig(teacher_mode="off"))
    assert w.tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0], abs=1e-12)


# ---------------------------------------------------------------- weights: properties

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["scope", "no_student_weight", "opposite_teacher_weight", "authors_code"])
def test_each_subset_sums_to_one_or_averages_to_one(seed, name):
    cfg = ABLATIONS[name]
    g, c, s, t = _random_batch(seed)
    w = scope_weights(g, c, s, t, cfg)
    assert bool((w > 0).all())
    for idx in _subsets(g, c).values():
        total = float(w[idx].sum())
        assert total == pytest.approx(1.0 if cfg.scale == "sum1" else float(len(idx)), abs=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_monotone_in_perplexity(seed):
    g, c, s, t = _random_batch(seed)
    w = scope_weights(g, c, s, t)
    for (_, is_correct), idx in _subsets(g, c).items():
        log_ppl = (s if is_correct else t)[idx]
        order = torch.argsort(log_ppl)
        diffs = w[idx][order].diff()
        assert bool((diffs > 0).all() if is_correct else (diffs < 0).all())


def test_large_tau_is_uniform_and_small_tau_is_argmax():
    g, c, s, t = _random_batch(5)
    subsets = _subsets(g, c)
    w = scope_weights(g, c, s, t, WeightConfig(tau=1e9))
    for idx in subsets.values():
        assert w[idx].tolist() == pytest.approx([1 / len(idx)] * len(idx), abs=1e-8)
    # Log-PPLs one unit apart and tau = 0.01: the runner-up gets exp(-100) of the winner.
    g = torch.tensor([0, 0, 0, 0, 0, 0])
    c = torch.tensor([True, True, True, False, False, False])
    lp = torch.tensor([0.5, 2.5, 1.5, 0.5, 2.5, 1.5], dtype=torch.float64)
    w = scope_weights(g, c, lp, lp, WeightConfig(tau=0.01))
    assert w.tolist() == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.0, 0.0], abs=1e-40)


def test_reversed_is_ppl_on_negated_log_ppl_and_swaps_pairs():
    g, c, s, t = _random_batch(6)
    rev = scope_weights(g, c, s, t, WeightConfig(student_mode="reversed"))
    assert torch.allclose(rev, scope_weights(g, c, -s, t), atol=1e-14)
    rev = scope_weights(g, c, s, t, WeightConfig(teacher_mode="reversed"))
    assert torch.allclose(rev, scope_weights(g, c, s, -t), atol=1e-14)
    # On a pair, reversing swaps the two weights, so the average of both is uniform.
    ppl = _weights(PAIR_ROWS)
    rev = _weights(PAIR_ROWS, WeightConfig(student_mode="reversed", teacher_mode="reversed"))
    p = ppl.tolist()
    assert rev.tolist() == pytest.approx([p[1], p[0], p[3], p[2]], abs=1e-12)
    assert ((ppl + rev) / 2).tolist() == pytest.approx([0.5] * 4, abs=1e-12)


@pytest.mark.parametrize("scale", ["sum1", "mean1"])
def test_singletons_and_one_sided_groups(scale):
    rows = [
        (1, True, 3.0, NAN), (1, False, 2.0, 7.0),  # one of each: both weight 1
        (2, True, 1.5, NAN), (2, True, 2.5, NAN), (2, True, 4.0, NAN),  # all correct
        (3, False, 9.0, 2.0), (3, False, 9.0, 4.0),  # all wrong
        (4, False, 9.0, 1.3),  # a one-rollout group
    ]
    w = _weights(rows, WeightConfig(scale=scale))
    k2, k3 = (1.0, 1.0) if scale == "sum1" else (3.0, 2.0)
    expected = [1.0, 1.0, k2 * 1.5 / 8, k2 * 2.5 / 8, k2 * 4.0 / 8, k3 * 2 / 3, k3 * 1 / 3, 1.0]
    assert w.tolist() == pytest.approx(expected, abs=1e-12)


def test_non_finite_log_ppl_is_excluded():
    g = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    c = torch.tensor([True, True, True, True, False, False, False, False])
    s = torch.tensor([0.0, math.log(3.0), NAN, INF, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([NAN, NAN, NAN, NAN, NAN, -INF, 0.0, 0.0], dtype=torch.float64)
    w = scope_weights(g, c, s, t)
    # Group 0: only PPL 1 and 3 count; group 1: nothing finite; group 2: a plain pair.
    assert w.tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5], abs=1e-12)
    w = scope_weights(g, c, s, t, WeightConfig(scale="mean1"))
    assert w.tolist() == pytest.approx([0.5, 1.5, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], abs=1e-12)
    w = scope_weights(g, c, s, t, WeightConfig(student_mode="uniform"))
    assert w[:4].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0], abs=1e-12)
    # A singleton whose log PPL is not finite gets 0, not the singleton's 1.
    w = scope_weights(torch.tensor([5]), torch.tensor([False]), torch.tensor([0.0]), torch.tensor([NAN]))
    assert w.tolist() == [0.0]


def test_teacher_log_ppl_is_never_read_on_correct_rows():
    g, c, s, t = _random_batch(7)
    base = scope_weights(g, c, s, t)
    for filler in (NAN, INF, -INF, 1e30):
        t2 = torch.where(c, torch.full_like(t, filler), t)
        assert torch.equal(scope_weights(g, c, s, t2), base)


def test_invariant_to_batch_order_and_group_labels():
    g, c, s, t = _random_batch(8)
    w = scope_weights(g, c, s, t)
    perm = torch.randperm(g.shape[0], generator=torch.Generator().manual_seed(1))
    assert torch.allclose(scope_weights(g[perm], c[perm], s[perm], t[perm]), w[perm], atol=1e-14)
    assert torch.allclose(scope_weights(g * 1_000_003 - 17, c, s, t), w, atol=1e-14)


def test_float32_inputs_and_int_correctness():
    g, c, s, t = _random_batch(9)
    w64 = scope_weights(g, c, s, t)
    w32 = scope_weights(g, c.long(), s.float(), t.float())
    assert w32.dtype == torch.float32
    assert torch.allclose(w32.double(), w64, atol=1e-6)


def test_empty_batch():
    empty = torch.zeros(0)
    assert scope_weights(torch.zeros(0, dtype=torch.long), empty.bool(), empty, empty).shape == (0,)


def test_effective_sample_size_by_hand():
    # subsets 1, 3, 7, 9 (ascending): one rollout; uniform pair; 0.2/0.8 -> 1 / 0.68; all weight 0
    weights = torch.tensor([0.5, 0.5, 1.0, 0.2, 0.8, 0.0, 0.0])
    ess, size = effective_sample_size(weights, torch.tensor([3, 3, 1, 7, 7, 9, 9]))
    assert ess.dtype == size.dtype == torch.float64
    assert ess.tolist() == pytest.approx([1.0, 2.0, 1 / 0.68, 0.0], abs=1e-12)
    assert size.tolist() == [1.0, 2.0, 2.0, 2.0]
    # the weights SCOPE itself gives: every finite subset lies between 1 and its size
    group = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2])
    correct = torch.tensor([True, False, True, True, False, False, False, True])
    lppl = torch.tensor([0.1, 0.9, 0.4, 0.2, 0.3, 2.0, 0.7, 0.5])
    w = scope_weights(group, correct, lppl, lppl, WeightConfig(tau=0.5))
    ess, size = effective_sample_size(w, group * 2 + correct.long())
    assert size.tolist() == [1.0, 2.0, 3.0, 1.0, 1.0]
    assert ((ess >= 1 - 1e-12) & (ess <= size + 1e-12)).all() and ess[2] < 3
    with pytest.raises(ValueError, match="1-D of one length"):
        effective_sample_size(weights, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs",
    [{"tau": 0.0}, {"tau": -1.0}, {"tau": INF}, {"tau": NAN}, {"student_mode": "inverse"},
     {"teacher_mode": "PPL"}, {"scale": "mean"}],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(ValueError):
        WeightConfig(**kwargs)


def test_bad_inputs_raise():
    g = torch.tensor([0, 0, 1])
    c = torch.tensor([True, False, True])
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="batch size"):
        scope_weights(g, c, x, torch.zeros(4))
    with pytest.raises(ValueError, match="1-D"):
        scope_weights(g, c, x.reshape(3, 1), x)
    with pytest.raises(ValueError, match="group_ids"):
        scope_weights(g.float(), c, x, x)
    with pytest.raises(ValueError, match="correct"):
        scope_weights(g, torch.tensor([0, 2, 1]), x, x)
    with pytest.raises(ValueError, match="student_log_ppl"):
        scope_weights(g, c, torch.zeros(3, dtype=torch.long), x)


# ---------------------------------------------------------------- presets and the authors' code

def test_ablation_presets_match_the_paper_table():
    with open(REPO / "results" / "reference" / "ablation_dpaw.csv", newline="") as f:
        variants = {row["variant"] for row in csv.DictReader(f)}
    assert set(ABLATIONS) == variants | {"authors_code"}
    modes = {k: (v.student_mode, v.teacher_mode, v.scale, v.tau) for k, v in ABLATIONS.items()}
    assert modes == {
        "scope": ("ppl", "ppl", "sum1", 1.0),
        "no_dpaw_uniform_weights": ("uniform", "uniform", "sum1", 1.0),
        "no_student_weight": ("uniform", "ppl", "sum1", 1.0),
        "no_teacher_weight": ("ppl", "uniform", "sum1", 1.0),
        "opposite_student_weight": ("reversed", "ppl", "sum1", 1.0),
        "opposite_teacher_weight": ("ppl", "reversed", "sum1", 1.0),
        "authors_code": ("reversed", "ppl", "mean1", 1.0),
    }


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_authors_code_preset_matches_a_per_rollout_loop(seed, tau):
    gen = torch.Generator().manual_seed(100 + seed)
    g, c, s, t = _random_batch(seed, n_groups=int(torch.randint(1, 40, (1,), generator=gen)))
    g = g.clone()
    g[:3] = torch.tensor([9001, 9002, 9003])  # force some singletons
    cfg = WeightConfig(tau=tau, student_mode="reversed", scale="mean1")
    got = scope_weights(g, c, s, t, cfg)
    assert torch.allclose(got, _authors_loop(g, c, s, t, tau), atol=1e-6, rtol=0)
    # On the incorrect path the code agrees with the paper up to the subset-size factor.
    paper = scope_weights(g, c, s, t, WeightConfig(tau=tau))
    for (_, is_correct), idx in _subsets(g, c).items():
        if not is_correct:
            assert torch.allclose(got[idx], paper[idx] * len(idx), atol=1e-12)


def test_weights_benchmark_agrees_on_a_small_batch():
    result = load_script("benchmarks/bench_weights.py").run(n_prompts=8, n_rollouts=4, repeats=1)
    assert result["max_abs_diff"] <= 1e-6
    assert result["n_rollouts_total"] == 32
    assert result["speedup"] > 0


# ---------------------------------------------------------------- path losses and gradients

def _table_policy(seed, n_pos=6, vocab=5):
    """A learnable logits table: position t has its own categorical over the vocabulary."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_pos, vocab, generator=gen, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, vocab, (n_pos,), generator=gen)
    teacher = torch.log_softmax(torch.randn(n_pos, vocab, generator=gen, dtype=torch.float64), -1)
    return theta, actions, teacher[torch.arange(n_pos), actions]


def _score_function(theta, actions):
    """d log pi(a_t) / d theta[t, :] = onehot(a_t) - softmax(theta[t]), by hand."""
    p = torch.softmax(theta.detach(), -1)
    return torch.nn.functional.one_hot(actions, theta.shape[1]).double() - p


def test_opd_gradient_is_sampled_token_reverse_kl_policy_gradient():
    theta, actions, teacher_logp = _table_policy(0)
    logp = torch.log_softmax(theta, -1)[torch.arange(theta.shape[0]), actions]
    loss = opd_token_loss(logp, logp.detach(), teacher_logp).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    log_ratio = (logp.detach() - teacher_logp).unsqueeze(1)
    assert torch.allclose(grad, log_ratio * _score_function(theta, actions), atol=1e-12)
    assert loss.item() == pytest.approx(float((logp.detach() - teacher_logp).sum()), abs=1e-12)


def test_mle_gradient_is_negative_log_likelihood_gradient():
    theta, actions, _ = _table_policy(1)
    logp = torch.log_softmax(theta, -1)[torch.arange(theta.shape[0]), actions]
    loss = mle_token_loss(logp, logp.detach()).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.allclose(grad, -_score_function(theta, actions), atol=1e-12)
    assert loss.item() == pytest.approx(-theta.shape[0], abs=1e-12)


def test_token_losses_with_stale_policy():
    logp = torch.tensor([-1.0, -2.0], dtype=torch.float64)
    old = logp - torch.tensor([math.log(2.0), math.log(0.5)], dtype=torch.float64)
    assert mle_token_loss(logp, old).tolist() == pytest.approx([-2.0, -0.5], abs=1e-12)
    teacher = torch.tensor([-1.5, -1.0], dtype=torch.float64)
    assert opd_token_loss(logp, old, teacher).tolist() == pytest.approx([1.0, -0.5], abs=1e-12)


@pytest.mark.parametrize("aggregation", ["sum", "token_mean"])
def test_objective_gradient_is_weighted_sum_of_path_gradients(aggregation):
    thetas, grads_expected, logps, teachers = [], [], [], []
    weights, correct = [0.3, 0.7], [True, False]
    for seed in (2, 3):
        theta, actions, teacher_logp = _table_policy(seed)
        thetas.append(theta)
        logps.append(torch.log_softmax(theta, -1)[torch.arange(theta.shape[0]), actions])
        teachers.append(teacher_logp)
        grads_expected.append(_score_function(theta, actions))
    logp = torch.stack(logps)
    mask = torch.ones_like(logp, dtype=torch.bool)
    loss, _ = scope_objective(logp, logp.detach(), torch.stack(teachers), mask, torch.tensor(correct),
                              torch.tensor(weights, dtype=torch.float64), aggregation, n_groups=1,
                              n_tokens=float(mask.sum()))
    grads = torch.autograd.grad(loss, thetas)
    norm = 1.0 if aggregation == "sum" else float(mask.sum())
    log_ratio = (logps[1].detach() - teachers[1]).unsqueeze(1)
    assert torch.allclose(grads[0], -weights[0] * grads_expected[0] / norm, atol=1e-12)
    assert torch.allclose(grads[1], weights[1] * log_ratio * grads_expected[1] / norm, atol=1e-12)


# ---------------------------------------------------------------- the objective J on a toy batch

def _toy_batch():
    """Two groups; padding and the teacher on correct rows hold NaN/inf on purpose.

    row 0: group A, correct, w 0.6, 2 tokens, rho = [1, 2]  -> MLE tokens [-1, -2]
    row 1: group A, wrong,   w 1.0, 3 tokens, rho = 1, logp - teacher = [-0.5, -1, 1]
    row 2: group B, wrong,   w 0.25, 1 token, logp - teacher = [-1]
    row 3: group B, correct, w 2.0, 3 tokens, rho = 1   -> MLE tokens [-1, -1, -1]
    """
    logp = torch.tensor([[-0.5, -1.0, NAN], [-1.0, -2.0, -0.5], [-2.0, NAN, NAN], [-0.1, -0.2, -0.3]],
                        dtype=torch.float64, requires_grad=True)
    old = logp.detach().clone()
    old[0, 1] = -1.0 - math.log(2.0)
    teacher = torch.tensor([[NAN] * 3, [-0.5, -1.0, -1.5], [-1.0, -INF, NAN], [NAN] * 3], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]])
    correct = torch.tensor([True, False, False, True])
    weights = torch.tensor([0.6, 1.0, 0.25, 2.0], dtype=torch.float64)
    return logp, old, teacher, mask, correct, weights


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [
        ("sum", (0.6 * -3 + 1.0 * -0.5 + 0.25 * -1 + 2.0 * -3) / 2),  # -4.275
        ("seq_mean", (0.6 * -1.5 + 1.0 * (-0.5 / 3) + 0.25 * -1 + 2.0 * -1) / 2),  # -1.658333
        # The 9 response tokens of this batch are here a third of the step's 27.
        ("token_mean", (0.6 * -3 + 1.0 * -0.5 + 0.25 * -1 + 2.0 * -3) / 27),  # -0.316667
    ],
)
def test_objective_hand_values(aggregation, expected):
    logp, old, teacher, mask, correct, weights = _toy_batch()
    loss, stats = scope_objective(logp, old, teacher, mask, correct, weights, aggregation, n_groups=2,
                                  n_tokens=27)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert stats["loss_mle"] + stats["loss_opd"] == pytest.approx(expected, abs=1e-12)
    loss.backward()
    assert bool(torch.isfinite(logp.grad).all())


def test_objective_sum_stats_and_gradient_by_hand():
    logp, old, teacher, mask, correct, weights = _toy_batch()
    loss, stats = scope_objective(logp, old, teacher, mask, correct, weights, "sum", n_groups=2)
    assert stats == pytest.approx({
        "loss_mle": (0.6 * -3 + 2.0 * -3) / 2,
        "loss_opd": (-0.5 + 0.25 * -1) / 2,
        "n_tokens_mle": 5, "n_tokens_opd": 4, "n_rollouts_mle": 2, "n_rollouts_opd": 2,
        "weight_sum_mle": 2.6, "weight_sum_opd": 1.25,
        "opd_log_ratio_mean": (-0.5 - 1.0 + 1.0 - 1.0) / 4,
    }, abs=1e-12)
    loss.backward()
    # d/dlogp: MLE token -> -w * rho / G; OPD token -> w * rho * (logp - teacher) / G.
    expected = torch.tensor([[-0.3, -0.6, 0.0], [-0.25, -0.5, 0.5], [-0.125, 0.0, 0.0], [-1.0, -1.0, -1.0]],
                            dtype=torch.float64)
    assert torch.allclose(logp.grad, expected, atol=1e-12)


def test_zero_weight_rows_contribute_nothing_even_when_broken():
    logp, old, teacher, mask, correct, weights = _toy_batch()
    broken_logp = torch.cat([logp.detach(), torch.tensor([[-1.0, -1.0, NAN]], dtype=torch.float64)])
    broken_logp.requires_grad_(True)
    loss, stats = scope_objective(
        broken_logp,
        torch.cat([old, torch.tensor([[NAN, -1.0, NAN]], dtype=torch.float64)]),
        torch.cat([teacher, torch.tensor([[-INF, -INF, -INF]], dtype=torch.float64)]),
        torch.cat([mask, torch.tensor([[1, 1, 0]])]),
        torch.cat([correct, torch.tensor([False])]),
        torch.cat([weights, torch.tensor([0.0], dtype=torch.float64)]),
        "sum",
        n_groups=2,
    )
    assert loss.item() == pytest.approx(-4.275, abs=1e-12)
    loss.backward()
    assert bool(torch.isfinite(broken_logp.grad).all())
    assert broken_logp.grad[4].tolist() == [0.0, 0.0, 0.0]
    assert stats["n_rollouts_opd"] == 3


def test_objective_bad_inputs_raise():
    logp, old, teacher, mask, correct, weights = _toy_batch()
    with pytest.raises(ValueError, match="n_groups"):
        scope_objective(logp, old, teacher, mask, correct, weights, "sum")
    with pytest.raises(ValueError, match="n_tokens"):
        scope_objective(logp, old, teacher, mask, correct, weights, "token_mean", n_groups=2)
    with pytest.raises(ValueError, match="aggregation"):
        scope_objective(logp, old, teacher, mask, correct, weights, "mean", n_groups=2)
    with pytest.raises(ValueError, match="teacher_logp"):
        scope_objective(logp, old, teacher[:, :2], mask, correct, weights, "sum", n_groups=2)
    with pytest.raises(ValueError, match="weights"):
        scope_objective(logp, old, teacher, mask, correct, weights[:3], "sum", n_groups=2)


def test_weight_config_is_where_its_values_are_judged():
    """tau, the path modes and the scale are checked here and nowhere else (train.config and analysis build
    a WeightConfig to check them): a UserError, so the command lines print one line."""
    from workbench.errors import UserError

    for tau in (0, -1.0, float("inf"), float("nan"), True, "1"):
        with pytest.raises(UserError, match=r"^tau must be a finite number > 0, got "):
            WeightConfig(tau=tau)
    with pytest.raises(UserError, match=r"^teacher_mode must be one of ppl, uniform, reversed, off, got 'revresed'; "
                                        r"did you mean 'reversed'\?$"):
        WeightConfig(teacher_mode="revresed")
    with pytest.raises(UserError, match=r"^scale must be one of sum1, mean1, got 'sum'"):
        WeightConfig(scale="sum")
    assert WeightConfig(tau=3).tau == 3 and WeightConfig(tau=1e-3, student_mode="off", scale="mean1").scale == "mean1"
