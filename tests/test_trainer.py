"""ScopeTrainer and the method switch: real training steps (scope, opd, grpo, kd), the loss against
train.scope, the teacher's log-probs, the vocabulary check, snapshots and the paper recipes offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from rollout_batch import crafted_tokens, one_thread  # noqa: F401 (an autouse fixture)
from train.config import ScopeConfig, parse_config
from train.methods import build_trainer, train_run
from train.scope import scope_objective, scope_weights
from workbench.models import TokenizerMismatch
from workbench.perplexity import log_perplexity
from workbench.records import read_records

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "train" / "recipes"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """(student, teacher): the committed toy models when built, else tiny random ones on the toy tokenizer."""
    from workbench.toy import STUDENT_DIR, TEACHER_DIR

    if (STUDENT_DIR / "config.json").is_file() and (TEACHER_DIR / "config.json").is_file():
        return str(STUDENT_DIR), str(TEACHER_DIR)
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from workbench.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    out = tmp_path_factory.mktemp("toy_like")
    paths = []
    for name, seed, width, layers in (("student", 0, 32, 1), ("teacher", 1, 48, 2)):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, bos_token_id=None, max_position_embeddings=128,
        ))
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model.save_pretrained(out / name)
        tok.save_pretrained(out / name)
        paths.append(str(out / name))
    return paths[0], paths[1]


def make_config(tmp_path: Path, models: tuple[str, str], **overrides) -> ScopeConfig:
    student, teacher = models
    kwargs = dict(
        method="scope", model_name_or_path=student, teacher_model=teacher, output_dir=str(tmp_path),
        dataset_name="toy", toy_tiers=["toy-1", "toy-2", "toy-3"], toy_problems_per_tier=2,
        num_generations=4, per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=2,
        max_completion_length=16, learning_rate=1e-2, temperature=1.0, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
        activation_checkpointing=False,
    )
    kwargs.update(overrides)
    return ScopeConfig(**kwargs)


def student_params(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def direct_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature=1.0):
    """log-softmax of a plain forward at each completion position, read at the sampled token."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits.float() / temperature
    width = completion_ids.size(1)
    logp = torch.log_softmax(logits[:, -width - 1 : -1], -1)
    return logp.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def parity_reward(completion_ids, **_):
    """Stand-in verifier: 1 when the token ids sum to an even number. A random student never answers
    right and the toy student almost always does, so the real grader would often give every rollout
    of a group the same reward, GRPO zero advantages and nothing to learn from."""
    return [float(sum(ids) % 2 == 0) for ids in completion_ids]


def check_snapshots(folder: Path, cfg: ScopeConfig) -> None:
    """One row per rollout, routed by correctness, weights summing to 1 per (group, path)."""
    rows = read_records(folder / "snapshots")
    assert len(rows) == cfg.max_steps * cfg.per_device_train_batch_size
    assert rows["group_id"].nunique() == len(rows) // cfg.num_generations
    routed_by_correctness = rows["correct"] if cfg.method == "scope" else pd.Series(False, index=rows.index)
    assert (rows["path"] == "mle").tolist() == routed_by_correctness.tolist()
    sums = rows.groupby(["group_id", "path"])["weight"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-5)
    assert (rows["n_tokens"] == rows["student_logps"].map(len)).all()
    wrong = rows[rows["path"] == "opd"]
    assert (wrong["n_tokens"] == wrong["teacher_logps"].map(len)).all()
    assert (rows.loc[rows["path"] == "mle", "teacher_logps"].map(len) == 0).all()
    nll = -wrong["teacher_logps"].map(lambda v: float(sum(v) / len(v)))
    assert wrong["teacher_log_ppl"].to_numpy() == pytest.approx(nll.to_numpy(), rel=1e-4)
    student_nll = -rows["student_logps"].map(lambda v: float(sum(v) / len(v)))
    assert rows["student_log_ppl"].to_numpy() == pytest.approx(student_nll.to_numpy(), rel=1e-4)


