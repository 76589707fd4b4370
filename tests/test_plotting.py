"""workbench.plotting: figure files that are the same bytes for the same figure, and stable method colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from workbench.plotting import METHOD_ORDER, method_colours, palette, pass_at_k_panel, save_figure, seed_note


def _figure():
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([1, 2, 4], [10, 40, 90], label="scope")
    ax.set_title("Toy-3")
    return fig


def test_save_figure_writes_the_same_bytes_without_dates_or_versions(tmp_path):
    # outside house_style on purpose: the file settings are save_figure's own
    first = save_figure(_figure(), tmp_path / "a", "curve")
    second = save_figure(_figure(), tmp_path / "b", "curve")
    assert sorted(first) == ["pdf", "png"] and first["pdf"].name == "curve.pdf"
    for kind in ("pdf", "png"):
        assert first[kind].read_bytes() == second[kind].read_bytes()
    pdf, png = first["pdf"].read_bytes(), first["png"].read_bytes()
    assert b"CreationDate" not in pdf and b"Matplotlib" not in pdf and b"Software" not in png
    assert b"/FontFile2" in pdf  # TrueType fonts embedded: the text stays editable text
    assert not plt.get_fignums()  # both figures closed


def test_a_method_keeps_its_colour_whichever_methods_are_drawn():
    colours = palette(len(METHOD_ORDER) + 1)
    assert method_colours(["scope", "base"]) == {"scope": colours[4], "base": colours[0]}
    assert method_colours(["opd", "mine", "scope"]) == {"opd": colours[3], "mine": colours[5], "scope": colours[4]}


def test_pass_at_k_panel_draws_the_seed_mean_on_a_log2_axis():
    curves = pd.DataFrame({"method": ["scope"] * 4 + ["base"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                           "k": [1, 4, 1, 4, 1, 4], "value": [20.0, 50.0, 30.0, 70.0, 10.0, 40.0]})
    fig, ax = plt.subplots()
    pass_at_k_panel(ax, curves, method_colours(["base", "scope", "kd"]))  # kd has no rows: no line
    assert [line.get_label() for line in ax.get_lines()] == ["base", "scope"]
    assert ax.get_lines()[1].get_ydata().tolist() == [25.0, 60.0]
    assert len(ax.collections) == 1  # a band for scope's two seeds only
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["1", "4"]
    plt.close(fig)
    assert seed_note(curves["seed"]) == "line: mean over seeds (up to 2), band: lowest to highest seed"
    assert seed_note([3, 3]) == "one seed"
