"""Help is instant and leads with what a user sets; ``scope-wb`` dispatches to the three command lines
without workbench importing them; analysis and eval resolve ``results/`` against the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LATENCY_LIMIT_S = 5.0  # the target is < 2 s; the limit leaves room for a machine shared with other jobs
HEAVY = ("torch", "transformers", "trl", "pandas")


def run(code_or_module: list[str], cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *code_or_module], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return proc, time.perf_counter() - started


@pytest.mark.parametrize("module", ["train.cli", "analysis.cli", "workbench.cli"])
def test_help_is_fast_and_imports_no_heavy_package(module):
    proc, wall = run(["-m", module, "--help"])
    print(f"python -m {module} --help: {wall:.2f} s, {len(proc.stdout.splitlines())} lines")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
    assert wall < LATENCY_LIMIT_S
    # The reason it is fast, checked directly rather than through a wall-clock race.
    probe = (f"import sys, {module} as m\n"
             f"try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
             f"print(sorted(p for p in {HEAVY!r} if p in sys.modules))")
    proc, _ = run(["-c", probe])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_train_help_leads_with_what_users_set():
    from train.cli import HELP
    from train.config import config_parser
    from workbench.layout import METHODS
    from train.scope import ABLATIONS

    lines = HELP.splitlines()
    assert len(lines) < 50
    assert lines[0] == "usage: python -m train.cli --config RECIPE.yaml [--FIELD VALUE ...]"
    shown = re.findall(r"^  (--[a-z_-]+)", HELP, flags=re.MULTILINE)
    assert shown[:4] == ["--config", "--method", "--ablation", "--tau"]
    for flag in ("--seed", "--output_dir", "--teacher_model", "--teacher_server_url", "--max_steps", "--use_vllm"):
        assert flag in shown
    real = {s for a in config_parser()._actions for s in a.option_strings}
    assert set(shown) - {"--config", "--help-all", "--dry-run"} <= real  # every option shown is one the parser takes
    flat = " ".join(HELP.split())
    assert f"--method NAME {' | '.join(METHODS)}" in flat
    assert " | ".join(ABLATIONS) in flat
    recipes = sorted(p.stem for p in (REPO / "train" / "recipes").glob("*.yaml"))
    assert all(name in flat for name in recipes)


def test_train_help_all_lists_every_field():
    for args in (["--help-all"], ["--help", "--all"]):
        proc, wall = run(["-m", "train.cli", *args])
        print(f"python -m train.cli {' '.join(args)}: {wall:.2f} s, {len(proc.stdout.splitlines())} lines")
        assert proc.returncode == 0, proc.stderr
        for flag in ("--gradient_accumulation_steps", "--snapshot_every", "--teacher_server_model", "--vllm_mode"):
            assert flag in proc.stdout


def test_scope_wb_dispatches_to_each_command(capsys):
    from workbench.cli import main

    assert main(["analysis", "toy", "--rollouts", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: argument --rollouts: must be at least 1, got 0")
    assert main(["train", "--tua", "1"]) == 2
    assert capsys.readouterr().err == "error: unknown option --tua; did you mean --tau?\n"
    with pytest.raises(SystemExit) as done:
        main(["eval", "--help"])
    assert done.value.code == 0 and "python -m eval.reproduce" in capsys.readouterr().out
    assert main(["trian"]) == 2
    assert capsys.readouterr().err == ("error: unknown command 'trian' (commands: train, eval, analysis); "
                                       "did you mean 'train'?\n")
    assert main([]) == 2


def test_workbench_cli_imports_no_upper_layer():
    proc, _ = run(["-c", "import sys, workbench.cli\n"
                         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'eval', 'analysis')))"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_analysis_and_eval_resolve_results_against_the_repository(tmp_path):
    """From any folder (a notebook runs in notebooks/), the default outputs land in the repository's results/."""
    probe = ("import analysis.cli as a, eval.reproduce as e\n"
             "args = a._parser().parse_args(['toy'])\n"
             "print(args.out, args.run_dir, args.figures_dir, a._parser().parse_args(['figures']).results, "
             "e.TABLES, e.TOY_SAMPLES)")
    proc, _ = run(["-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out, run_dir, figures_dir, results, tables, samples = map(Path, proc.stdout.split())
    root = REPO / "results"
    assert (out, run_dir, figures_dir, results) == (root / "toy" / "analysis", root / "runs" / "toy-analysis",
                                                    root / "figures" / "toy-analysis", root)
    assert (tables, samples) == (root / "tables", root / "toy" / "samples")
