"""``scope-wb``: one installed command for the workbench's three command lines.

    scope-wb train --config train/recipes/toy_scope.yaml [--field value ...]   # = python -m train.cli
    scope-wb eval [--model M ...]                                             # = python -m eval.reproduce
    scope-wb analysis toy | run ... | figures                                 # = python -m analysis.cli

workbench is the layer train, eval and analysis build on, so it must not import them: the chosen
command's module is imported by name when it runs, which also keeps ``scope-wb --help`` instant.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from workbench.errors import UserError, did_you_mean, main_guard

COMMANDS = {
    "train": ("train.cli", "train one run (SCOPE or a baseline) from a YAML recipe"),
    "eval": ("eval.reproduce", "sample models and write the Avg@k / Pass@k tables"),
    "analysis": ("analysis.cli", "the perplexity analyses (toy, run) and the figures"),
}
USAGE = "usage: scope-wb {train,eval,analysis} [options]   (scope-wb COMMAND --help for its options)\n\n" + "".join(
    f"  {name:<10} {text} (python -m {module})\n" for name, (module, text) in COMMANDS.items())


def _dispatch(argv: Sequence[str] | None) -> int:
    args = list(argv or [])
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if not args:
        raise UserError("give a command: train, eval or analysis (scope-wb --help)")
    if args[0] not in COMMANDS:
        raise UserError(f"unknown command {args[0]!r} (commands: train, eval, analysis)"
                        f"{did_you_mean(args[0], COMMANDS)}")
    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return main_guard(_dispatch, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
