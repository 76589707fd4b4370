"""workbench.plotting: figure files that are the same bytes for the same figure, and stable method colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from workbench.plotting import (
    METHOD_ORDER, method_colours, ordered_palette, palette, pass_at_k_panel, save_figure, seed_note,
)


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


def _hue_family(rgb) -> str:
    """A colour's family by eye: achromatic, or the hue sector its hue angle falls in."""
    import colorsys

    h, lightness, saturation = colorsys.rgb_to_hls(*rgb)
    if saturation < 0.15 or lightness < 0.08:
        return "grey"
    degrees = h * 360
    for name, upper in (("red-orange", 45), ("yellow", 70), ("green", 170), ("blue", 250), ("purple", 345)):
        if degrees < upper:
            return name
    return "red-orange"


def test_a_method_keeps_its_colour_whichever_methods_are_drawn():
    alone = method_colours(["scope"])
    assert method_colours(["base", "opd", "scope"])["scope"] == alone["scope"] == (0xD5 / 255, 0x5E / 255, 0.0)
    assert method_colours(["opd", "mine", "scope"])["opd"] == method_colours(["opd"])["opd"]
    assert {m: c for m, c in method_colours(["mine", "yours", "kd"]).items() if m != "kd"} == method_colours(["mine", "yours"])


def test_no_two_workbench_methods_share_a_hue_family():
    colours = method_colours(list(METHOD_ORDER))
    families = {m: _hue_family(c) for m, c in colours.items()}
    assert len(set(families.values())) == len(METHOD_ORDER), families
    assert len(palette(8)) == len(set(palette(8))) == 8


def test_ordered_categories_darken_step_by_step():
    """Q1..Qn (or increasing ratios) take monotone steps of lightness: the order reads without a legend."""
    import colorsys

    lightness = [colorsys.rgb_to_hls(*c)[1] for c in ordered_palette(4)]
    assert lightness == sorted(lightness) and len(set(lightness)) == 4


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
