"""The plan before launch (train/plan.py, `python -m train.cli --dry-run`), the teacher under ZeRO-3, and the
served teacher's recipe fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train.plan import KNOWN_MODELS, PlanOptions, build_plan, dry_run, model_shape, split_plan_flags
from workbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "train" / "recipes"
PAPER = [RECIPES / "paper_r1distill_skywork.yaml", RECIPES / "paper_qwen3_base.yaml"]
GIB = 1024**3


def test_a_field_the_recipe_leaves_unset_is_planned_at_the_configs_default(tmp_path):
    """The plan reads ScopeConfig's own defaults (TRL's 8 rollouts per device and 8 per prompt, 512 new
    tokens, no accumulation), not a copy of them."""
    recipe = tmp_path / "bare.yaml"
    recipe.write_text("method: scope\nmodel_name_or_path: toy:student\nteacher_model: toy:teacher\n")
    rows = dict(build_plan(["--config", str(recipe)], world_size=1).rows)
    assert rows["optimizer step"] == "8 per device x 1 accumulation x 1 processes = 8 sequences = 1 prompts x 8 rollouts"
    assert rows["micro-batch, worst case"].startswith("8 x (") and "+ 512 completion)" in rows["micro-batch, worst case"]


def test_parameter_count_matches_the_toy_model():
    from transformers import AutoModelForCausalLM

    from workbench.toy import STUDENT_DIR, TEACHER_DIR

    for sentinel, folder in (("toy:student", STUDENT_DIR), ("toy:teacher", TEACHER_DIR)):
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert model_shape(sentinel).params == sum(p.numel() for p in model.parameters())


def test_paper_model_sizes():
    # published sizes: R1-Distill-Qwen-1.5B 1.78 B (untied), Skywork-OR1-7B 7.6 B, Qwen3-8B 8.2 B
    # (biases left out: < 0.1 %)
    assert KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"].params == pytest.approx(1.777e9, rel=2e-3)
    assert KNOWN_MODELS["Skywork/Skywork-OR1-7B"].params == pytest.approx(7.615e9, rel=2e-3)
    assert KNOWN_MODELS["Qwen/Qwen3-8B"].params == pytest.approx(8.19e9, rel=5e-3)


def _rows(plan) -> dict[str, str]:
    return {k.strip(): v for k, v in plan.rows}


@pytest.mark.parametrize("recipe", PAPER, ids=lambda p: p.stem)
def test_paper_recipes_fit_8_x_80_gb_with_16k_tokens_per_micro_batch(recipe):
    for config in (None, "zero2", "zero3", "fsdp2"):
        path = None if config is None else str(ROOT / "train" / "launch" / f"{config}.yaml")
        plan = build_plan(["--config", str(recipe)], world_size=8, gpu_memory_gb=80, accelerate_config=path)
        assert plan.total_gib < 80, (config, plan.total_gib)
    rows = _rows(plan)
    assert rows["micro-batch, worst case"] == "1 x (4096 prompt + 12288 completion) = 16384 tokens"
    assert "= 2048 sequences = 256 prompts x 8 rollouts" in rows["optimizer step"]
    assert "--max-model-len 16385" in rows["teacher server"]  # 4096 + 12288 + 1 generated token
    assert plan.shell["TEACHER_MAX_MODEL_LEN"] == "16385" and plan.shell["GRAD_ACC_STEPS"] == "256"


def test_memory_terms_by_hand():
    """R1-Distill 1.5B, 1 x 16384 tokens, checkpointing, vLLM at 0.4 of 80 GiB, world 8."""
    shape = KNOWN_MODELS["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]
    p, t = shape.params, 16384
    activations = (2 * t * 1536 * 28 + 34 * t * 1536 + 2 * t * 151936 * 2) / GIB
    expected = {None: 2 * p + 2 * p + 4 * p, "zero2": 2 * p + 2 * p / 8 + 12 * p / 8,
                "zero3": 2 * p / 8 + 2 * p / 8 + 12 * p / 8, "fsdp2": (2 * p + 2 * p + 4 * p) / 8}
    for config, states in expected.items():
        path = None if config is None else str(ROOT / "train" / "launch" / f"{config}.yaml")
        plan = build_plan(["--config", str(PAPER[0])], world_size=8, gpu_memory_gb=80, accelerate_config=path)
        assert plan.total_gib == pytest.approx(states / GIB + activations + 0.4 * 80 + 2.0, rel=1e-9)


def test_the_old_paper_batch_is_refused_in_one_line(capsys):
    from train.cli import main
    from workbench.errors import main_guard

    argv = ["--config", str(PAPER[0]), "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "32",
            "--dry-run", "--gpu_memory_gb", "80"]
    assert main_guard(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than --gpu_memory_gb 80" in err[0] and "per_device_train_batch_size" in err[0]


def test_world_size_changes_the_arithmetic_and_the_step_must_split_into_groups():
    rows = _rows(build_plan(["--config", str(PAPER[0]), "--gradient_accumulation_steps", "128"], world_size=16))
    assert rows["optimizer step"].startswith("1 per device x 128 accumulation x 16 processes = 2048 sequences")
    with pytest.raises(UserError, match="not a multiple of num_generations 8"):
        build_plan(["--config", str(PAPER[0]), "--gradient_accumulation_steps", "3"], world_size=2)


def test_shell_form_for_the_launch_scripts():
    text = dry_run(["--config", str(PAPER[1]), "--dry-run", "--world_size", "16", "--gradient_accumulation_steps",
                    "128", "--plan-format", "shell"])
    assert text.splitlines() == ['GRAD_ACC_STEPS="128"', 'WORLD_SIZE="16"', 'TEACHER_MODEL="Qwen/Qwen3-8B"',
                                 'TEACHER_MAX_MODEL_LEN="16385"']


def test_the_dry_runs_options_are_plan_options_fields():
    options, rest = split_plan_flags(["--config", "r.yaml", "--dry-run", "--world-size", "16", "--gpu_memory_gb=40",
                                      "--accelerate-config", "z.yaml", "--plan_format", "shell", "--seed", "3"])
    assert options == PlanOptions(world_size=16, gpu_memory_gb=40.0, accelerate_config="z.yaml", plan_format="shell")
    assert rest == ["--config", "r.yaml", "--seed", "3"]
    assert split_plan_flags(["--dry-run"]) == (PlanOptions(), [])
    for argv, message in ((["--world_size", "1.5"], "--world_size takes a whole number, got '1.5'"),
                          (["--gpu-memory-gb", "lots"], "--gpu-memory-gb takes a number, got 'lots'"),
                          (["--plan-format", "csv"], "--plan-format 'csv' is not one of text, shell"),
                          (["--world_size"], "--world_size needs a value")):
        with pytest.raises(UserError) as err:
            split_plan_flags(argv)
        assert str(err.value) == message


def test_every_recipe_plans_in_seconds_without_loading_a_model():
    """The plan checks the recipe as a run does, so it imports the config classes (torch, transformers, TRL:
    ~2 s idle, more on a busy machine), and then loads nothing: no model class, no trainer."""
    code = ("import sys, time; t = time.perf_counter(); from train.cli import main\n"
            "import train.config; imported = time.perf_counter() - t\n"
            "for r in sys.argv[1:]: main(['--config', r, '--dry-run'])\n"
            "loaded = [m for m in sys.modules if m.startswith('transformers.models.') and '.modeling_' in m]\n"
            "assert not loaded and 'train.methods' not in sys.modules, f'the plan loaded {loaded}'\n"
            "print('import', imported, 'plans', time.perf_counter() - t - imported)")
    recipes = sorted(str(p) for p in RECIPES.glob("*.yaml"))
    out = subprocess.run([sys.executable, "-c", code, *recipes], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("GPU memory per device") == len(recipes)
    imported, plans = (float(x) for x in out.stdout.split("import")[-1].split("plans"))
    print(f"config classes imported in {imported:.2f} s, {len(recipes)} plans in {plans:.2f} s")
    assert plans < 5  # the plans themselves: typically < 0.5 s for all


# ----------------------------------------------------------------------------- teacher, ZeRO-3
ZERO3_ENV = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}


def served_recipe(folder: Path) -> Path:
    """toy_scope.yaml with its teacher behind two server replicas instead of in-process."""
    recipe = folder / "served.yaml"
    recipe.write_text((RECIPES / "toy_scope.yaml").read_text().replace(
        "teacher_model: toy:teacher", "teacher_server_url: [http://127.0.0.1:9, http://127.0.0.1:10/v1]\n"
        "teacher_server_model: toy-teacher\nteacher_tokenizer: toy:teacher"))
    return recipe


def test_local_teacher_under_zero3_is_refused_naming_the_served_one(monkeypatch, tmp_path):
    from train.config import parse_config

    for k, v in ZERO3_ENV.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(UserError, match="cannot run under DeepSpeed ZeRO-3.*--teacher_server_url") as err:
        parse_config(["--config", str(RECIPES / "toy_scope.yaml")])
    assert "\n" not in str(err.value)
    # served, it is accepted; and ZeRO-2 keeps the local teacher
    # (beyond this check TrainingArguments needs DeepSpeed installed, so the rest is asked of the check itself)
    from train.sharding import check_teacher_fits_sharding, sharding_from_environment

    assert sharding_from_environment() == "zero3"
    check_teacher_fits_sharding({"teacher_model": None, "teacher_server_url": "http://h:8000"}, "zero3")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert sharding_from_environment() == "zero2"
    check_teacher_fits_sharding({"teacher_model": "toy:teacher"}, "zero2")
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"stage": 3}}')
    assert sharding_from_environment({"deepspeed": str(ds)}) == "zero3"  # TrainingArguments --deepspeed ds.json


def test_dry_run_refuses_a_local_teacher_with_the_zero3_config():
    with pytest.raises(UserError, match="cannot run under DeepSpeed ZeRO-3"):
        dry_run(["--config", str(RECIPES / "toy_scope.yaml"), "--dry-run", "--accelerate_config",
                 str(ROOT / "train" / "launch" / "zero3.yaml")])


# ----------------------------------------------------------------------- served teacher fields
def test_teacher_replicas_and_knobs_reach_the_client(tmp_path):
    from train.config import parse_config
    from train.dataset import load_student_tokenizer
    from train.teacher import load_teacher

    recipe = served_recipe(tmp_path)
    cfg = parse_config(["--config", str(recipe), "--teacher_server_tries", "2", "--teacher_server_timeout", "7.5",
                        "--teacher_server_concurrency", "3", "--teacher_server_batch_size", "5"])
    assert cfg.teacher_server_url == "http://127.0.0.1:9,http://127.0.0.1:10/v1"
    cfg.teacher_tokenizer = str(cfg.resolved_student())
    scorer = load_teacher(cfg, load_student_tokenizer(cfg), "cpu")
    assert scorer.base_urls == ["http://127.0.0.1:9", "http://127.0.0.1:10"]
    assert (scorer.max_retries, scorer.timeout, scorer.concurrency, scorer.batch_size) == (1, 7.5, 3, 5)
    with pytest.raises(UserError, match="teacher_server_tries .* must be at least 1"):
        parse_config(["--config", str(recipe), "--teacher_server_tries", "0"])
