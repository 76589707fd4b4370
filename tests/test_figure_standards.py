"""What a reviewer checks in every figure: rates in %, τ written as τ, no point outside the range a
value can take, and the dense experiment figures split into one panel per tier."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.figures import _jitter, boundary_scatter, ppl_vs_recovery, training_dynamics
from workbench.plotting import house_style


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        parts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            parts += [t.get_text() for t in legend.get_texts()] + [legend.get_title().get_text()]
    for legend in fig.legends:
        parts += [t.get_text() for t in legend.get_texts()] + [legend.get_title().get_text()]
    return "\n".join(parts)


def _scatter_y(fig) -> np.ndarray:
    return np.concatenate([c.get_offsets()[:, 1] for ax in fig.axes for c in ax.collections
                           if len(c.get_offsets())])


def test_jitter_spreads_equal_values_but_never_past_the_ends():
    values = np.array([0.0] * 500 + [100.0] * 500 + [50.0] * 500)
    moved = _jitter(values, 2.5, seed=3)
    assert moved.min() >= 0 and moved.max() <= 100
    assert len(np.unique(moved[:500])) == 500 and np.all(np.abs(moved - values) <= 2.5 + 1e-12)


def test_recovery_and_solve_rate_scatters_are_percent_inside_their_axes():
    rng = np.random.default_rng(0)
    n = 120
    per_rollout = pd.DataFrame({"ratio": np.repeat([0.2, 0.8], n // 2), "teacher_log_ppl": rng.uniform(0.1, 3, n),
                                "n_continuations": 4, "recovered": rng.integers(0, 5, n)})
    per_rollout["recovered"] = per_rollout["recovered"].clip(upper=4)
    per_rollout["recovery_rate"] = per_rollout["recovered"] / 4  # many exactly 0 or 1: the jitter's worst case
    correct = pd.DataFrame({"student_log_ppl": rng.uniform(0.1, 2, n), "n_samples": 8,
                            "n_solved": np.where(np.arange(n) % 2, 8, 0)})
    correct["solve_rate"] = correct["n_solved"] / 8
    with house_style():
        for fig in (ppl_vs_recovery(per_rollout), boundary_scatter(correct)):
            y, (low, high) = _scatter_y(fig), fig.axes[0].get_ylim()
            assert y.min() >= 0 and y.max() <= 100 and low < 0 and 100 < high
            assert y.max() > 90  # drawn in %, not as a 0-1 fraction
            assert "(%)" in fig.axes[0].get_ylabel()
            plt.close(fig)


def test_training_dynamics_draw_rates_in_percent():
    histories = {("scope", s): pd.DataFrame({"step": [1, 2], "entropy": [0.5, 0.4], "frac_correct": [0.25, 0.5],
                                             "eval_avg@8": [0.5, 0.75]}) for s in (0, 1)}
    with house_style():
        fig = training_dynamics(histories)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["entropy (nats)", "rollouts correct (%)", "held-out Avg@k (%)"]
    assert fig.axes[1].get_lines()[0].get_ydata().tolist() == [25.0, 50.0]
    assert fig.axes[2].get_lines()[0].get_ydata().tolist() == [50.0, 75.0]
    plt.close(fig)


def test_committed_experiment_figures_split_by_tier_and_write_tau(tmp_path):
    import shutil

    from analysis.experiment_report import load
    from analysis.figures import experiment_figure
    from workbench.layout import REPO_ROOT

    source = REPO_ROOT / "results" / "toy" / "experiments"
    for name in ("dpaw", "tau"):
        shutil.copytree(source / name, tmp_path / name)
        result, cfg = load(name, tmp_path)
        captured = {}
        original = plt.Figure.savefig

        def grab(self, *args, **kwargs):
            captured["fig"] = self
            return original(self, *args, **kwargs)

        plt.Figure.savefig = grab
        try:
            experiment_figure(result, cfg.n, tmp_path / "out")
        finally:
            plt.Figure.savefig = original
        fig = captured["fig"]
        text = _texts(fig)
        assert "tau" not in text.lower().replace("τ", ""), text
        if name == "dpaw":
            tiers = list(dict.fromkeys(result.summary["benchmark"]))
            assert len(fig.axes) == 2 * len(tiers)  # Avg@k and Pass@k, one panel per tier
            top = max(fig.axes[0].get_yticklabels(), key=lambda t: t.get_position()[1])
            assert top.get_text() == "SCOPE"  # the reference row at the top
            for ax in fig.axes:
                low, high = ax.get_xlim()
                assert -1 <= low and high <= 101  # a percent axis, no tick past 100
        else:
            assert "τ" in text
