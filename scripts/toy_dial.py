"""The spread dial's dose-response: ``python scripts/toy_dial.py run --world W`` / ``report`` (``make toy-dial``).

``run`` trains SCOPE, SCOPE with uniform weights, OPD and its two compute-matched controls from world W's
student (seeds 0..N-1), samples every final checkpoint and the base student, and writes
``results/toy/dial/W/dose/`` (counts, per-step traces, tables, manifest); training and sampling resume where a
killed run stopped. ``--quick`` is a tiny end-to-end version (2 seeds, 2 steps, 2 tiers) written under
``--results`` (a scratch folder by default, never the committed results). ``report`` reads every world's
committed tables and writes the dose-response table across worlds (``results/toy/dial/dose_response.md``).
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path


from analysis import dial
from workbench.errors import UserArgumentParser, main_guard
from workbench.runs import producer, read_manifest, run_folder
from workbench.toy import DIAL_DIR, DIAL_WORLDS


def report(results: Path) -> str:
    """The dose-response across worlds, the contrast of the gaps between the extreme worlds, and a manifest."""
    started = time.perf_counter()
    table = dial.dose_response(results)
    if table.empty:
        return "no world has a dose-response run yet"
    lines = ["# Dose-response of SCOPE's weighting across the spread dial", "",
             "Per world: ESS/n of the weights at tau = 1 on the base student's rollouts (mean over all (group, "
             "path) subsets; make toy-dial-spread) and paired differences in Average Avg@n (points, mean over "
             "seeds ± 95 % t half-width; same seed = same prompts); the SCOPE - uniform test's p-value, raw and "
             "Holm-adjusted over the worlds (p_holm_worlds). Each world's own table (with p-values Holm-adjusted "
             "over its comparisons, the compute-matched controls and learning curves) is in <world>/dose/table.md.",
             "", table.round(3).to_markdown(index=False), ""]
    done = list(table["world"])
    if len(done) >= 2:
        # the contrast the question asks for: the world where the student-side weights spread most against least
        ordered = table.sort_values("mle_ess_frac")
        most, least = str(ordered["world"].iat[0]), str(ordered["world"].iat[-1])
        contrast = dial.gap_contrast(results, low=least, high=most)
        lines += [f"Gap contrast: (SCOPE - uniform in {most!r}, the lowest MLE-path ESS/n) - (SCOPE - uniform in "
                  f"{least!r}, the highest) = {contrast['difference']:+.2f} ± {contrast['ci']:.2f} points (Welch 95 % "
                  f"interval over the per-seed gaps, p = {contrast['p_value']:.3f}).", ""]
    text = "\n".join(lines)
    config = {"worlds": done}
    with run_folder(results / "report", config, None, kind="toy-dose-response-report",
                    wall_seconds={"reporting_s": round(time.perf_counter() - started, 2)}) as out:
        (out / "dose_response.md").write_text(text)
        table.round(4).to_csv(out / "dose_response.csv", index=False)
        draw_figures(results, done, out)
    return text


def draw_figures(results: Path, worlds: Sequence[str], out: Path) -> None:
    """The dose-response point of every world, the spread its weights act on, and each world's learning curves."""
    from analysis import figures
    from workbench.plotting import house_style, save_figure

    with house_style():
        save_figure(figures.dose_response_figure(dial.dose_response(results)), out, "dose_response")
        save_figure(figures.dial_spread({w: dial.per_rollout_of(w, results) for w in worlds}), out, "spread")
        for world in worlds:
            result, cfg = dial.load(world, results)
            labels = {v.name: v.label for v in dial.variants(cfg)}
            save_figure(figures.dial_curves(result.traces, labels), out, f"curves_{world}")


def main(argv: Sequence[str] | None = None) -> int:
    defaults = dial.DoseConfig()
    parser = UserArgumentParser(prog="python scripts/toy_dial.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "report", "redraw"))
    parser.add_argument("--world", choices=DIAL_WORLDS, default="low")
    parser.add_argument("--seeds", type=int, default=len(defaults.seeds), help="seeds 0..N-1")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--n", type=int, default=defaults.n, help="samples a problem at the final checkpoint")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out the two compute-matched OPD controls (OPD 32 prompts x 1, OPD 8x steps)")
    parser.add_argument("--quick", action="store_true", help="tiny end-to-end run (CI)")
    parser.add_argument("--results", type=Path, help="results folder (default results/toy/dial; --quick: scratch)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    if args.command == "report":
        print(report(args.results or DIAL_DIR))
        return 0
    if args.command == "redraw":
        # tables again from the committed counts and traces; the run's own command and wall times are kept
        results = args.results or DIAL_DIR
        previous = read_manifest(results / args.world / "dose")
        result, cfg = dial.load(args.world, results)
        result.timings = dict(previous.get("wall_seconds", {}))
        dial.save(result, cfg, dial.spread_ess_of(args.world, results), produced_by=producer(previous))
        print((cfg.out / "table.md").read_text())
        return 0
    cfg = replace(defaults, world=args.world, seeds=tuple(range(args.seeds)), max_steps=args.max_steps,
                  workers=args.workers, controls=not args.no_controls, n=args.n)
    scratch = None
    if args.quick:
        cfg = dial.quick(cfg)
        if args.results is None:
            scratch = tempfile.mkdtemp(prefix="toy-dial-quick-")
            args.results = Path(scratch)
        cfg = replace(cfg, runs=args.results / "runs", samples=args.results / "samples")
    if args.results is not None:
        cfg = replace(cfg, results=args.results)
    result = dial.run(cfg)
    out = dial.save(result, cfg, dial.spread_ess_of(cfg.world))
    print((out / "table.md").read_text())
    print(f"dose-response {cfg.world}: {time.perf_counter() - started:.0f} s wall, outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main_guard(main))
