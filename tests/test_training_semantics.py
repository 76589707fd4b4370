"""Training semantics that say what they mean, each checked against a hand computation:

* a rollout cut off at max_completion_length is wrong in training as in evaluation (or graded, on request);
* "token_mean" divides by the tokens of the whole optimizer step, so one step's gradient does not depend on
  how its rollouts are split into micro-batches or processes;
* the released code's loss (``scope_loss: authors``), value and gradient, on a 2-rollout, 3-token batch;
* the GRPO recipes: the released script's (no KL, token-mean) by default, the paper table's KL as a variant.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rollout_batch import crafted_tokens, one_thread  # noqa: F401 (an autouse fixture)
from train.config import ScopeConfig, parse_config
from train.methods import build_trainer
from train.scope import authors_objective, scope_objective, step_token_count
from workbench.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"
NAN = float("nan")


def make_config(tmp_path: Path, **overrides) -> ScopeConfig:
    kwargs = dict(
        method="scope", model_name_or_path="toy:student", teacher_model="toy:teacher", output_dir=str(tmp_path),
        dataset_name="toy", toy_tiers=["toy-1"], toy_problems_per_tier=2, num_generations=4,
        per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=1, max_completion_length=16,
        learning_rate=1e-2, temperature=1.0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        bf16=False, disable_tqdm=True, seed=0, activation_checkpointing=False,
    )
    kwargs.update(overrides)
    return ScopeConfig(**kwargs)


# ------------------------------------------------------------------------------------ truncation

def crafted_generation(trainer, row: dict) -> tuple[list[str], list[list[int]]]:
    """Four rollouts of one toy problem, built to the token:

    0  finished (EOS), correct box                   -> correct under both rules
    1  cut off at max_completion_length (16 tokens, no EOS) after a complete, correct box
    2  cut off, no box at all                         -> wrong under both rules
    3  finished, wrong box                            -> wrong under both rules
    """
    tok = trainer._tokenizer
    limit = trainer.args.max_completion_length
    answer = row["answer"]
    wrong = str((int(answer) + 1) % 10)
    box = "\\boxed{" + answer + "}"
    texts = [box, box + ";1+1=2;3+3=6;5+5", "1+1=2;" * 3, "\\boxed{" + wrong + "}"]
    ids = [tok(t)["input_ids"] for t in texts]
    ids[1], ids[2] = ids[1][:limit], ids[2][:limit]
    ids[0], ids[3] = ids[0] + [tok.eos_token_id], ids[3] + [tok.eos_token_id]
    assert len(ids[1]) == len(ids[2]) == limit and tok.eos_token_id not in ids[1] + ids[2]
    assert box in tok.decode(ids[1])
    return [tok.decode(i, skip_special_tokens=True) for i in ids], ids


def score_crafted_batch(trainer, monkeypatch) -> dict:
    """TRL's own rollout pipeline (rewards, advantages, routing, teacher, weights) on the crafted rollouts."""
    row = trainer.train_dataset[0]
    texts, ids = crafted_generation(trainer, row)
    prompt_ids = trainer._tokenizer(row["prompt"])["input_ids"]
    n = len(texts)

    def generate(prompts):
        assert len(prompts) == n
        return [prompt_ids] * n, ids, None, texts, None, {}, None, []

    monkeypatch.setattr(trainer, "_generate", generate)
    trainer.model.train()
    return trainer._generate_and_score_completions([row] * n)


