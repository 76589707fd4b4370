"""Chained single-digit arithmetic mod 10: the toy world's stand-in for a math benchmark.

Chain length sets the difficulty (tier ``toy-t`` has ``t`` operations); several answer styles give correct
rollouts a spread of perplexities for SCOPE's weights to act on; a SHA-256 bucket of the prompt keeps
train and test disjoint whatever the seed. Examples and the styles: docs/toy-world.md.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache

TIERS: tuple[str, ...] = ("toy-1", "toy-2", "toy-3", "toy-4", "toy-5", "toy-6")
OPERATORS: str = "+-*"
COMMUTATIVE: str = "+*"
STEP_SEPARATOR: str = ";"  # ends every worked step: the toy's "line break" for prefix truncation
CORRECTION_MARKER: str = "!"  # "that was wrong, start again": opens a fresh solution after a bad step
HUNCH_MARKER: str = "?"  # opens a response that guesses at the answer before working it out
# How a solution may be written; all are right as long as the boxed answer is.
STYLES: tuple[str, ...] = ("full", "free", "terse")
PROMPT_PREFIX: str = "Q:"
PROMPT_SUFFIX: str = "?A:"
SPLITS: tuple[str, ...] = ("train", "test")

# One prompt in _TEST_BUCKETS goes to the test split (20%); the smallest tier (300 distinct prompts)
# keeps 50 test problems, enough for the >= 30 a tier that evaluation needs.
_TEST_BUCKETS = 5
# Tiers whose whole prompt space is at most this large are enumerated rather than sampled, so an
# impossible request fails with a clear count instead of looping.
_ENUMERATE_LIMIT = 10_000

_PROMPT_RE = re.compile(r"^Q:(\d(?:[-+*]\d)+)\?A:$")


def _apply(a: int, op: str, b: int) -> int:
    if op == "+":
        return (a + b) % 10
    if op == "-":
        return (a - b) % 10
    if op == "*":
        return (a * b) % 10
    raise ValueError(f"unknown operator {op!r}")


def _tier_ops(tier: str) -> int:
    if tier not in TIERS:
        raise ValueError(f"unknown toy tier {tier!r}; expected one of {TIERS}")
    return int(tier.split("-")[1])


def _parse(problem: str) -> tuple[list[int], list[str]]:
    """Accept the full prompt (``Q:3+5*2?A:``) or the bare chain (``3+5*2``)."""
    text = problem.strip()
    match = _PROMPT_RE.match(text) or _PROMPT_RE.match(f"{PROMPT_PREFIX}{text}{PROMPT_SUFFIX}")
    if match is None:
        raise ValueError(f"not a toy problem: {problem!r}")
    chain = match.group(1)
    return [int(c) for c in chain[0::2]], list(chain[1::2])


def format_prompt(operands: list[int], ops: list[str]) -> str:
    """Render a chain as the plain prompt the toy models are trained and evaluated on."""
    if len(operands) != len(ops) + 1 or not ops:
        raise ValueError("a chain needs at least one operator and one more operand than operators")
    chain = str(operands[0]) + "".join(f"{op}{b}" for op, b in zip(ops, operands[1:]))
    return f"{PROMPT_PREFIX}{chain}{PROMPT_SUFFIX}"


def solution_steps(problem: str) -> list[tuple[int, str, int, int]]:
    """The reference chain as ``(left, op, right, result)`` steps, evaluated left to right."""
    operands, ops = _parse(problem)
    steps = []
    acc = operands[0]
    for op, b in zip(ops, operands[1:]):
        result = _apply(acc, op, b)
        steps.append((acc, op, b, result))
        acc = result
    return steps


def solve(problem: str) -> str:
    """Reference final answer (a single digit as text) computed from the prompt."""
    return str(solution_steps(problem)[-1][3])


def reference_solution(problem: str) -> str:
    """The reference response: one ``a op b = c;`` step per operation, then the boxed answer."""
    steps = solution_steps(problem)
    body = "".join(f"{a}{op}{b}={c}{STEP_SEPARATOR}" for a, op, b, c in steps)
    return f"{body}\\boxed{{{steps[-1][3]}}}"


def _forms(a: int, op: str, b: int, c: int) -> list[str]:
    forms = [f"{a}{op}{b}={c}", f"{c}={a}{op}{b}"]
    if op in COMMUTATIVE:
        forms += [f"{b}{op}{a}={c}", f"{c}={b}{op}{a}"]
    return forms


def _render(steps: list[tuple[int, str, int, int]], styles: str | Sequence[str], rng: random.Random) -> str:
    """Steps written in one style, or each in its own (``styles`` then has one entry per step)."""
    if isinstance(styles, str):
        styles = [styles] * len(steps)
    if len(styles) < len(steps):
        raise ValueError(f"{len(steps)} steps but only {len(styles)} styles")
    out = []
    for step, style in zip(steps, styles):
        if style == "full":
            out.append("{}{}{}={}".format(*step))
        elif style == "free":
            out.append(rng.choice(_forms(*step)))
        elif style == "terse":
            out.append(str(step[3]))
        else:
            raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    return "".join(f"{text}{STEP_SEPARATOR}" for text in out)


def styled_solution(problem: str, style: str | Sequence[str], rng: random.Random) -> str:
    """A right response in one of the valid ``STYLES``, or with each step in its own style.

    ``full`` is :func:`reference_solution`. ``free`` writes each step in a form drawn from ``rng``:
    operands in either order where the operator commutes, and the equation either way round
    (``8=3+5``). ``terse`` writes only each step's result (``8;6;\\boxed{6}``): the same chain
    done in the head, shorter and harder. They stand for the many ways a real model can write the
    same correct reasoning, which is what gives correct rollouts different perplexities.
    """
    steps = solution_steps(problem)
    return f"{_render(steps, style, rng)}\\boxed{{{steps[-1][3]}}}"


def trial_solution(problem: str, trials: int, rng: random.Random, written: bool = False) -> str:
    """A right response by trial and check: each step writes ``trials`` candidate results it rejects,
    then the right one (``728;16;\\boxed{6}`` for ``3+5*2`` with one trial a step).

    Done in the head like ``terse``, but exploring: the rejected candidates are any wrong digit, so a
    writer that explores has many equally valid ways to reach one answer, and each of its tokens is
    far less predictable than a derivation's. It is the toy's version of a reasoning model's "is it
    7? no; 2? no; 8": correct rollouts that wander have a much higher perplexity than correct
    rollouts that go straight, which is the spread SCOPE's student-side weights act on. The last
    digit before each ``;`` is the step's result; only the boxed answer is graded. ``written`` keeps each
    step's operation in front of its candidates (``3+5=728;8*2=16;``): the same exploration on top of a
    full derivation, so it is as often right as a full step.
    """
    if trials < 0:
        raise ValueError("trials must be non-negative")
    steps = solution_steps(problem)
    out = []
    for a, op, b, result in steps:
        wrong = [d for d in range(10) if d != result]
        head = f"{a}{op}{b}=" if written else ""
        out.append(head + "".join(str(rng.choice(wrong)) for _ in range(trials)) + str(result))
    return "".join(f"{text}{STEP_SEPARATOR}" for text in out) + f"\\boxed{{{steps[-1][3]}}}"


def hunch_solution(problem: str, hunches: int, style: str | Sequence[str], rng: random.Random) -> str:
    """A right response that guesses before it works: ``hunches`` bare guesses at the answer, dropped with
    the correction marker, then a derivation in ``style`` (``?7294!3+5=8;8*2=6;\\boxed{6}``).

    It is the toy's version of a reasoning model that first tries answers on a hunch ("7? 2? maybe 9?"),
    gives them up and derives the result: the guesses are any digit, so each costs the writer about
    log 10 nats, while the derivation after them is the same as a rollout that goes straight, and as
    often right. The share of guesses in a response sets how far its per-token perplexity sits above a
    straight rollout's, which is what SCOPE's student-side weights weigh. The opening marker makes the
    choice to guess one token of its own, so sampling temperature scales that choice and not each guess.
    """
    if hunches < 1:
        raise ValueError("a hunch solution needs at least one guess")
    guesses = "".join(str(rng.randrange(10)) for _ in range(hunches))
    return f"{HUNCH_MARKER}{guesses}{CORRECTION_MARKER}{styled_solution(problem, style, rng)}"


def _wrong_step(a: int, op: str, b: int, rng: random.Random) -> tuple[int, str, int, int]:
    """A step with one slip, as a student makes it: a wrong result, operand, operator or carried value.

    The slip always changes the step's result, so the chain after it goes wrong.
    """
    right = _apply(a, op, b)
    while True:
        kind = rng.choice(("result", "operand", "operator", "carried"))
        if kind == "result":
            return a, op, b, rng.choice([d for d in range(10) if d != right])
        if kind == "operand":
            step = (a, op, rng.choice([d for d in range(10) if d != b]))
        elif kind == "operator":
            step = (a, rng.choice([o for o in OPERATORS if o != op]), b)
        else:
            step = (rng.choice([d for d in range(10) if d != a]), op, b)
        result = _apply(*step)
        if result != right:
            return (*step, result)


def corrected_solution(problem: str, style: str | Sequence[str], rng: random.Random,
                       persist: float = 0.5) -> tuple[str, str]:
    """A flawed start and its repair: ``(prefix, completion)``.

    The prefix is a solution in ``style`` with one slip at a random step, carried on consistently for
    a few more steps (each further step with probability ``persist``), ending at a step separator;
    the completion is the correction marker and the whole reference solution. Trained on the
    completion only, a model is taught to notice a wrong step in what it was given, just made or
    long past, and to start again, without ever being taught to make the slip itself.
    """
    operands, ops = _parse(problem)
    bad = rng.randrange(len(ops))
    steps = solution_steps(problem)[:bad]
    acc = steps[-1][3] if steps else operands[0]
    steps.append(_wrong_step(acc, ops[bad], operands[bad + 1], rng))
    acc = steps[-1][3]
    for op, b in zip(ops[bad + 1 :], operands[bad + 2 :]):
        if rng.random() >= persist:
            break
        steps.append((acc, op, b, _apply(acc, op, b)))
        acc = steps[-1][3]
    return _render(steps, style, rng), CORRECTION_MARKER + reference_solution(problem)


def split_of(problem: str) -> str:
    """The split a prompt belongs to, fixed by a hash of its text alone."""
    digest = hashlib.sha256(problem.encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % _TEST_BUCKETS == 0 else "train"


def _random_prompt(n_ops: int, rng: random.Random) -> str:
    operands = [rng.randrange(10) for _ in range(n_ops + 1)]
    ops = [rng.choice(OPERATORS) for _ in range(n_ops)]
    return format_prompt(operands, ops)


def _all_prompts(n_ops: int) -> Iterator[str]:
    total = 10 ** (n_ops + 1) * len(OPERATORS) ** n_ops
    for index in range(total):
        operands, ops = [], []
        for _ in range(n_ops + 1):
            index, digit = divmod(index, 10)
            operands.append(digit)
        for _ in range(n_ops):
            index, k = divmod(index, len(OPERATORS))
            ops.append(OPERATORS[k])
        yield format_prompt(operands, ops)


def sample_prompts(tier: str, n: int, split: str, rng: random.Random) -> list[str]:
    """Draw ``n`` prompts of one tier from one split WITH replacement (training streams).

    Unlike :func:`toy_problems` this never runs out, which the small tiers need when a training
    mix asks for more examples than the tier has distinct prompts.
    """
    n_ops = _tier_ops(tier)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    out: list[str] = []
    while len(out) < n:
        prompt = _random_prompt(n_ops, rng)
        if split_of(prompt) == split:
            out.append(prompt)
    return out


@lru_cache(maxsize=None)
def _enumerated_split(n_ops: int, split: str) -> tuple[str, ...]:
    return tuple(p for p in _all_prompts(n_ops) if split_of(p) == split)


def _distinct_prompts(tier: str, n: int, split: str, seed: int) -> list[str]:
    n_ops = _tier_ops(tier)
    rng = random.Random(f"toy/{tier}/{split}/{seed}")
    space = 10 ** (n_ops + 1) * len(OPERATORS) ** n_ops
    if space <= _ENUMERATE_LIMIT:
        pool = list(_enumerated_split(n_ops, split))
        if n > len(pool):
            raise ValueError(f"{tier} has only {len(pool)} distinct {split} problems; asked for {n}")
        rng.shuffle(pool)
        return pool[:n]
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        prompt = _random_prompt(n_ops, rng)
        if prompt not in seen and split_of(prompt) == split:
            seen.add(prompt)
            out.append(prompt)
    return out


def toy_problems(tier: str, n: int, split: str = "test", seed: int = 0) -> list[dict]:
    """``n`` distinct problems of one tier and split, deterministic in ``(tier, split, seed)``.

    A smaller ``n`` returns a prefix of a larger one, so problem ids stay meaningful as
    evaluation sizes change. Rows carry ``problem_id``, ``problem`` (the prompt text), ``answer``
    and ``solution`` (the reference response, without EOS).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if n < 0:
        raise ValueError("n must be non-negative")
    stem = f"{tier}/{split}" if seed == 0 else f"{tier}/{split}/seed{seed}"
    return [
        {
            "problem_id": f"{stem}/{i:04d}",
            "problem": prompt,
            "answer": solve(prompt),
            "solution": reference_solution(prompt),
        }
        for i, prompt in enumerate(_distinct_prompts(tier, n, split, seed))
    ]
