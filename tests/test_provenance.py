"""Every committed toy result names the run that produced it: the command that trained and sampled (not a
redraw), a clean commit, the package versions, and what producing it cost (wall times of training, sampling and
reporting, or of the build)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.layout import TOY_RESULTS
from workbench.runs import producer
from workbench.toy import DIAL_DIR, DIAL_WORLDS

EXPERIMENTS = TOY_RESULTS / "experiments"


def _committed(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_file()]


@pytest.mark.parametrize("path", _committed([EXPERIMENTS / n / "manifest.json" for n in ("main", "dpaw", "tau")]),
                         ids=lambda p: p.parent.name)
def test_toy_experiments_record_the_training_and_sampling_run(path: Path):
    manifest = json.loads(path.read_text())
    made_by = producer(manifest)
    assert "toy_experiments.py" in made_by["command"], made_by["command"]
    assert made_by["git"]["commit"] and made_by["git"]["dirty"] is False
    assert manifest["versions"]["torch"] and manifest["versions"]["transformers"]
    wall = manifest["wall_seconds"]
    assert wall["training_runs_wall_s_sum"] > 0 and wall["sampling_jobs_wall_s_sum"] > 0 and "reporting_s" in wall


@pytest.mark.parametrize("world", [w for w in DIAL_WORLDS if (DIAL_DIR / w / "dose" / "manifest.json").is_file()])
def test_dial_worlds_record_their_build_spread_and_dose_response(world: str):
    dose = json.loads((DIAL_DIR / world / "dose" / "manifest.json").read_text())
    made_by = producer(dose)
    assert f"--world {world}" in made_by["command"] and made_by["git"]["dirty"] is False
    wall = dose["wall_seconds"]
    assert wall["training_runs_wall_s_sum"] > 0 and wall["sampling_jobs_wall_s_sum"] > 0 and "reporting_s" in wall
    spread_dir = TOY_RESULTS / "spread" if world == "low" else DIAL_DIR / world / "spread"
    spread = json.loads((spread_dir / "manifest.json").read_text())
    assert "toy_spread.py" in spread["command"] and spread["git"]["dirty"] is False
    assert spread["wall_seconds"]["sampling_and_scoring"] > 0
    if world != "low":  # the committed world's student is built by `make toy-models` (workbench/toy/assets)
        build = json.loads((DIAL_DIR / world / "build_info.json").read_text())
        assert f"--dial {world}" in build["command"] and build["git"]["dirty"] is False
        assert build["total_seconds"] > 0 and build["versions"]["torch"]