@pytest.mark.parametrize(("rule", "expected_correct"), [("wrong", [1, 0, 0, 0]), ("grade", [1, 1, 0, 0])])
def test_truncated_rollout_with_a_correct_box_is_routed_by_the_rule(tmp_path, monkeypatch, rule, expected_correct):
    # Two micro-batches per generation batch: weights and snapshot rows are made right after scoring.
    cfg = make_config(tmp_path, truncated_rollouts=rule, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    trainer = build_trainer(cfg)
    out = score_crafted_batch(trainer, monkeypatch)
    assert trainer._last_rewards[:, 0].tolist() == expected_correct
    assert out["scope_route"].tolist() == [bool(c) for c in expected_correct]
    # Weights by hand: each path's rollouts share its subset's weight 1 (sum1 scale); rule "grade" puts
    # two rollouts on the correct path, "wrong" one, so the incorrect path holds 3 or 2.
    weights = out["scope_weights"]
    route = out["scope_route"]
    assert weights[route].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[~route].sum().item() == pytest.approx(1.0, abs=1e-6)
    # The teacher scored exactly the incorrect rows.
    scored = ~torch.isnan(out["teacher_per_token_logps"][:, 0])
    assert scored.tolist() == [not c for c in expected_correct]
    # One of the four rollouts is cut off after a correct box: the share the rule decides.
    assert trainer._metrics["train"]["truncated/graded_correct"] == [0.25]
    rows = trainer._snapshot_rows
    assert [r["finish_reason"] for r in rows] == ["stop", "length", "length", "stop"]
    assert [r["correct"] for r in rows] == [bool(c) for c in expected_correct]
    assert rows[1]["grade_error"] == ("truncated" if rule == "wrong" else None)
    assert rows[1]["extracted"] == trainer.train_dataset[0]["answer"]  # the box was read either way


def test_truncated_rollout_rule_applies_to_grpo_rewards(tmp_path, monkeypatch):
    """GRPO's advantages come from the same rewards: the cut-off correct box earns nothing by default.
    Group rewards [1, 0, 0, 0] -> mean 0.25, std 0.5 (TRL's unbiased std), advantages (r - 0.25) / (0.5 + 1e-4)."""
    cfg = make_config(tmp_path, method="grpo", teacher_model=None, per_device_train_batch_size=4)
    trainer = build_trainer(cfg)
    out = score_crafted_batch(trainer, monkeypatch)
    std = 0.5
    expected = [0.75 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3
    assert out["advantages"].tolist() == pytest.approx(expected, rel=1e-5)


def test_truncation_and_loss_fields_are_checked(tmp_path):
    assert make_config(tmp_path).truncated_rollouts == "wrong"
    assert make_config(tmp_path).scope_loss == "paper"
    with pytest.raises(UserError, match="truncated_rollouts 'wrongs' is not one of wrong, grade; did you mean 'wrong'"):
        make_config(tmp_path, truncated_rollouts="wrongs")
    with pytest.raises(UserError, match="scope_loss 'author' is not one of paper, authors"):
        make_config(tmp_path, scope_loss="author")
    toy = str(RECIPES / "toy_scope.yaml")
    with pytest.raises(UserError, match="truncated_rollouts"):
        parse_config(["--config", toy, "--truncated_rollouts", "keep", "--output_dir", str(tmp_path / "o")])
    cfg = parse_config(["--config", toy, "--scope_loss", "authors", "--truncated_rollouts", "grade",
                        "--output_dir", str(tmp_path / "o")])
    assert (cfg.scope_loss, cfg.truncated_rollouts) == ("authors", "grade")


# ------------------------------------------------------------------------- token_mean and layouts

def test_step_token_count_by_hand():
    # 1000 tokens in a generation batch over 2 processes that feeds 8 micro-batches per process, 4 per step:
    # a step holds half of them, 500 tokens, 250 per process.
    assert step_token_count(1000, 2, 4, 8) == 250.0
    assert step_token_count(torch.tensor(90), 1, 3, 3) == 90.0
    assert step_token_count(0, 1, 1, 1) == 1.0  # an empty batch divides by 1, as TRL does
    with pytest.raises(ValueError, match="must be >= 1"):
        step_token_count(10, 0, 1, 1)


def crafted_rollouts(trainer) -> dict:
    """Eight fixed rollouts (two prompts x 4) with behaviour, teacher, routing and weights given."""
    gen = torch.Generator().manual_seed(0)
    tokens = crafted_tokens(trainer._tokenizer, gen)
    completion_mask = tokens["completion_mask"]
    return {
        **tokens,
        "old_per_token_logps": -torch.rand(8, 7, generator=gen) * 3,
        "teacher_per_token_logps": -torch.rand(8, 7, generator=gen) * 4,
        "scope_route": torch.tensor([True, False, True, False, False, True, False, False]),
        "scope_weights": torch.rand(8, generator=gen) + 0.1,
        "num_items_in_batch": completion_mask.sum(),  # 35 tokens, TRL's count over the generation batch
    }


def step_gradient(trainer, batch: dict, accumulation: int) -> torch.Tensor:
    """One optimizer step's accumulated gradient over ``accumulation`` micro-batches (rows in order)."""
    trainer.model.train()
    trainer.model.zero_grad()
    trainer.current_gradient_accumulation_steps = accumulation
    rows = len(batch["scope_route"]) // accumulation
    for i in range(accumulation):
        part = {k: (v[i * rows:(i + 1) * rows] if v.dim() else v) for k, v in batch.items()}
        trainer._compute_loss(trainer.model, part).backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).clone()


def policy_logps(trainer, part: dict) -> torch.Tensor:
    """log pi_theta of the sampled tokens through the trainer's own forward (so only the loss differs)."""
    ids = torch.cat([part["prompt_ids"], part["completion_ids"]], 1)
    attention = torch.cat([part["prompt_mask"], part["completion_mask"]], 1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention,
                                                             part["completion_ids"].size(1))
    return logps


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


LAYOUTS = ((1, 8), (2, 4), (4, 2))  # gradient accumulation x micro-batch rows


@pytest.fixture(scope="module")
def layout_trainers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layouts")
    trainers = {}
    for accumulation, rows in LAYOUTS:
        cfg = make_config(tmp / f"{accumulation}x{rows}", per_device_train_batch_size=rows,
                          gradient_accumulation_steps=accumulation, temperature=0.7, snapshot_every=0)
        trainers[accumulation] = build_trainer(cfg)
        assert trainers[accumulation].args.steps_per_generation == accumulation
    return trainers


@pytest.mark.parametrize("aggregation", ["token_mean", "sum", "seq_mean"])
def test_one_step_gradient_does_not_depend_on_the_micro_batch_layout(layout_trainers, aggregation, capsys):
    grads = {}
    for accumulation, trainer in layout_trainers.items():
        trainer.args.loss_aggregation = aggregation  # what the loss reads at each call
        grads[accumulation] = step_gradient(trainer, crafted_rollouts(trainer), accumulation)
    errors = {a: relative(grads[a], grads[1]) for a in (2, 4)}
    with capsys.disabled():
        print(f"\n{aggregation}: relative gradient error vs 1x8: 2x4 {errors[2]:.2e}, 4x2 {errors[4]:.2e}")
    assert max(errors.values()) < 1e-6


def test_token_mean_is_the_step_mean_and_the_per_micro_batch_mean_is_not(layout_trainers, capsys):
    """The step gradient equals d/dtheta of sum_(step tokens) w * token_loss / 35; dividing each micro-batch by
    its own token count instead (the previous normalisation) moves the gradient by several percent."""
    trainer = layout_trainers[1]
    trainer.args.loss_aggregation = "token_mean"
    batch = crafted_rollouts(trainer)
    got = step_gradient(trainer, batch, 1)

    def gradient(n_tokens_of_part, accumulation):
        trainer.model.zero_grad()
        rows = 8 // accumulation
        for i in range(accumulation):
            part = {k: (v[i * rows:(i + 1) * rows] if v.dim() else v) for k, v in batch.items()}
            logp = policy_logps(trainer, part)
            loss, _ = scope_objective(logp, part["old_per_token_logps"], part["teacher_per_token_logps"],
                                      part["completion_mask"], part["scope_route"], part["scope_weights"],
                                      "token_mean", n_tokens=n_tokens_of_part(part, accumulation))
            loss.backward()
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).clone()

    by_hand = gradient(lambda part, acc: 35.0, 1)
    assert relative(got, by_hand) < 1e-6
    per_micro_batch = {acc: gradient(lambda part, acc: float(part["completion_mask"].sum()) * acc, acc)
                       for acc in (2, 4)}
    errors = {acc: relative(g, by_hand) for acc, g in per_micro_batch.items()}
    with capsys.disabled():
        print(f"\nper-micro-batch token mean, relative gradient error vs the step mean: "
              f"2x4 {errors[2]:.3f}, 4x2 {errors[4]:.3f}")
    assert min(errors.values()) > 1e-2


