"""TensorBoard is one recipe field away (report_to: tensorboard), and SCOPE's own metrics are in it."""

from __future__ import annotations

import pytest

from train.config import parse_config
from train.methods import toy_recipe, train_run

pytestmark = pytest.mark.slow


def test_toy_scope_run_logs_scope_metrics_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = parse_config(["--config", str(toy_recipe("scope")), "--report_to", "tensorboard", "--max_steps", "2",
                        "--heldout_every", "0", "--output_dir", str(out)])
    train_run(cfg)
    (logdir,) = [p.parent for p in (out / "runs").rglob("events.out.tfevents.*")]
    events = EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    # the per-path losses, the routing and the weights' effective sample size, next to TRL's loss
    for tag in ("train/loss", "train/loss/mle", "train/loss/opd", "train/frac_correct"):
        assert tag in tags, sorted(tags)
        assert [e.step for e in events.Scalars(tag)] == [1, 2]
    assert any(t.startswith("train/weights/ess_") for t in tags), sorted(tags)