@pytest.mark.parametrize("method", ["scope", "opd", "grpo"])
def test_two_training_steps_change_the_student_and_log(tmp_path, models, method):
    overrides = {"method": method}
    if method == "opd":
        overrides.update(num_generations=1, per_device_train_batch_size=4)
    if method == "grpo":  # hot sampling so that rollouts, hence parity rewards, differ inside a group
        overrides.update(teacher_model=None, temperature=3.0)
    cfg = make_config(tmp_path, models, **overrides)
    trainer = build_trainer(cfg)
    if method == "grpo":
        trainer.reward_funcs[0] = parity_reward
    before = student_params(trainer)
    summary = train_run(cfg, trainer)
    assert summary["global_step"] == 2
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(changed) == len(before)
    history = [json.loads(line) for line in (tmp_path / "log_history.jsonl").read_text().splitlines()]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 2 and all(0.0 <= h["frac_correct"] <= 1.0 for h in steps)
    if method != "grpo":
        for h in steps:
            assert h["loss"] == pytest.approx(h["loss/mle"] + h["loss/opd"], rel=1e-3, abs=1e-4)
            assert h["entropy"] > 0
            paths = [p for p in ("mle", "opd") if f"weights/ess_{p}" in h]
            assert paths == (["opd"] if method == "opd" else paths) and paths
            for p in paths:
                assert 1.0 <= h[f"weights/ess_{p}"] <= h[f"weights/size_{p}"] + 1e-6
                assert h[f"ppl/student_{p}"] >= 1.0
            # The teacher scores the incorrect path only (teacher_on_correct is off by default).
            assert ("ppl/teacher_opd" in h) == ("opd" in paths) and "ppl/teacher_mle" not in h
            assert h.get("ppl/teacher_opd", 1.0) >= 1.0
        check_snapshots(tmp_path, cfg)
    else:
        assert not (tmp_path / "snapshots").exists()
    assert (tmp_path / "model" / "config.json").is_file() and (tmp_path / "model" / "tokenizer.json").is_file()
    assert pd.read_csv(tmp_path / "log_history.csv").shape[0] == len(history)


