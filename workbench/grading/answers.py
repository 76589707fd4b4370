"""What a response answers, and the strings math-verify compares: pure Python, cheap, no sympy.

Everything here runs in the calling process on untrusted text, so every scan is linear in the
(capped) tail of the response; nothing here can hang. The rules are described in the package
docstring (:mod:`workbench.grading`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from decimal import Decimal

from workbench.data import AnswerRules, get_spec

MAX_TAIL_CHARS = 10_000
"""Only the last this-many characters of a response are searched for the final answer: final
answers sit at the end, and the cap keeps extraction cheap on runaway generations."""

MAX_GAP_CHARS = 300
"""Boxes further apart than this are separate statements, not parts of one answer."""

MAX_BOXES_JOINED = 16

NO_BOXED, UNCLOSED_BOXED, EMPTY_BOXED = "no_boxed", "unclosed_boxed", "empty_boxed"
MULTIPLE_ANSWERS = "multiple_answers"
INVALID_TEXT = "invalid_text"
TOO_COMPLEX = "too_complex"

MAX_ANSWER_DEPTH = 10
"""Deepest bracket nesting (``{}``, ``()``, ``[]``) of an answer math-verify is asked about. Its
LaTeX parser gives up on deep nesting and falls back to an inner sub-expression, so that
``\\frac{\\frac{...\\frac{5}{2}...}{2}}{2}`` 150 deep compared equal to ``\\frac{5}{2}``, and
nesting from about 15 deep ran into the time limit instead. The deepest of the six real benchmarks'
golds is 3, so an answer deeper than 10 is graded wrong (``too_complex``) without a guess."""

MAX_ANSWER_CHARS = 1_000
"""Longest answer (one box) math-verify is asked about: about five times the longest real gold (210
characters); anything longer is graded wrong (``too_complex``)."""


# --------------------------------------------------------------------------- boxes

_BOX_OPENER = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_UNCLOSED = -1


def _box_span(text: str, opener: re.Match[str], end: int | None = None) -> tuple[int, int]:
    """(content start, content end) of a box whose braces close before ``end``; content end is
    ``_UNCLOSED`` otherwise. Backslash-escaped braces (``\\{``) do not count as grouping."""
    depth = 1
    for token in _BRACE_TOKEN.finditer(text, opener.end(), len(text) if end is None else end):
        brace = token.group()
        if brace == "{":
            depth += 1
        elif brace == "}":
            depth -= 1
            if depth == 0:
                return opener.end(), token.start()
    return opener.end(), _UNCLOSED


_RUN_BREAK = re.compile(
    r"\b(?:wait|actually|mistakes?|mistaken|wrong|incorrect|errors?|oops|sorry|correct(?:ion|ed|ing)"
    r"|instead|re-?(?:check|consider|examine|compute|calculate|evaluate|do|doing|think)|double[- ]?check"
    r"|let me|let's|let us|hmm+|no\s*[,.!]|extraneous|reject(?:ed)?|discard(?:ed)?|invalid|impossible"
    r"|final answer\s*(?:\*\*|:|\n))|</think>",
    re.IGNORECASE,
)


def _joins(gap: str) -> bool:
    """Whether the text between two boxes keeps them in one answer: short, and neither a
    correction ("wait", "actually", "let me recheck"), a rejection ("extraneous"), the end of a
    thinking section nor a "Final Answer" heading."""
    return len(gap) <= MAX_GAP_CHARS and _RUN_BREAK.search(gap) is None


def final_boxes(response: str) -> tuple[list[str], str | None]:
    """Contents of the final run of boxes, in order, and the reason when there is no answer.

    A run is the last box together with the boxes before it that :func:`_joins` links, at most
    ``MAX_BOXES_JOINED``. Consecutive identical contents count once and empty boxes not at all.
    Work is linear in the tail: each earlier box is scanned only up to the start of the next.
    """
    tail = response[-MAX_TAIL_CHARS:]
    openers = list(_BOX_OPENER.finditer(tail))
    if not openers:
        return [], NO_BOXED
    content_start, content_end = _box_span(tail, openers[-1])
    if content_end == _UNCLOSED:
        return [], UNCLOSED_BOXED
    contents = [tail[content_start:content_end].strip()]
    start = openers[-1].start()
    for opener in reversed(openers[-MAX_BOXES_JOINED:-1]):
        content_start, content_end = _box_span(tail, opener, start)
        if content_end == _UNCLOSED or not _joins(tail[content_end + 1 : start]):
            break
        contents.append(tail[content_start:content_end].strip())
        start = opener.start()
    parts: list[str] = []
    for content in reversed(contents):
        if content and (not parts or parts[-1] != content):
            parts.append(content)
    return parts, (None if parts else EMPTY_BOXED)


# --------------------------------------------------------------------------- number formats

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_TEXT_SUBSCRIPT = re.compile(r"_\{\s*\\(?:text|mathrm|rm)\s*\{([^{}]*)\}\s*\}")


def _clean(latex: str) -> str:
    """Drop artefacts of answers copied out of running text (OlympiadBench golds have them):
    ``$,$`` separators, stray ``$`` and a trailing sentence period (``4.25.``; an ellipsis
    stays). Also ``x_{\\text{red}}`` -> ``x_{red}``, which math-verify fails to parse."""
    latex = latex.replace("$,$", ",").replace("$, $", ", ")
    latex = _TEXT_SUBSCRIPT.sub(r"_{\1}", _UNESCAPED_DOLLAR.sub(" ", latex)).strip()
    return latex[:-1].rstrip() if latex.endswith(".") and latex[-2:] not in ("..", "\\.") else latex


_GROUP_SEPARATOR = r"\{,\} ?|,\\! ?|\\[,;:> ]|~|[ \u00a0\u2007\u2009\u202f]"
_DIGIT_RUN = re.compile(rf"(?<!\d)\d+(?:(?:{_GROUP_SEPARATOR})\d+)+")  # starts once per run of digits: linear
_SEPARATOR = re.compile(f"({_GROUP_SEPARATOR})")
_COMMA_NUMBER = re.compile(r"\s*[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?\s*")


def _ungroup_digits(latex: str) -> str:
    """``1 000``, ``10\\,000``, ``1{,}000`` -> ``1000``: a first group of one to three digits,
    then groups of exactly three with the same separator throughout, so ``2 \\, 3`` (a product)
    and ``12\\,34`` stay as they are. A plain comma groups only when the whole answer is that
    number (``58,500``); elsewhere it separates answers (``(2,251,252)``, ``27,54,108``)."""
    if _COMMA_NUMBER.fullmatch(latex):
        return latex.replace(",", "").strip()

    def join(run: re.Match[str]) -> str:
        groups = _SEPARATOR.split(run.group())  # digits, separator, digits, ...
        digits, separators = groups[::2], set(groups[1::2])
        before = latex[run.start() - 1] if run.start() else " "
        if (len(separators) == 1 and 1 <= len(digits[0]) <= 3 and all(len(d) == 3 for d in digits[1:])
                and not (before.isalnum() or before in "._^\\")):
            return "".join(digits)
        return run.group()

    return _DIGIT_RUN.sub(join, latex)


_CURRENCY = re.compile(
    r"\\text\s*\{\s*(?:\\\$|€|£|¥)\s*\}"
    r"|\\(?:\$|euro|texteuro|pounds|textsterling|yen|textyen|textdollar)(?![A-Za-z])"
    r"|[€£¥₹₩₽₪₺₦฿₫¢]"
)
_PERCENT = re.compile(r"\\text\{\s*(?:\\?%|percent)\s*\}|\\?%|\bpercent\b")
_CHOICE_LABEL = re.compile(
    r"\s*(?:\\textbf\s*\{\s*\(?[A-E]\)?\s*\}|\\text\s*\{\s*\([A-E]\)\s*\}|\([A-E]\))(?:\s|~|\\[,;: ]|\\quad)*"
)
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
_DIGIT_DOT = re.compile(r"(\d)\.(?!\d)")
_SPACING_TOKENS = ("~", "\\,", "\\;", "\\:", "\\!", "\\quad", "\\qquad", "\\")  # "\ " is "\" once rstripped
_WRAPPED_UNIT = re.compile(
    r"(?:/\s*)?\\(?:text|mathrm|mbox|textrm|rm|operatorname)\s*\{(?:[^{}]|\{[^{}]*\})*\}"
    r"(?:\s*\^\s*(?:\{[^{}]*\}|-?\d))?$"
)
_NUMBER = (
    r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?:\s*(?:\\times|\\cdot)\s*10\s*\^\s*(?:\{\s*[+-]?\d+\s*\}|[+-]?\d))?"
)
_NUMBER_THEN_SPACE = re.compile(rf"\s*({_NUMBER})(?:\s|~|\\[,;: ])*")
_UNIT_WORD = re.compile(r"[A-Za-z]+(?:\^(?:\{-?\d\}|-?\d))?")
_UNIT_JOINER = re.compile(r"(?:\s|/|\*|\.|\\cdot(?![A-Za-z]))+")
_PLAIN_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")
_FRACTION = r"[+-]?\\[dt]?frac\s*\{\s*\d+\s*\}\s*\{\s*\d+\s*\}|[+-]?\d+\s*/\s*\d+"
_NUMERIC_GOLD = re.compile(rf"\s*(?:{_NUMBER}|{_FRACTION})\s*")
_SINGLE_LETTER_UNITS = frozenset("mgsKNJWVALTh")
_MATH_WORDS = re.compile(r"\b(?:sqrt|pi|log|ln|exp|sin|cos|tan|cot|sec|csc|arcsin|arccos|arctan|infty|inf)\b")


def _rstrip_spacing(latex: str) -> str:
    """Drop trailing whitespace and LaTeX spacing commands (a loop: a regex anchored at the end
    would rescan every run of spaces, quadratic on hostile input)."""
    while True:
        stripped = latex.rstrip()
        for token in _SPACING_TOKENS:
            if stripped.endswith(token):
                stripped = stripped[: -len(token)]
        if stripped == latex:
            return latex
        latex = stripped


def _strip_wrapped_units(latex: str) -> str:
    """Drop trailing ``\\text{...}``-style units when a number-like value remains before them."""
    while True:
        latex = _rstrip_spacing(latex)
        match = _WRAPPED_UNIT.search(latex)
        if match is None or not re.search(r"\d", latex[: match.start()]):
            return latex
        latex = latex[: match.start()]


def _strip_bare_unit(latex: str) -> str:
    """``6630 K`` -> ``6630``, ``1,000.99 m^2`` -> ``1,000.99``: used only when the gold is a plain
    number, so words after a number can only be a unit. A single letter is a unit only when it
    is a common SI one (``m``, ``K``, ``s``...); ``5 x`` or ``3 c`` stay, as do function names."""
    number = _NUMBER_THEN_SPACE.match(latex)
    unit = latex[number.end() :].strip() if number else ""
    words = [word for word in _UNIT_JOINER.split(unit) if word]
    if not words or _MATH_WORDS.search(unit):
        return latex
    for word in words:
        letters = word.split("^")[0]
        if not _UNIT_WORD.fullmatch(word) or (len(letters) == 1 and letters not in _SINGLE_LETTER_UNITS):
            return latex
    return number.group(1)


def _strip_choice_label(latex: str, gold_is_choice: bool) -> str:
    """``\\textbf{(C)}\\ 33`` -> ``33``: an answer-choice label in front of the value it names;
    against a gold that is itself a choice (``\\text{(C)}``) the label is kept instead."""
    match = _CHOICE_LABEL.match(latex)
    if match is None or match.end() == len(latex):
        return latex
    return latex[: match.end()].strip() if gold_is_choice else latex[match.end() :]


def _scientific_notation(latex: str) -> str:
    """``4.5e33`` -> ``4.5 \\times 10^{33}`` and ``-1./3`` -> ``-1/3``, as math-verify reads
    ``e`` as Euler's number and ``1.`` oddly."""
    return _DIGIT_DOT.sub(r"\1", _SCIENTIFIC.sub(r"\1 \\times 10^{\2}", latex))


def _normalise(latex: str, rules: AnswerRules, *, gold: Gold | None) -> tuple[str, bool]:
    """One answer as handed to math-verify, and whether it carried a percent sign: the gold
    itself (``gold`` None), or one boxed part of a response read against ``gold``. Each step runs
    when the benchmark's rules ask for it, in this order."""
    percents = 0
    if rules.copied_text:
        latex = _clean(latex)
    if rules.choice_labels and gold is not None:
        latex = _strip_choice_label(latex, gold.is_choice)
    if rules.currency_percent:
        latex, percents = _PERCENT.subn("", _CURRENCY.sub("", latex))
    if rules.units:
        latex = _strip_wrapped_units(latex).strip()
        if gold is not None and gold.is_number:
            latex = _strip_bare_unit(latex)
    if rules.digit_groups:
        latex = _ungroup_digits(latex)
    if rules.scientific_notation:
        latex = _scientific_notation(latex)
    return latex, percents > 0


_DECIMAL = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")


def _scaled(latex: str, factor: str) -> str:
    """``latex`` times ``factor`` (``100`` or ``1/100``), as an exact decimal when it is one."""
    if not _DECIMAL.fullmatch(latex):
        return f"\\frac{{{latex}}}{{100}}" if factor == "1/100" else f"100 \\cdot ({latex})"
    value = Decimal(latex.strip()) * Decimal("0.01" if factor == "1/100" else "100")
    return format(value.normalize(), "f")


# --------------------------------------------------------------------------- golds


def _outer_brackets(latex: str) -> tuple[str, str] | None:
    """The bracket pair enclosing all of ``latex`` when its inside lists several values at the
    top level, e.g. ``("(", ")")`` for ``(3, 4)``; None for ``(1, 2) \\cup (3, 4)`` or ``7``."""
    text = re.sub(r"\\(?:left|right|big|Big)(?![A-Za-z])", "", latex).strip()
    for opening, closing in (("\\{", "\\}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")):
        if text.startswith(opening) and text.endswith(closing) and len(text) > len(opening) + len(closing):
            inner = text[len(opening) : -len(closing)]
            if _balanced(inner) and _has_top_level_comma(inner):
                return opening, closing
    return None


def _balanced(latex: str) -> bool:
    depth = 0
    for char in re.sub(r"\\[{}]", "", latex):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth < 0:
            return False
    return depth == 0


def _has_top_level_comma(latex: str) -> bool:
    """Whether a comma separates answers, i.e. sits outside every bracket pair."""
    depth = 0
    for char in re.sub(r",\\!|\{,\}|\\[{}]", "", latex):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            return True
    return False


_PLUS_MINUS = re.compile(r"\\(?:pm|mp)(?![A-Za-z])")
_CHOICE = re.compile(r"\s*(?:\\text(?:bf)?\s*\{\s*\(?[A-E]\)?\s*\}|\(?[A-E]\)?)\s*")


@dataclass(frozen=True)
class Gold:
    """A gold answer prepared once: the latex math-verify parses, and the shape of the answer."""

    latex: str
    integer: str | None  # canonical integer literal, for the fast path
    is_number: bool  # a number or a numeric fraction: words after a predicted number are units
    percent: bool  # written with a percent sign
    is_choice: bool  # an answer-choice letter such as ``\\text{(C)}``
    multi: bool  # asks for several values (a list, a ``\\pm``, or one bracketed tuple or set)
    brackets: tuple[str, str] | None  # the bracket pair the values sit in, if one encloses them all
    has_equation: bool


@functools.lru_cache(maxsize=8192)
def prepare_gold(answer: str, benchmark: str) -> Gold:
    """The gold as math-verify will see it (cached: a batch grades many responses per gold)."""
    rules = get_spec(benchmark).rules
    latex, percent = _normalise(answer, rules, gold=None)
    brackets = _outer_brackets(latex)
    several = brackets is not None or _has_top_level_comma(latex) or _PLUS_MINUS.search(latex) is not None
    return Gold(
        latex=latex,
        integer=integer_literal(latex),
        is_number=_NUMERIC_GOLD.fullmatch(latex) is not None,
        percent=percent,
        is_choice=_CHOICE.fullmatch(latex) is not None,
        multi=not rules.integers_only and several,
        brackets=brackets,
        has_equation="=" in latex,
    )


# --------------------------------------------------------------------------- one response

_INTEGER_LITERAL = re.compile(r"\s*([+-]?)(\d+)(?:\.0*)?\s*")
_LABEL = re.compile(r"\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")


def integer_literal(text: str) -> str | None:
    """Canonical form ('-25') of an integer literal such as ' 025', '+25', '25.0'; else None."""
    match = _INTEGER_LITERAL.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.group(1), match.group(2).lstrip("0") or "0"
    return "-" + digits if sign == "-" and digits != "0" else digits


@dataclass(frozen=True)
class Prepared:
    """A response read against its gold: either already decided, or what math-verify must
    compare. ``preds`` holds one entry per answer the response commits to, and each entry the
    readings of that answer (two for a percentage: the number and the number over 100). The
    response is right when every entry has a reading equal to ``gold``."""

    extracted: str | None
    error: str | None = None
    verdict: bool | None = None
    gold: str = ""
    preds: tuple[tuple[str, ...], ...] = ()

    @property
    def key(self) -> str:
        """The predictions as one cache key (a single reading is itself, more a JSON list)."""
        return self.preds[0][0] if len(self.preds) == 1 and len(self.preds[0]) == 1 else json.dumps(self.preds)

    def failed(self, correct: bool) -> str | None:
        """The error a verdict carries: several different answers that are not all right."""
        return MULTIPLE_ANSWERS if len(self.preds) > 1 and not correct else None


def _boxed(latex: str) -> str:
    """Wrapped so math-verify reads the whole string as LaTeX and takes it whole."""
    return "\\boxed{" + latex + "}"


def _readings(latex: str, percent: bool, gold: Gold) -> tuple[str, ...]:
    """A predicted answer, and for a percentage against a plain-number gold also its other
    reading: ``62.5\\%`` is 62.5 or 0.625; ``0.625`` is also 62.5 against a gold of ``62.5\\%``."""
    if gold.is_number and percent and not gold.percent:
        return latex, _scaled(latex, "1/100")
    if gold.is_number and gold.percent and not percent and _PLAIN_NUMBER.fullmatch(latex):
        return latex, _scaled(latex, "100")
    return (latex,)


def _fast_verdict(readings: list[tuple[str, ...]], gold: Gold) -> bool | None:
    """Without sympy when certain: integer literals against an integer gold."""
    if gold.integer is None:
        return None
    verdicts = []
    for options in readings:
        literals = [integer_literal(option) for option in options]
        if gold.integer in literals:
            verdicts.append(True)
        elif None in literals:
            return None
        else:
            verdicts.append(False)
    return all(verdicts)


def too_complex(latex: str) -> str | None:
    """Why an answer is beyond what math-verify reads faithfully (``MAX_ANSWER_CHARS``,
    ``MAX_ANSWER_DEPTH``), or None."""
    if len(latex) > MAX_ANSWER_CHARS:
        return f"{TOO_COMPLEX}: {len(latex):,} characters > {MAX_ANSWER_CHARS:,}"
    depth = deepest = 0
    for char in latex:
        if char in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "})]":
            depth = max(0, depth - 1)
    if deepest > MAX_ANSWER_DEPTH:
        return f"{TOO_COMPLEX}: nesting depth {deepest} > {MAX_ANSWER_DEPTH}"
    return None


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prepare(response: str, answer: str, benchmark: str) -> Prepared:
    """Read a response against its gold (see the rules in :mod:`workbench.grading`)."""
    if not _valid_text(response):  # a lone surrogate: no tokenizer made it, no cache or file can hold it
        return Prepared(None, INVALID_TEXT, False)
    parts, error = final_boxes(response)
    if error is not None:
        return Prepared(None if error != EMPTY_BOXED else "", error, False)
    extracted = ", ".join(parts)
    rules = get_spec(benchmark).rules
    gold = prepare_gold(answer, benchmark)
    if rules.integers_only:
        if gold.integer is None:
            raise ValueError(f"{benchmark}: the gold answer must be an integer, got {answer!r}")
        correct = all(integer_literal(part) == gold.integer for part in parts)
        return Prepared(extracted, MULTIPLE_ANSWERS if len(parts) > 1 and not correct else None, correct)
    for part in parts:
        if reason := too_complex(part):
            return Prepared(extracted, reason, False)
    normalised = [_normalise(part, rules, gold=gold) for part in parts]
    if len(parts) > 1 and gold.multi:
        values = [latex for latex, _ in normalised]
        if not gold.has_equation:
            values = [value[label.end() :] if (label := _LABEL.match(value)) else value for value in values]
        opening, closing = gold.brackets or ("", "")
        separator = ", " if ", " in gold.latex else ","  # golds math-verify cannot parse compare as text
        readings = [(opening + separator.join(values) + closing,)]
    else:
        readings = [_readings(latex, percent, gold) for latex, percent in normalised]
    fast = _fast_verdict(readings, gold)
    if fast is not None:
        return Prepared(extracted, MULTIPLE_ANSWERS if len(readings) > 1 and not fast else None, fast)
    preds = tuple(tuple(_boxed(option) for option in options) for options in readings)
    return Prepared(extracted, gold=_boxed(gold.latex), preds=preds)
