"""Every number in the README's first part (everything above "## Reference") is checked against the file it
comes from, so the README cannot drift from the committed results: the toy results table against the
experiments' summaries, the paired difference against ``paired.csv``, the experiment settings against their
manifest, the paper's gain against ``results/reference``, the demo's k against its manifest. A number that no
check below accounts for fails the test; add its check (or, for a fixed fact that is not a result, its reason
in ``FIXED``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "results" / "toy" / "experiments"
WORDS = {"ten": 10, "six": 6, "eight": 8}

# Numbers that are facts rather than results, with where they come from.
FIXED = {
    "2604.10688": "the paper's arXiv id (/work/shared/paper, workbench.data.PAPER_SOURCE)",
    "1.5B": "the paper's smallest student", "8B": "the paper's largest model",
    "2": "a 2-core laptop: the machine the toy world is sized for",
    "95": "every interval in the workbench is a 95 % interval",
    "1": "ESS/n is 1 for uniform weights", "1/n": "ESS/n when one rollout takes all the weight",
    "-1": "the exponent in PPL^(-1/τ)", "+1": "the exponent in PPL^(+1/τ)",
}


def _top() -> str:
    text = (REPO / "README.md").read_text()
    top = text.split("\n## Reference\n", 1)[0]
    assert top != text, "the README has no '## Reference' heading separating its first part"
    # the dose-response paragraph's numbers are checked against the dial's tables (tests/test_dial.py)
    top = re.sub(r"<!-- dial-numbers -->.*?<!-- /dial-numbers -->", " ", top, flags=re.S)
    # code spans, links' targets and tier/bucket names (toy-1..toy-6, Q1..Q4, Avg@k) are names, not claims
    top = re.sub(r"`[^`]*`", " ", top)
    top = re.sub(r"\]\([^)]*\)", "]", top)
    return re.sub(r"\b(?:toy-\d|Q\d|(?:Avg|Pass)@(?:k|\d+))\b", " ", top)


def _summary(name: str) -> pd.DataFrame:
    frame = pd.read_csv(EXPERIMENTS / name / "summary.csv")
    return frame[frame["benchmark"] == "Average"].set_index("variant")


def _cell(mean: float, half: float | None) -> str:
    return f"{mean:.1f}" if half is None or pd.isna(half) else f"{mean:.1f} ± {half:.1f}"


ROWS = {  # README row label -> (experiment, variant)
    "base student": ("main", "base"), "GRPO": ("main", "grpo"), "OPD": ("main", "opd"), "KD": ("main", "kd"),
    "SCOPE": ("main", "scope"), "SCOPE with uniform weights (w/o DPAW)": ("dpaw", "scope-no_dpaw"),
    "OPD with 8 rollouts a prompt (no MLE path)": ("dpaw", "opd-8"),
}


def test_the_toy_results_table_is_the_experiments_summary():
    readme = (REPO / "README.md").read_text()
    found = {m.group(1): (m.group(2), m.group(3)) for m in
             re.finditer(r"^\| ([^|`]+?) \| ([\d.]+(?: ± [\d.]+)?) \| ([\d.]+(?: ± [\d.]+)?) \|$", readme, flags=re.M)}
    assert set(found) == set(ROWS), set(found) ^ set(ROWS)
    for label, (experiment, variant) in ROWS.items():
        row = _summary(experiment).loc[variant]
        assert found[label] == (_cell(row["avg"], row["avg_ci"]), _cell(row["pass"], row["pass_ci"])), label


def _checked_numbers() -> set[str]:
    """The README's numbers each check below has compared with its file (the table's, via the test above)."""
    readme = _top()
    numbers = set()
    for experiment, variant in ROWS.values():
        row = _summary(experiment).loc[variant]
        numbers |= {f"{row['avg']:.1f}", f"{row['pass']:.1f}"}
        numbers |= {f"{row[c]:.1f}" for c in ("avg_ci", "pass_ci") if not pd.isna(row[c])}
    numbers.add("8")  # "OPD with 8 rollouts a prompt": the dpaw variant opd-8, checked here
    assert "opd-8" in _summary("dpaw").index and "OPD given the same\n8 rollouts" in (REPO / "README.md").read_text()

    paired = pd.read_csv(EXPERIMENTS / "main" / "paired.csv")
    cell = paired[(paired["comparison"] == "scope - opd") & (paired["benchmark"] == "Average")
                  & (paired["metric"] == "avg")].iloc[0]
    match = re.search(r"paired over seeds: \+([\d.]+) ± ([\d.]+) Avg@32", (REPO / "README.md").read_text())
    assert match and match.groups() == (f"{cell['difference']:.1f}", f"{cell['ci']:.1f}")
    numbers |= {f"+{match.group(1)}", match.group(2)}

    config = json.loads((EXPERIMENTS / "main" / "manifest.json").read_text())["config"]
    settings = re.search(r"(\w+) seeds of (\d+) training steps per method; each checkpoint sampled (\d+) times on "
                         r"(\d+) test problems of each of the (\w+)\s+tiers", readme)
    assert settings, "the toy results' settings sentence is missing"
    seeds, steps, n, problems, tiers = settings.groups()
    assert (WORDS[seeds.lower()], int(steps), int(n), int(problems), WORDS[tiers]) == (
        len(config["seeds"]), config["max_steps"], config["n"], config["problems_per_tier"], len(config["tiers"]))
    numbers |= {steps, n, problems}
    assert re.search(r"Avg@32 \(%\)", (REPO / "README.md").read_text()) and config["n"] == 32

    reference = pd.read_csv(REPO / "results" / "reference" / "ablation_dpaw.csv").set_index("variant")
    gain = reference.at["scope", "AIME24_avg_at_32"] - reference.at["no_dpaw_uniform_weights", "AIME24_avg_at_32"]
    assert f"its {gain:.1f}-point gain of DPAW" in readme
    numbers.add(f"{gain:.1f}")

    demo = json.loads((REPO / "results" / "toy" / "demo" / "manifest.json").read_text())["config"]
    assert f"Avg@{demo['n']} / Pass@{demo['n']} per toy tier" in (REPO / "README.md").read_text()
    return numbers


def test_every_number_of_the_first_part_is_checked():
    readme = _top()
    checked = _checked_numbers()
    found = re.findall(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:/n|B)?(?![\w.]*\d)", readme)
    unexplained = sorted({f for f in found if f not in checked and f not in FIXED})
    assert unexplained == [], f"numbers in the README with no check: {unexplained}"