def test_kd_fits_the_student_to_teacher_samples(tmp_path, models):
    cfg = make_config(tmp_path, models, method="kd", toy_tiers=["toy-1"], kd_samples_per_prompt=4,
                      per_device_train_batch_size=4, max_steps=1, max_completion_length=64)
    trainer = build_trainer(cfg)
    data = trainer.train_dataset
    assert 0 < len(data) <= 8  # 2 prompts x 4 samples, truncated ones dropped
    before = student_params(trainer)
    train_run(cfg, trainer)
    assert any(not torch.equal(v.detach(), before[k]) for k, v in trainer.model.named_parameters())
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_teacher_and_behaviour_logprobs_are_the_models_on_the_sampled_tokens(tmp_path, models):
    from transformers import AutoModelForCausalLM

    # Two micro-batches per generation batch: log pi_old and the weights are computed right after
    # generation, over both groups, though each micro-batch will hold only half of them.
    cfg = make_config(tmp_path, models, temperature=0.7, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                      teacher_on_correct=True)
    trainer = build_trainer(cfg)
    trainer.model.train()
    inputs = [row for row in trainer.train_dataset.select(range(2)) for _ in range(cfg.num_generations)]
    out = trainer._generate_and_score_completions(inputs)
    assert out["scope_group"].tolist() == [0] * 4 + [1] * 4
    for group in (0, 1):
        for on_path in (True, False):
            rows = (out["scope_group"] == group) & (out["scope_route"] == on_path)
            if bool(rows.any()):
                assert out["scope_weights"][rows].sum().item() == pytest.approx(1.0, abs=1e-5)
    args = (out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"])
    mask = out["completion_mask"].bool()
    assert bool(mask.any())
    teacher = AutoModelForCausalLM.from_pretrained(models[1])
    expected_teacher = direct_logps(teacher, *args)
    torch.testing.assert_close(out["teacher_per_token_logps"][mask], expected_teacher[mask], atol=1e-4, rtol=1e-4)
    assert torch.isnan(out["teacher_per_token_logps"][~mask]).all()
    expected_old = direct_logps(trainer.model, *args, temperature=0.7)
    torch.testing.assert_close(out["old_per_token_logps"][mask], expected_old[mask], atol=1e-4, rtol=1e-4)
    # EOS is scored: every finished completion ends on it, inside the mask.
    eos = trainer._tokenizer.eos_token_id
    last = out["completion_ids"][torch.arange(len(mask)), mask.sum(1) - 1]
    finished = last == eos
    assert bool((out["completion_ids"] == eos).any(1).eq(finished).all())


def test_trainer_loss_is_the_scope_objective_on_the_same_tensors(tmp_path, models):
    cfg = make_config(tmp_path, models, temperature=0.7)
    trainer = build_trainer(cfg)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    gen = torch.Generator().manual_seed(0)
    tokens = crafted_tokens(trainer._tokenizer, gen)
    prompt_ids, prompt_mask = tokens["prompt_ids"], tokens["prompt_mask"]
    completion_ids, completion_mask = tokens["completion_ids"], tokens["completion_mask"]
    logp = direct_logps(trainer.model, prompt_ids, prompt_mask, completion_ids, completion_mask, 0.7)
    old = logp + 0.05 * torch.randn(logp.shape, generator=gen)
    teacher = -torch.rand(logp.shape, generator=gen) * 4
    route = torch.tensor([True, False, True, False, False, True, False, False])
    weights = torch.rand(8, generator=gen)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "old_per_token_logps": old, "teacher_per_token_logps": teacher,
              "scope_route": route, "scope_weights": weights}
    loss = trainer._compute_loss(trainer.model, inputs)
    expected, stats = scope_objective(logp, old, teacher, completion_mask, route, weights, "sum",
                                      n_groups=cfg.per_device_train_batch_size / cfg.num_generations)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert stats["loss_mle"] != 0 and stats["loss_opd"] != 0
    # Routing really decides the loss: with every row on the OPD path the value differs.
    everything_wrong = trainer._compute_loss(trainer.model, {**inputs, "scope_route": torch.zeros(8, dtype=torch.bool)})
    assert everything_wrong.item() != pytest.approx(loss.item(), rel=1e-3)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())

    # Weights computed inside the loss (one micro-batch per generation batch): log pi_old is the
    # loss's own detached forward, and the weights are scope_weights over the batch's groups.
    deferred = {k: v for k, v in inputs.items() if k not in ("old_per_token_logps", "scope_weights")}
    deferred["scope_group"] = torch.arange(8) // cfg.num_generations
    weights = scope_weights(deferred["scope_group"], route, log_perplexity(logp, completion_mask),
                            log_perplexity(teacher, completion_mask), cfg.weight_config())
    expected, _ = scope_objective(logp, logp, teacher, completion_mask, route, weights, "sum",
                                  n_groups=cfg.per_device_train_batch_size / cfg.num_generations)
    got = trainer._compute_loss(trainer.model, deferred)
    assert got.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_teacher_with_another_vocabulary_fails_at_init(tmp_path, models, tiny_lm):
    cfg = make_config(tmp_path, models, teacher_model=str(tiny_lm))
    with pytest.raises(TokenizerMismatch, match="vocabularies differ"):
        build_trainer(cfg)


def test_config_rules(tmp_path, models):
    assert make_config(tmp_path, models, method="opd", num_generations=1,
                       per_device_train_batch_size=3).num_generations == 1
    with pytest.raises(ValueError, match="at least 2 generations"):
        make_config(tmp_path, models, method="grpo", num_generations=1, teacher_model=None)
    with pytest.raises(ValueError, match="needs a teacher"):
        make_config(tmp_path, models, teacher_model=None)
    cfg = make_config(tmp_path, models, ablation="opposite_teacher_weight", tau=0.5)
    assert (cfg.weight_config().teacher_mode, cfg.weight_config().tau) == ("reversed", 0.5)
    assert make_config(tmp_path, models, beta=1e-4).beta == 0.0
    toy = parse_config(["--config", str(RECIPES / "toy_scope.yaml"), "--ablation", "no_teacher_weight",
                        "--seed", "3", "--output_dir", str(tmp_path / "o")])
    assert (toy.weight_config().teacher_mode, toy.seed, toy.num_generations) == ("uniform", 3, 8)


