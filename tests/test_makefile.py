"""The Makefile refuses a variable it does not read, instead of silently running without it, and its
script targets run files that exist."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], capture_output=True,
                          text=True, timeout=60)


def test_an_unknown_variable_stops_make_with_the_known_ones_listed():
    result = make("-n", "reproduce-tables", "TEMPERATURE=0.3")
    assert result.returncode == 2
    assert "unknown variable TEMPERATURE" in result.stderr and "MAX_NEW_TOKENS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_known_variables_reach_the_command():
    result = make("-n", "reproduce-tables", "N=8", "BACKEND=hf", "OVERWRITE=1")
    assert result.returncode == 0, result.stderr
    command = " ".join(result.stdout.replace("\\\n", " ").split())
    assert "-m eval.reproduce" in command and "--num-samples 8" in command
    assert "--backend hf" in command and "--overwrite" in command
    assert "torch.distributed.run" not in command


def test_workers_are_started_by_torchrun_after_one_check_of_the_command_line():
    result = make("-n", "reproduce-tables", "MODEL=org/model", "BACKEND=vllm", "BENCHMARKS=aime24,math500", "TP=2",
                  "NPROC=4", "NNODES=2", "NODE_RANK=1", "MASTER_ADDR=node0", "MASTER_PORT=29600")
    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.replace("\\\n", " ").splitlines() if line.strip()]
    check = next(line for line in lines if "--check-only" in line)
    launch = next(line for line in lines if "torch.distributed.run" in line)
    assert lines.index(check) < lines.index(launch)
    assert ("--nproc-per-node 4 --nnodes 2 --node-rank 1 --master-addr node0 --master-port 29600 "
            "-m eval.reproduce") in launch
    for line in (check, launch):
        assert "--model org/model" in line and "--benchmarks aime24,math500" in line
        assert "--tensor-parallel-size 2" in line and "--backend vllm" in line


def test_script_targets_run_the_files_of_scripts_and_benchmarks():
    result = make("-n", "demo", "toy-models", "toy-check", "train-toy", "bench", "toy-spread", "toy-main", "toy-dpaw",
                  "toy-tau")
    assert result.returncode == 0, result.stderr
    ran = set(re.findall(r"(?:^|\s)((?:scripts|benchmarks)/[\w/]+\.py)", result.stdout, flags=re.M))
    assert {"scripts/demo.py", "scripts/build_toy.py", "scripts/toy_suite.py", "benchmarks/bench_weights.py",
            "benchmarks/bench_metrics.py", "benchmarks/bench_grading.py", "benchmarks/bench_step.py",
            "scripts/toy_spread.py", "scripts/toy_experiments.py"} <= ran
    for experiment in ("main", "dpaw", "tau"):
        assert f"scripts/toy_experiments.py {experiment}" in result.stdout
    assert all((REPO / script).is_file() for script in ran), ran
    assert "scripts/build_toy.py --check" in result.stdout
    assert not re.search(r"-m (analysis\.demo|train\.(toy_suite|bench_)|eval\.bench_|workbench\.toy\.build)",
                         result.stdout)


def _bare_clone(tmp_path: Path) -> Path:
    """The Makefile alone in a folder with nothing beside it (no ../shared), its environments 'installed'."""
    repo = tmp_path / "clone"
    repo.mkdir()
    (repo / "Makefile").write_text((REPO / "Makefile").read_text())
    (repo / "pyproject.toml").write_text("")
    (repo / "requirements").mkdir()
    (repo / "requirements" / "lock.txt").write_text("")
    for venv in (".venv", ".venv-vllm"):
        (repo / venv).mkdir()
        (repo / venv / ".installed").write_text("")  # newer than pyproject.toml: nothing to install
    return repo


def _dry_run(repo: Path, *args: str, **env: str) -> str:
    import os

    environ = {k: v for k, v in os.environ.items() if k != "SCOPE_DATA_DIR"} | env
    result = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(repo), *args], capture_output=True,
                            text=True, timeout=60, env=environ)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.replace("\\\n", " ").split())


def test_a_hub_model_gets_a_data_folder_only_where_the_user_has_one(tmp_path):
    repo = _bare_clone(tmp_path)
    command = _dry_run(repo, "reproduce-tables", "MODEL=org/name")
    assert "--model org/name" in command and "--data-dir" not in command  # the hub serves the benchmarks
    command = _dry_run(repo, "reproduce-tables", "MODEL=org/name", "DATA_DIR=/data/bench")
    assert "--model org/name --data-dir /data/bench" in command
    command = _dry_run(repo, "reproduce-tables", "MODEL=org/name", SCOPE_DATA_DIR="/env/bench")
    assert "--model org/name --data-dir /env/bench" in command
    (tmp_path / "shared" / "data" / "benchmarks").mkdir(parents=True)  # the folder beside the clone
    command = _dry_run(repo, "reproduce-tables", "MODEL=org/name")
    assert f"--data-dir {tmp_path / 'shared' / 'data' / 'benchmarks'}" in command


def test_the_demo_samples_with_transformers_unless_vllm_is_asked_for(tmp_path):
    repo = _bare_clone(tmp_path)  # .venv-vllm exists: it is not used unless asked
    assert _dry_run(repo, "demo").endswith(".venv/bin/python scripts/demo.py")
    assert _dry_run(repo, "demo", "BACKEND=vllm").endswith(".venv-vllm/bin/python scripts/demo.py --backend vllm")
