"""Tables against the paper's own arithmetic, hand-made samples, and exact rendered strings."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest

from eval.reference import PAPER_SOURCE, paper_recovery, paper_table1
from eval.tables import (
    AVERAGE,
    MetricTable,
    add_paper,
    format_cells,
    latex_escape,
    metric_table,
    paper_long,
    summarise_samples,
    to_latex,
    to_markdown,
    write_tables,
)

MAIN = "deepseek-r1-distill-qwen-1.5b"
SECOND = "qwen3-1.7b-base"
BENCHMARKS = ["AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "OlympiadBench"]


# --- the paper's numbers -----------------------------------------------------------------------


def test_reference_frames_are_marked_as_the_papers():
    table = paper_table1()
    assert len(table) == 2 * 5 * 7
    assert (table["source"] == PAPER_SOURCE).all() and table.attrs["source"] == PAPER_SOURCE
    scope = table.query("student == @MAIN and method == 'scope' and benchmark == 'AIME24'")
    assert scope["avg_at_32"].item() == 42.7
    assert paper_recovery().query("truncation_ratio == 0.2 and bucket == 'Q1'")["recovery_rate_pct"].item() == 64.9


def test_reference_dir_override(tmp_path, monkeypatch):
    (tmp_path / "table1_math.csv").write_text("student,teacher,method,benchmark,avg_at_32,pass_at_32\ns,t,m,AIME24,1.5,2.5\n")
    monkeypatch.setenv("SCOPE_REFERENCE_DIR", str(tmp_path))
    assert paper_table1()["avg_at_32"].tolist() == [1.5]
    with pytest.raises(FileNotFoundError, match="SCOPE_REFERENCE_DIR"):
        paper_recovery()
    (tmp_path / "table1_math.csv").write_text("student,teacher,method,benchmark,avg_at_32,pass_at_32\ns,t,m,B,1.5,2.5\n")
    with pytest.raises(ValueError, match=r"benchmarks \['B'\] are no registered benchmark's paper_key"):
        paper_table1()


def _average(student: str, method: str, column: str) -> float:
    table = paper_table1()
    row = table[(table["student"] == student) & (table["method"] == method) & (table["benchmark"] == AVERAGE)]
    return float(row[column].item())


def test_paper_headline_gains():
    """The reference file reproduces the paper's headline relative gains of SCOPE's Average."""
    gains = {}
    for column in ("avg_at_32", "pass_at_32"):
        gains[column] = [
            100.0 * (_average(student, "scope", column) / _average(student, baseline, column) - 1.0)
            for student in (MAIN, SECOND)
            for baseline in ("grpo", "opd")
        ]
    assert [round(g, 2) for g in gains["avg_at_32"]] == [11.29, 5.54, 22.64, 6.21]
    assert [round(g, 2) for g in gains["pass_at_32"]] == [5.49, 2.60, 16.27, 4.83]
    assert round(float(np.mean(gains["avg_at_32"])), 2) == 11.42
    assert round(float(np.mean(gains["pass_at_32"])), 2) == 7.30


def test_paper_averages_through_tables():
    long = paper_long()
    for setting in (MAIN, SECOND):
        table = metric_table(long, "avg@32", where={"setting": setting})
        assert list(table.values.columns) == [*BENCHMARKS, AVERAGE]
        assert table.values.loc["scope", AVERAGE] == _average(setting, "scope", "avg_at_32")  # as reported


def test_reported_average_is_the_mean_of_six_benchmarks_to_rounding():
    table = paper_table1()
    for (student, method), part in table.groupby(["student", "method"]):
        part = part.set_index("benchmark")
        for column in ("avg_at_32", "pass_at_32"):
            six = part.loc[BENCHMARKS, column]
            assert len(six) == 6
            mean = float(six.mean())
            reported = float(part.loc[AVERAGE, column])
            assert abs(mean - reported) <= 0.05 + 1e-9, (student, method, column)
            exact_mean = sum(Decimal(str(v)) for v in six) / 6
            assert exact_mean.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP) == Decimal(str(reported))


# --- summarising graded samples ----------------------------------------------------------------


def _samples(rows: dict[tuple[str, str], list[int]], **extra) -> pd.DataFrame:
    records = [
        dict(benchmark=bench, problem_id=pid, sample_idx=i, correct=bool(g), **extra)
        for (bench, pid), grades in rows.items()
        for i, g in enumerate(grades)
    ]
    return pd.DataFrame(records)


HAND = {("A", "p1"): [1, 0, 0, 0], ("A", "p2"): [1, 1, 1, 1], ("B", "q1"): [0, 0, 0, 0]}


def test_summarise_samples_hand_values():
    out = summarise_samples(_samples(HAND), k=2, n_boot=200).set_index(["benchmark", "metric"])
    # A: avg (0.25 + 1) / 2; unbiased pass@2 (0.5 + 1) / 2; bootstrap (0.4375 + 1) / 2. B: all zero.
    expected = {
        ("A", "avg@2"): 62.5, ("A", "pass@2"): 75.0, ("A", "pass@2/bootstrap"): 71.875,
        ("B", "avg@2"): 0.0, ("B", "pass@2"): 0.0, ("B", "pass@2/bootstrap"): 0.0,
        (AVERAGE, "avg@2"): 31.25, (AVERAGE, "pass@2"): 37.5, (AVERAGE, "pass@2/bootstrap"): 35.9375,
    }
    for key, value in expected.items():
        assert out.loc[key, "value"] == pytest.approx(value, abs=1e-12), key
    assert out.loc[("B", "avg@2"), ["ci_lo", "ci_hi"]].tolist() == [0.0, 0.0]
    # A's two problems resample to 25%, 62.5% or 100% Avg@2
    assert 25.0 <= out.loc[("A", "avg@2"), "ci_lo"] <= 62.5 <= out.loc[("A", "avg@2"), "ci_hi"] <= 100.0
    assert out.loc[("A", "avg@2"), "n_problems"] == 2 and out.loc[(AVERAGE, "avg@2"), "n_problems"] == 3


def test_summarise_samples_groups_methods():
    frame = pd.concat([_samples(HAND, method="opd"), _samples({("A", "p1"): [1, 1, 0, 0]}, method="scope")])
    out = summarise_samples(frame, k=4, n_boot=50)
    scope = out[(out["method"] == "scope") & (out["metric"] == "pass@4")].set_index("benchmark")["value"]
    assert scope.to_dict() == {"A": 100.0, AVERAGE: 100.0}
    opd = out[(out["method"] == "opd") & (out["metric"] == "avg@4")].set_index("benchmark")["value"]
    assert opd.to_dict() == {"A": 62.5, "B": 0.0, AVERAGE: 31.25}


def test_summarise_samples_rejects_bad_frames():
    with pytest.raises(ValueError, match="benchmark='B' problem_id='q1' with n=2"):
        summarise_samples(_samples({("A", "p1"): [1, 0, 1], ("B", "q1"): [0, 1]}), k=3)
    with pytest.raises(ValueError, match="no rows"):
        summarise_samples(_samples(HAND).iloc[:0], k=2)
    with pytest.raises(ValueError, match="duplicated"):
        summarise_samples(pd.concat([_samples(HAND), _samples(HAND).iloc[:1]]), k=2)
    with pytest.raises(ValueError, match="lacks columns \\['sample_idx'\\]"):
        summarise_samples(_samples(HAND).drop(columns="sample_idx"), k=2)
    bad = _samples(HAND).astype({"correct": float})
    bad.loc[0, "correct"] = np.nan
    with pytest.raises(ValueError, match="missing grades"):
        summarise_samples(bad, k=2)


# --- wide tables -------------------------------------------------------------------------------


def _long(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["method", "benchmark", "metric", "value", "seed"])


def test_metric_table_averages_seeds_with_t_interval():
    long = _long([
        ("scope", "A", "avg@8", 50.0, 0), ("scope", "A", "avg@8", 52.0, 1),
        ("scope", "B", "avg@8", 30.0, 0), ("scope", "B", "avg@8", 30.0, 1),
        ("opd", "A", "avg@8", 40.0, 0), ("opd", "B", "avg@8", 20.0, 0),
    ])
    table = metric_table(long, "avg@8")
    assert list(table.values.index) == ["scope", "opd"] and list(table.values.columns) == ["A", "B", AVERAGE]
    assert table.values.loc["scope"].tolist() == [51.0, 30.0, 40.5]
    # two seeds: sd = sqrt(2), t(0.975, 1) = 12.7062, half-width = 12.7062 * sqrt(2) / sqrt(2)
    assert table.ci_lo.loc["scope", "A"] == pytest.approx(51.0 - 12.7062, abs=1e-4)
    assert table.ci_hi.loc["scope", "A"] == pytest.approx(51.0 + 12.7062, abs=1e-4)
    # per-seed Averages 40 and 41
    assert table.ci_hi.loc["scope", AVERAGE] == pytest.approx(40.5 + 0.5 * 12.7062, abs=1e-4)
    assert table.values.loc["opd"].tolist() == [40.0, 20.0, 30.0]
    assert math.isnan(table.ci_lo.loc["opd", "A"])


def test_metric_table_errors():
    long = _long([("scope", "A", "avg@8", 50.0, 0), ("scope", "A", "avg@8", 52.0, 0)])
    with pytest.raises(ValueError, match="several rows for one cell"):
        metric_table(long, "avg@8")
    with pytest.raises(ValueError, match="no rows for metric 'pass@8'"):
        metric_table(long, "pass@8")
    with pytest.raises(ValueError, match="benchmarks \\['Z'\\]"):
        metric_table(long.iloc[:1], "avg@8", benchmarks=["Z"])


def test_add_paper_needs_the_same_estimator():
    paper = paper_long()
    ours = paper[(paper["setting"] == SECOND) & (paper["method"].isin(["opd", "scope"]))].copy()
    ours["value"] += 1.0
    ours["metric"] = ours["metric"].replace({"pass@32/bootstrap": "pass@32"})
    unbiased = metric_table(ours, "pass@32", where={"setting": SECOND})
    with pytest.raises(ValueError, match="no rows for metric 'pass@32'"):
        add_paper(unbiased, paper, where={"setting": SECOND})
    table = add_paper(metric_table(ours, "avg@32"), paper, where={"setting": SECOND})
    assert table.paper.loc["scope", "AIME24"] == 13.3
    assert (table.values - table.paper).to_numpy() == pytest.approx(np.ones((2, 7)), abs=1e-9)
    cells = format_cells(table)
    assert cells.loc["scope", "AIME24"] == "14.3"
    assert cells.loc["scope", "AIME24 (paper)"] == "13.3"
    assert cells.loc["scope", "AIME24 Δ"] == "+1.0"
    assert list(cells.index) == ["opd", "scope"]


def _small_table() -> MetricTable:
    index = pd.Index(["opd", "scope_v2"], name="method")
    values = pd.DataFrame({"pass_at_k": [50.0, 55.25], AVERAGE: [40.0, 44.0]}, index=index)
    lo = pd.DataFrame({"pass_at_k": [48.0, 54.0], AVERAGE: [math.nan, math.nan]}, index=index)
    hi = pd.DataFrame({"pass_at_k": [52.0, 56.5], AVERAGE: [math.nan, math.nan]}, index=index)
    return MetricTable(metric="pass@8", values=values, ci_lo=lo, ci_hi=hi)


def test_format_cells_and_markdown():
    cells = format_cells(_small_table(), ci=True)
    assert cells.loc["opd", "pass_at_k"] == "50.0 ± 2.0"
    assert cells.loc["scope_v2", "pass_at_k"] == "55.2 ± 1.2"  # 55.25 rounds half-to-even in binary
    assert cells.loc["scope_v2", AVERAGE] == "44.0"
    assert to_markdown(cells) == (
        "| method   |   pass_at_k |   Average |\n"
        "|:---------|------------:|----------:|\n"
        "| opd      |  50.0 ± 2.0 |      40.0 |\n"
        "| scope_v2 |  55.2 ± 1.2 |      44.0 |\n"
    )
    # cells are written as given (no number parsing), a pipe inside a cell is escaped
    odd = pd.DataFrame({"a|b": ["+1.0", "007"]}, index=pd.Index(["x|y", "z"]))
    assert to_markdown(odd).splitlines() == ["|      |   a\\|b |", "|:-----|-------:|",
                                              "| x\\|y |   +1.0 |", "| z    |    007 |"]


def test_latex_booktabs_and_escaping():
    cells = format_cells(_small_table(), ci=True)
    assert to_latex(cells, caption="Pass@8 in % (n_samples=8)", label="tab:p8").splitlines() == [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{Pass@8 in \% (n\_samples=8)}",
        r"\label{tab:p8}",
        r"\begin{tabular}{lrr}",
        r"\toprule",
        r"method & pass\_at\_k & Average \\",
        r"\midrule",
        r"opd & 50.0 $\pm$ 2.0 & 40.0 \\",
        r"scope\_v2 & 55.2 $\pm$ 1.2 & 44.0 \\",
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    assert latex_escape("a&b#c$d{e}~^\\") == r"a\&b\#c\$d\{e\}\textasciitilde{}\textasciicircum{}\textbackslash{}"
    assert to_latex(format_cells(_small_table())).startswith(r"\begin{tabular}{lrr}")


def test_write_tables(tmp_path):
    paths = write_tables(_small_table(), tmp_path / "out", "pass8", ci=True)
    assert sorted(p.name for p in paths.values()) == ["pass8.csv", "pass8.md", "pass8.tex"]
    csv = pd.read_csv(paths["csv"], index_col="method")
    assert csv.loc["scope_v2", "pass_at_k"] == 55.25
    assert csv.loc["scope_v2", "pass_at_k_ci_hi"] == 56.5
    assert "| opd      |  50.0 ± 2.0 |      40.0 |" in paths["md"].read_text(encoding="utf-8")
    assert r"\toprule" in paths["tex"].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="stem"):
        write_tables(_small_table(), tmp_path, "a/b")
