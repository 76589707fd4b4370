"""Scripts of ``scripts/`` and ``benchmarks/`` as modules, so tests can call their functions.

They are run as ``python scripts/x.py`` and are not part of an installed package, so they are
imported from their files; one module per file, shared by every test that loads it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The module of ``REPO/relative`` (e.g. ``"scripts/toy_suite.py"``), imported once."""
    path = REPO / relative
    name = f"repo_script_{path.parent.name}_{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
