import json
import subprocess

import pytest

from workbench.runs import git_state, package_versions, read_manifest, run_folder, write_manifest


def test_manifest_records_config_seed_versions_commit_and_times(tmp_path):
    write_manifest(tmp_path, {"lr": 2e-3, "tiers": ("toy-1", "toy-2")}, seed=3, note="x")
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["config"] == {"lr": 2e-3, "tiers": ["toy-1", "toy-2"]}
    assert m["seed"] == 3 and m["note"] == "x"
    assert m["versions"]["torch"].startswith("2.13.0")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert m["git"]["commit"] == head
    assert m["started_at"]


def test_run_folder_marks_finished_and_failed(tmp_path):
    with run_folder(tmp_path / "ok", {"a": 1}, seed=0):
        assert read_manifest(tmp_path / "ok")["status"] == "running"
    done = read_manifest(tmp_path / "ok")
    assert done["status"] == "finished" and done["finished_at"] >= done["started_at"]
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path / "bad", {"a": 1}, seed=0):
            raise RuntimeError("boom")
    failed = read_manifest(tmp_path / "bad")
    assert failed["status"] == "failed" and "boom" in failed["error"]


def test_versions_and_git_outside_a_repo(tmp_path):
    assert package_versions(("definitely-not-installed-pkg",))["definitely-not-installed-pkg"] is None
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def test_git_state_counts_code_changes_not_results(tmp_path):
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.csv").write_text("a\n1\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "start")
    clean = git_state(tmp_path)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "table.csv").write_text("a\n2\n")  # an earlier stage of the same make target
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
