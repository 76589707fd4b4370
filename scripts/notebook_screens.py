"""Execute the notebooks with their outputs stored, and look at them as a reader's browser shows them.

    python scripts/notebook_screens.py --execute            # run every notebook in place (outputs kept)
    python scripts/notebook_screens.py --screens            # HTML export + Chromium screenshot of each

Notebooks are committed with outputs so they show results on open; this is the one way those outputs are
made. Parameters (``-p``) and screenshots: docs/analysis.md.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
SCREENS_DIR = REPO_ROOT / "results" / "notebooks"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
WIDTH, MAX_HEIGHT = 1280, 16000  # the page is cropped to its content afterwards
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


class NotebookProblem(Exception):
    """A notebook that cannot take its parameters, or a missing tool; printed as one line."""


def notebooks(selection: Sequence[str] = ()) -> list[Path]:
    """The notebooks whose names start with one of ``selection`` (all when empty)."""
    found = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not selection:
        return found
    chosen = [p for p in found if any(p.name.startswith(s) for s in selection)]
    unmatched = [s for s in selection if not any(p.name.startswith(s) for p in found)]
    if unmatched:
        raise NotebookProblem(f"no notebook starts with {unmatched[0]!r} (have: {', '.join(p.stem for p in found)})")
    return chosen


def inject_parameters(nb: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> None:
    """Put a cell assigning ``parameters`` right after the ``parameters`` cell, replacing an earlier one."""
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.metadata.get("tags", [])]
    if not parameters:
        return
    index = next((i for i, c in enumerate(nb.cells) if PARAMETERS_TAG in c.metadata.get("tags", [])), None)
    if index is None:
        raise NotebookProblem("the notebook has no cell tagged 'parameters' to inject after")
    declared = {node.id for node in ast.walk(ast.parse(nb.cells[index].source))
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    unknown = sorted(set(parameters) - declared)
    if unknown:
        raise NotebookProblem(f"unknown parameter {unknown[0]!r}; the parameters cell sets: "
                              f"{', '.join(sorted(declared))}")
    source = "# Injected parameters\n" + "".join(f"{name} = {value!r}\n" for name, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]}))


def execute(path: Path, parameters: Mapping[str, Any] | None = None, timeout: int = 900) -> nbformat.NotebookNode:
    """Run a notebook top to bottom from its own folder (as Jupyter does) and return it with outputs.

    The kernel talks over local IPC sockets, not TCP: nothing listens on a port, and ipykernel has no
    reason to warn that TCP traffic is unencrypted on every run."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, parameters or {})
    with tempfile.TemporaryDirectory(prefix="nb-kernel-") as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = NotebookClient(nb, km=kernel, timeout=timeout, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        finally:  # nbclient leaves a kernel it was handed running
            if kernel.has_kernel:
                kernel.shutdown_kernel()
    return nb


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Every error, stderr output (warnings, text progress bars) and widget output (notebook progress
    bars), as 'cell N: text' lines."""
    found = []
    for number, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "error":
                found.append(f"cell {number}: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                found.append(f"cell {number}: stderr: {out.text.strip()[:300]}")
            elif WIDGET_MIME in out.get("data", {}):  # a tqdm bar: blank in an HTML export, noise in Lab
                found.append(f"cell {number}: widget output {out.data.get('text/plain', '')[:100]!r}")
    return found


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    """Drop per-run timestamps, and join consecutive prints to one stream (the kernel splits them by
    timing), so re-executing unchanged code changes only what the code computed."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        joined: list[nbformat.NotebookNode] = []
        for out in cell.get("outputs", []):
            last = joined[-1] if joined else None
            if (out.output_type == "stream" and last is not None and last.output_type == "stream"
                    and last.name == out.name):
                last.text += out.text
            else:
                joined.append(out)
        if "outputs" in cell:
            cell.outputs = joined


def parse_parameters(pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    parameters = {}
    for name, text in pairs:
        try:
            parameters[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parameters[name] = text
    return parameters


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise NotebookProblem("no Chromium found; install it with: apt-get install -y chromium")


def screenshot(path: Path, out_dir: Path) -> Path:
    """``<out_dir>/<stem>.png``: the notebook's HTML export as headless Chromium renders it."""
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(path, as_version=4))
    target = out_dir / f"{path.stem}.png"
    with tempfile.TemporaryDirectory(prefix="nb-screen-") as tmp:
        page, shot = Path(tmp) / f"{path.stem}.html", Path(tmp) / "shot.png"
        page.write_text(html)
        subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                        f"--screenshot={shot}", f"--window-size={WIDTH},{MAX_HEIGHT}", page.as_uri()],
                       check=True, capture_output=True, timeout=180)
        crop_to_content(shot, target)
    return target


def crop_to_content(source: Path, target: Path, margin: int = 40) -> None:
    """Cut the blank space below the page's last content (the window is taller than any notebook) and
    store the page in 256 colours: a third of the bytes, text and plots as sharp."""
    from PIL import Image, ImageChops

    image = Image.open(source).convert("RGB")
    box = ImageChops.difference(image, Image.new("RGB", image.size, (255, 255, 255))).getbbox()
    bottom = min(image.height, (box[3] if box else 0) + margin)
    page = image.crop((0, 0, image.width, bottom))
    page.quantize(colors=256, dither=Image.Dither.NONE).save(target, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook name prefixes, e.g. 03 (default: all)")
    parser.add_argument("--execute", action="store_true", help="run the notebooks, storing their outputs")
    parser.add_argument("--screens", action="store_true", help="HTML export and Chromium screenshot of each")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a value of the parameters cell (repeatable)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="write executed notebooks here instead of in place (needed with -p)")
    parser.add_argument("--in-place", action="store_true",
                        help="with -p: overwrite the committed notebooks with the parameterised run")
    parser.add_argument("--screens-dir", type=Path, default=SCREENS_DIR)
    args = parser.parse_args(argv)
    if not (args.execute or args.screens):
        parser.error("say --execute, --screens or both")
    if args.parameter and args.execute and args.output_dir is None and not args.in_place:
        # the committed notebooks hold the default run's outputs; another size must not silently replace them
        print("error: -p runs a notebook with other parameters; give --output-dir DIR for the executed copies "
              "(or --in-place to overwrite the committed notebooks)", file=sys.stderr)
        return 2
    if args.in_place and args.output_dir is not None:
        parser.error("--in-place and --output-dir are two destinations; give one")
    try:
        paths = notebooks(args.names)
        parameters = parse_parameters(args.parameter)
        for path in paths:
            written = path
            if args.execute:
                started = time.perf_counter()
                nb = execute(path, parameters)
                strip_volatile(nb)
                written = (args.output_dir / path.name) if args.output_dir else path
                written.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, written)
                print(f"{path.name}: executed in {time.perf_counter() - started:.0f} s -> {written}")
                for line in problems(nb):
                    print(f"  {line}")
            if args.screens:
                print(f"{written.name}: screenshot {screenshot(written, args.screens_dir)}")
    except NotebookProblem as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