PAPER_PROBE = r"""
import json, sys
from train.config import parse_config
from train.methods import build_trainer
from train.resources import ResourceUnavailable
out = {}
for name in ("paper_r1distill_skywork", "paper_qwen3_base"):
    path = f"train/recipes/{name}.yaml"
    for extra in ([], ["--use_vllm", "false"], ["--method", "grpo"]):
        cfg = parse_config(["--config", path, "--output_dir", sys.argv[1], *extra])
        key = name + ":" + " ".join(extra)
        out[key] = {f: getattr(cfg, f) for f in ("method", "model_name_or_path", "learning_rate", "weight_decay",
                    "num_generations", "temperature", "max_prompt_length", "max_completion_length", "num_iterations",
                    "epsilon", "beta", "loss_type", "dataset_name", "question_field", "answer_field",
                    "teacher_server_model", "scope_loss", "truncated_rollouts")}
        out[key]["scheduler"] = str(cfg.lr_scheduler_type.value)
        out[key]["rollouts_per_step_8_gpus"] = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * 8
        if extra == ["--method", "grpo"]:
            continue
        try:
            build_trainer(cfg)
            out[key]["error"] = None
        except ResourceUnavailable as exc:
            out[key]["error"] = str(exc)
print(json.dumps(out))
"""


def test_paper_recipes_parse_and_stop_cleanly_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HOME": str(tmp_path / "hf"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", PAPER_PROBE, str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    students = {"paper_r1distill_skywork": ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Skywork/Skywork-OR1-7B"),
                "paper_qwen3_base": ("Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-8B")}
    for name, (student, teacher) in students.items():
        base = out[f"{name}:"]
        assert (base["method"], base["model_name_or_path"], base["teacher_server_model"]) == ("scope", student, teacher)
        assert (base["learning_rate"], base["weight_decay"], base["scheduler"]) == (5e-5, 0.01, "constant")
        assert (base["num_generations"], base["temperature"], base["num_iterations"]) == (8, 0.6, 1)
        assert (base["max_prompt_length"], base["max_completion_length"]) == (4096, 12288)
        assert base["rollouts_per_step_8_gpus"] == 256 * 8
        assert (base["dataset_name"], base["question_field"], base["answer_field"]) == (
            "zwhe99/DeepMath-103K", "question", "final_answer")
        assert base["beta"] == 0.0  # the routed loss has no KL term
        assert (base["scope_loss"], base["truncated_rollouts"]) == ("paper", "wrong")
        # GRPO as the released script runs it: clip 0.2, no KL, token-mean loss (TRL's "dapo").
        grpo = out[f"{name}:--method grpo"]
        assert (grpo["method"], grpo["epsilon"], grpo["beta"], grpo["loss_type"]) == ("grpo", 0.2, 0.0, "dapo")
        assert "needs a CUDA GPU" in base["error"]
        offline = out[f"{name}:--use_vllm false"]["error"]
        assert student in offline and "HF_HUB_OFFLINE" in offline


def test_toy_suite_skips_finished_runs_and_redoes_unfinished_ones(tmp_path, models):
    from repo_scripts import load_script
    from workbench.runs import read_manifest, write_manifest

    run_one = load_script("scripts/toy_suite.py").run_one

    overrides = ["--model_name_or_path", models[0], "--teacher_model", models[1], "--max_steps", "1",
                 "--toy_tiers", "toy-1", "--toy_problems_per_tier", "4", "--max_completion_length", "16"]
    write_manifest(tmp_path / "opd" / "seed0", {}, 0, status="finished")
    assert run_one("opd", 0, tmp_path, overrides) is None
    crashed = tmp_path / "opd" / "seed1"
    write_manifest(crashed, {}, 1, status="running")
    (crashed / "stale.txt").write_text("left by a killed run")
    summary = run_one("opd", 1, tmp_path, overrides)
    assert summary is not None and summary["global_step"] == 1
    assert not (crashed / "stale.txt").exists()
    manifest = read_manifest(crashed)
    assert (manifest["status"], manifest["seed"], manifest["method"]) == ("finished", 1, "opd")
    assert (crashed / "model" / "config.json").is_file() and (crashed / "log_history.jsonl").is_file()
    assert len(read_records(crashed / "snapshots")) == 4
