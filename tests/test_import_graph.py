"""The packages import in one direction, workbench <- {train, eval} <- analysis, and no module imports
itself back through others. Read from the sources with ``ast``, so every import counts: those at the
top of a file, those inside functions (run later, but a cycle all the same) and those under
``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("workbench", "train", "eval", "analysis")
# What each package may import, itself included: train and eval never import each other, nothing imports analysis.
ALLOWED = {"workbench": {"workbench"}, "train": {"workbench", "train"}, "eval": {"workbench", "eval"},
           "analysis": {"workbench", "train", "eval", "analysis"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement names: for ``from X import y``, ``X.y`` (a submodule, or an
    attribute of X: the caller keeps what is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join([*package, *([base] if base else [])])
        return [f"{base}.{alias.name}" for alias in node.names] + [base]
    return []


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the modules of ``sources`` (name -> (source text, is a package)) it imports; a name is
    mapped to the longest module it starts with, and a package's own ``__init__`` is not an edge."""
    graph: dict[str, set[str]] = {}
    for module, (text, is_package) in sources.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(text)):
            for name in imported(node, module, is_package):
                parts = name.split(".")
                target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1)
                               if ".".join(parts[:n]) in sources), None)
                if target is not None and target != module and not (sources[target][1] and "." not in target):
                    edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def house_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def test_the_graph_reader_sees_every_kind_of_import_and_finds_a_cycle():
    sources = {
        "train": ("", True), "train.a": ("from train import b\n", False),
        "train.b": ("def f():\n    from train.c import g\n", False),
        "train.c": ("import typing\nif typing.TYPE_CHECKING:\n    from .a import x\n", False),
        "train.d": ("import train.a.x\nimport os\n", False),
    }
    graph = import_graph(sources)
    assert graph == {"train": set(), "train.a": {"train.b"}, "train.b": {"train.c"}, "train.c": {"train.a"},
                     "train.d": {"train.a"}}
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"train.a", "train.b", "train.c"}
    del sources["train.c"]
    assert find_cycle(import_graph(sources)) is None


def test_no_import_cycle_in_the_house():
    graph = import_graph(house_sources())
    assert {"train.config", "train.recipe", "analysis.pipeline", "workbench.errors"} <= set(graph)
    assert "train.recipe" in graph["train.config"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_in_one_direction(package):
    graph = import_graph(house_sources())
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items()
                   if module.split(".")[0] == package for target in targets
                   if target.split(".")[0] not in ALLOWED[package])
    assert wrong == []
