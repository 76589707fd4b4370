"""A grading worker: ``python -m workbench.grading.worker``, one JSON object per line each way.

A fresh interpreter, never a fork, so it imports nothing of the program that grades; its own limits are
only backstops for when the parent is gone. The protocol: docs/grading.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import resource
import signal
import sys
import time


@functools.lru_cache(maxsize=1024)
def _parse_gold(gold: str) -> list:
    """Parsed gold, cached: consecutive requests share golds."""
    from math_verify import parse

    return parse(gold, parsing_timeout=None)


def verify_all(gold: str, preds: list[list[str]]) -> tuple[bool, str | None]:
    """(every answer has a reading equal to the gold, error), math-verify's own time limits off.
    A parse error is reported only when no reading of some answer parses."""
    from math_verify import parse, verify

    parsed_gold = _parse_gold(gold)
    if not parsed_gold:
        return False, "parse_error: gold"
    for readings in preds:
        parsed = [p for p in (parse(reading, parsing_timeout=None) for reading in readings) if p]
        if not parsed:
            return False, "parse_error: answer"
        if not any(verify(parsed_gold, p, timeout_seconds=None) for p in parsed):
            return False, None
    return True, None


def _limit(kind: int, soft: int) -> None:
    hard = resource.getrlimit(kind)[1]
    resource.setrlimit(kind, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-limit", type=int, required=True, help="bytes of address space")
    args = parser.parse_args(argv)

    # stdout carries the protocol only: anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limit(resource.RLIMIT_AS, args.memory_limit)
    _limit(resource.RLIMIT_CORE, 0)
    logging.basicConfig(level=logging.ERROR)  # math-verify's "timeout disabled" notices

    # Import and warm the parsers and sympy's simplification before taking timed work, so a
    # worker's first request is not charged for lazy imports.
    verify_all("\\boxed{\\frac{1}{2}}", [["\\boxed{0.5}"]])
    verify_all("\\boxed{(1, 2) \\cup \\{3\\}}", [["\\boxed{x^2 + \\sqrt{2}}"]])
    verify_all("\\boxed{x+1}", [["\\boxed{\\frac{x^2-1}{x-1}}"]])
    channel.write(json.dumps({"ready": True, "cpu": time.process_time()}) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        cpu = time.process_time()
        _limit(resource.RLIMIT_CPU, math.ceil(cpu + 2 * request["limit"] + 10))
        wall = time.perf_counter()
        try:
            ok, error = verify_all(request["gold"], request["preds"])
        except Exception as exc:  # any failure of one item is that item's verdict
            ok, error = False, f"error: {type(exc).__name__}"
        done = time.process_time()
        answer = {"id": request["id"], "ok": ok, "error": error,
                  "seconds": time.perf_counter() - wall, "cpu": done, "item_cpu": done - cpu}
        channel.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