def test_authors_loss_depends_on_the_layout_as_the_released_code_does(layout_trainers):
    """Per micro-batch token means scaled by 1 / accumulation: 1x8 differs from 4x2 (documented, not a bug)."""
    grads = {}
    for accumulation, trainer in layout_trainers.items():
        trainer.args.scope_loss = "authors"
        try:
            grads[accumulation] = step_gradient(trainer, crafted_rollouts(trainer), accumulation)
        finally:
            trainer.args.scope_loss = "paper"
    assert relative(grads[4], grads[1]) > 1e-2


DDP_WORKER = r"""
import json, os, sys
import torch
import torch.distributed as dist
from train.scope import scope_objective, step_token_count

torch.manual_seed(0)
V, T, B = 11, 6, 8
gen = torch.Generator().manual_seed(1)
ids = torch.randint(0, V, (B, T + 1), generator=gen)
lengths = torch.tensor([6, 2, 5, 1, 6, 3, 4, 6])
mask = (torch.arange(T)[None] < lengths[:, None])
old = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
teacher = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 4
route = torch.tensor([True, False, False, True, False, True, False, False])
weights = torch.rand(B, generator=gen, dtype=torch.float64) + 0.1

def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(V, 16), torch.nn.Linear(16, V)).double()

def micro_loss(model, rows, n_tokens):
    logp = torch.log_softmax(model(ids[rows, :-1]), -1).gather(-1, ids[rows, 1:].unsqueeze(-1)).squeeze(-1)
    loss, _ = scope_objective(logp, old[rows], teacher[rows], mask[rows], route[rows], weights[rows],
                              "token_mean", n_tokens=n_tokens)
    return loss

def grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])

def single_process(accumulation):
    model = make_model()
    rows = B // accumulation
    n = step_token_count(mask.sum(), 1, accumulation, accumulation)
    for i in range(accumulation):
        micro_loss(model, slice(i * rows, (i + 1) * rows), n).backward()
    return grad(model)

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model = torch.nn.parallel.DistributedDataParallel(make_model())
local = slice(rank * B // world, (rank + 1) * B // world)       # TRL lays rows out by process, in order
num_items = mask[local].sum().clone()
dist.all_reduce(num_items)                                       # TRL's gathered num_items_in_batch
accumulation, rows = 2, B // world // 2
n = step_token_count(num_items, world, accumulation, accumulation)
for i in range(accumulation):
    part = slice(local.start + i * rows, local.start + (i + 1) * rows)
    if i < accumulation - 1:
        with model.no_sync():
            micro_loss(model, part, n).backward()
    else:
        micro_loss(model, part, n).backward()                    # DDP averages the processes' gradients
two = grad(model.module)
out = {"rank": rank, "two_processes": two.tolist(), "num_items": int(num_items), "n": n}
if rank == 0:
    out.update(one_1x8=single_process(1).tolist(), one_4x2=single_process(4).tolist())
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
    json.dump(out, fh)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_token_mean_gradient_is_the_same_on_two_processes(tmp_path, capsys):
    """2 processes x 2 micro-batches x 2 rows (gloo, DDP) against one process 1x8 and 4x2, in float64."""
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["num_items"] == ranks[1]["num_items"] == 33  # 6+2+5+1+6+3+4+6 tokens
    assert ranks[0]["n"] == 33 / 2  # each process's share of the step
    reference = torch.tensor(ranks[0]["one_1x8"])
    errors = {name: relative(torch.tensor(value), reference)
              for name, value in (("4x2", ranks[0]["one_4x2"]), ("2 processes rank 0", ranks[0]["two_processes"]),
                                  ("2 processes rank 1", ranks[1]["two_processes"]))}
    with capsys.disabled():
        print("\ntoken_mean relative gradient error vs one process 1x8: "
              + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert max(errors.values()) < 1e-12


# ------------------------------------------------------------------------------ the authors' loss

def authors_batch():
    """Rollout 0: correct, w 0.5, 2 tokens (the third is padding holding NaN).
    Rollout 1: incorrect, w 1.5, 3 tokens with r = pi/pi_old = [1.5, 0.5, 4] and log pi_T - log pi_old =
    [0.5, 1, -1], so advantages A = w (log pi_T - log pi_old) = [0.75, 1.5, -1.5]."""
    old = torch.tensor([[-0.3, -0.6, NAN], [-1.0, -2.0, -0.5]], dtype=torch.float64)
    log_r = torch.tensor([[0.0, 0.0, 0.0], [math.log(1.5), math.log(0.5), math.log(4.0)]], dtype=torch.float64)
    logp = torch.tensor([[-0.2, -0.4, NAN], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logp[1] = old[1] + log_r[1]
    logp.requires_grad_(True)
    teacher = torch.tensor([[NAN] * 3, [-0.5, -1.0, -1.5]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return logp, old, teacher, mask, torch.tensor([True, False]), torch.tensor([0.5, 1.5], dtype=torch.float64)


def test_authors_loss_by_hand():
    r"""PPO terms on rollout 1 (clip 0.2, dual clip 3):
      t0  A =  0.75, r = 1.5: max(-0.75*1.5, -0.75*1.2) = -0.9       (clipped above: no gradient)
      t1  A =  1.5,  r = 0.5: max(-1.5*0.5,  -1.5*0.8)  = -0.75      (below the range, A > 0: unclipped)
      t2  A = -1.5,  r = 4:   max(1.5*4, 1.5*1.2) = 6, min(6, 1.5*3) = 4.5  (dual clip: no gradient)
    L_OPD = (-0.9 - 0.75 + 4.5) / 5 tokens of the micro-batch (the correct rollout's 2 count) = 0.57
    L_MLE = (0.5*0.2 + 0.5*0.4) / 2 correct-path tokens = 0.15;  loss = 0.72
    d loss / d log pi: rollout 0: -w / 2 = -0.25 per token; rollout 1: [0, -A r / 5, 0] = [0, -0.15, 0]."""
    logp, old, teacher, mask, correct, weights = authors_batch()
    loss, stats = authors_objective(logp, old, teacher, mask, correct, weights)
    assert loss.item() == pytest.approx(0.72, abs=1e-12)
    assert (stats["loss_opd"], stats["loss_mle"]) == pytest.approx((0.57, 0.15), abs=1e-12)
    assert (stats["n_tokens_mle"], stats["n_tokens_opd"]) == (2, 3)
    loss.backward()
    expected = torch.tensor([[-0.25, -0.25, 0.0], [0.0, -0.15, 0.0]], dtype=torch.float64)
    assert torch.allclose(logp.grad, expected, atol=1e-12)
    # The sign: a token the teacher likes more than the behaviour policy did (A > 0) is pushed up.
    assert logp.grad[1, 1] < 0


def test_authors_loss_without_the_dual_clip_and_with_the_ratio_at_one():
    logp, old, teacher, mask, correct, weights = authors_batch()
    # No dual clip (bound far away): t2 costs 1.5 * 4 = 6 and passes its gradient -A r / 5 = 1.2.
    loss, _ = authors_objective(logp, old, teacher, mask, correct, weights, dual_clip=1e9)
    assert loss.item() == pytest.approx((-0.9 - 0.75 + 6.0) / 5 + 0.15, abs=1e-12)
    loss.backward()
    assert logp.grad[1].tolist() == pytest.approx([0.0, -0.15, 1.2], abs=1e-12)
    # On-policy (pi = pi_old): no clip acts; OPD = -sum A / 5 tokens = -(0.75 + 1.5 - 1.5) / 5 = -0.15, and its
    # gradient is -A / 5 per token: the policy gradient of the reward log pi_T - log pi_S, weighted.
    on_policy = old.clone()
    on_policy[0] = torch.tensor([-0.2, -0.4, NAN], dtype=torch.float64)
    on_policy.requires_grad_(True)
    loss, _ = authors_objective(on_policy, on_policy.detach(), teacher, mask, correct, weights)
    assert loss.item() == pytest.approx(-0.15 + 0.15, abs=1e-12)
    loss.backward()
    assert on_policy.grad[1].tolist() == pytest.approx([-0.15, -0.3, 0.3], abs=1e-12)


def test_trainer_uses_the_authors_loss_scaled_by_accumulation(tmp_path):
    cfg = make_config(tmp_path, scope_loss="authors", per_device_train_batch_size=4, gradient_accumulation_steps=2,
                      temperature=0.7, snapshot_every=0)
    trainer = build_trainer(cfg)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2
    batch = crafted_rollouts(trainer)
    part = {k: (v[:4] if v.dim() else v) for k, v in batch.items()}
    got = trainer._compute_loss(trainer.model, part)
    with torch.no_grad():
        logp = policy_logps(trainer, part)
    expected, _ = authors_objective(logp, part["old_per_token_logps"], part["teacher_per_token_logps"],
                                    part["completion_mask"], part["scope_route"], part["scope_weights"])
    assert got.item() == pytest.approx(expected.item() / 2, rel=1e-5)
    logged = trainer._metrics["train"]
    assert logged["loss/mle"][-1] + logged["loss/opd"][-1] == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------------------ GRPO recipes

def test_grpo_recipes_are_the_released_script_and_the_paper_table(tmp_path):
    out = ["--output_dir", str(tmp_path / "o")]
    default = parse_config(["--config", str(RECIPES / "toy_grpo.yaml"), *out])
    with_kl = parse_config(["--config", str(RECIPES / "toy_grpo_kl.yaml"), *out])
    assert (default.method, default.beta, default.loss_type, default.epsilon) == ("grpo", 0.0, "dapo", 0.2)
    assert (with_kl.method, with_kl.beta, with_kl.loss_type, with_kl.epsilon) == ("grpo", 1e-4, "dapo", 0.2)
    differ = {f.name for f in dataclasses.fields(default) if getattr(default, f.name) != getattr(with_kl, f.name)}
    assert differ == {"beta"}
    for name in ("paper_r1distill_skywork", "paper_qwen3_base"):
        grpo = parse_config(["--config", str(RECIPES / f"{name}.yaml"), "--method", "grpo", *out])
        assert (grpo.beta, grpo.loss_type, grpo.epsilon, grpo.truncated_rollouts) == (0.0, "dapo", 0.2, "wrong")
        assert parse_config(["--config", str(RECIPES / f"{name}.yaml"), "--method", "grpo", "--beta", "1e-4",
                             *out]).beta == 1e-4
