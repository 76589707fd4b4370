"""Every notebook runs top to bottom on the toy world with small injected parameters, and shows nothing
a reader should not see: no error, no warning or other stderr output, no stray progress-bar widget.

The parameters go in as papermill injects them (a cell after the one tagged ``parameters``), through
the same code ``scripts/notebook_screens.py --execute`` uses to store the committed outputs; each
notebook must also print a line that only the injected values produce, so an injection that silently
did nothing fails.
"""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("notebook_screens", ROOT / "scripts" / "notebook_screens.py")
screens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screens)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# name -> (small parameters, a text the run must print with them)
SMALL = {
    "01_toy_world": ({"problems_per_benchmark": 2, "n": 4}, "12 problems x 4 samples per model"),
    "02_scope_objective": ({"taus": [0.5, 2]}, "largest difference from the paper's rounded weights: 0.00"),
    "03_training": ({"steps": 3, "heldout_every": 3, "heldout_problems_per_tier": 2, "groups_to_show": 2},
                    "over 3 steps"),
    "04_tables": ({"k": 4}, "k = 4"),
    "05_perplexity_vs_correction": ({"problems_per_tier": 3, "ratios": [0.4, 0.8], "continuations": 2,
                                     "scratch_samples": 2, "boundary_samples": 4, "buckets": 2, "n_boot": 50,
                                     "taus": [0.5, 2.0]}, "12 problems x 4 student rollouts"),
    "06_weights": ({"runs": ["results/toy/training_logs/scope/seed0"], "taus": [0.5, 2.0]}, "at τ = 2"),
    "07_toy_experiments": ({"experiments": ["tau", "main"], "live": True, "live_steps": 1, "live_problems_per_tier": 2,
                            "live_n": 2, "live_tiers": ["toy-2"]}, "tau (live): 2 seeds of 1 steps"),
    "08_spread_dial": ({"world": "high", "taus": [0.5, 1.0]}, "world 'high':"),
}


def _text(nb):
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(out.get("text", ""))
            parts += [str(out.get("data", {}).get(mime, "")) for mime in ("text/plain", "text/markdown", "text/html")]
    return "\n".join(parts)


def test_every_notebook_has_small_parameters():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(SMALL)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_clean(path):
    parameters, expected = SMALL[path.stem]
    nb = screens.execute(path, parameters, timeout=300)
    assert screens.problems(nb) == []
    assert expected in _text(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_clean_outputs(path):
    """Opened in Lab or on GitHub, a notebook shows the results of its default parameters."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "committed without running every cell"
    assert any(c.outputs for c in code)
    assert screens.problems(nb) == []
    injected = [c for c in nb.cells if screens.INJECTED_TAG in c.metadata.get("tags", [])]
    assert not injected, "committed with injected parameters"


def test_unknown_parameter_is_refused():
    nb = nbformat.read(ROOT / "notebooks" / "04_tables.ipynb", as_version=4)
    with pytest.raises(screens.NotebookProblem, match="unknown parameter 'kk'"):
        screens.inject_parameters(nb, {"kk": 3})


def test_parameters_never_overwrite_a_committed_notebook_unless_asked():
    import subprocess
    import sys

    path = ROOT / "notebooks" / "04_tables.ipynb"
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "notebook_screens.py"), "--execute", "04",
                           "-p", "k", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("error: -p runs a notebook with other parameters; give --output-dir DIR for the "
                                   "executed copies (or --in-place to overwrite the committed notebooks)")
    assert path.read_bytes() == before  # refused before the kernel started


def test_the_kernel_prints_no_transport_warning(tmp_path):
    """The kernel's own stderr (not a cell's output) stays empty: no 'running over TCP without encryption'."""
    import subprocess
    import sys

    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")]), notebook)
    code = ("import importlib.util, sys; from pathlib import Path; "
            f"spec = importlib.util.spec_from_file_location('s', {str(ROOT / 'scripts' / 'notebook_screens.py')!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            f"print(m.execute(Path({str(notebook)!r})).cells[0].outputs[0].text, end='')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n" and proc.stderr == ""


def test_the_tool_the_notebooks_name_for_real_runs_comes_with_make_lab():
    import re
    import tomllib

    named = {m.group(1) for path in NOTEBOOKS for cell in nbformat.read(path, as_version=4).cells[:1]
             for m in re.finditer(r"`?(papermill) notebooks/", cell.source)}
    assert named == {"papermill"}
    lab = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lab"]
    assert any(re.match(r"papermill\b", requirement) for requirement in lab)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r'^lab:.*\n\t.*import [\w, ]*papermill.*install_locked,\$\(PY\),\$\(LOCK\) \$\(LAB_LOCK\)', makefile,
                     flags=re.M)
