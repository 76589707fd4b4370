"""Equivalence table: (response, gold, benchmark, verdict) cases a careful human grader agrees on.

Each row states one rule in both directions where it has two: a rewriting that must be accepted
next to a near miss that must not. The whole table is graded in one batch (real worker processes)
and every disagreement is listed at once.
"""

from __future__ import annotations

import pytest

from workbench.grading import grade_batch

LONG = (
    "We first restate the problem and set up notation. Consider the function $f(x) = x^2 - 3x + 2$ "
    "and note that $f(1) = 0$ and $f(2) = 0$, so the roots are $1$ and $2$. "
) * 3
FILLER = "Then we carefully re-derive every intermediate quantity from the definitions given above. " * 5

# fmt: off
MULTI_PART = [
    # labelled boxes, prose between boxes, and plain runs of boxes, against golds that list several values
    ("So $x = \\boxed{3}$, $y = \\boxed{4}$.", "3, 4", "math500", True),
    ("So $x = \\boxed{3}, y = \\boxed{4}$.", "3, 4", "math500", True),
    ("Hence $x = \\boxed{3}$ and $y = \\boxed{4}$.", "3, 4", "math500", True),
    ("Therefore $y_1 = \\boxed{1}$ and $y_2 = \\boxed{-2}$.", "1,-2", "math500", True),
    ("Therefore $x_{1} = \\boxed{-2}$ and $x_{2} = \\boxed{1}$.", "-2,1", "math500", True),
    ("For part (a) the answer is $\\boxed{69}$, and for part (b) the answer is $\\boxed{84}$.", "69$,$84", "olympiadbench", True),
    ("(a) $\\boxed{69}$ \\quad (b) $\\boxed{84}$", "69$,$84", "olympiadbench", True),
    ("\\textbf{(a)} $\\boxed{69}$\n\n\\textbf{(b)} $\\boxed{84}$", "69$,$84", "olympiadbench", True),
    ("The two answers are \\boxed{84} and \\boxed{69}.", "69$,$84", "olympiadbench", True),
    ("\\boxed{69}, \\boxed{84}", "69$,$84", "olympiadbench", True),
    ("\\boxed{x = 3}, \\boxed{y = 4}", "3, 4", "math500", True),
    ("The primes are $\\boxed{3}$, $\\boxed{5}$ and $\\boxed{7}$.", "3, 5, 7", "math500", True),
    ("The primes are $\\boxed{3, 5}$ and $\\boxed{7}$.", "3, 5, 7", "math500", True),
    ("The pairs are $\\boxed{(2, 32)}$ and $\\boxed{(8, 18)}$.", "(2,32), (8,18)", "olympiadbench", True),
    ("The pairs are $\\boxed{(8, 18)}$ and $\\boxed{(2, 32)}$.", "(2,32), (8,18)", "olympiadbench", True),
    ("The solutions are $\\boxed{f(x) = x}$ and $\\boxed{f(x) = 2 - x}$.", "f(x)=x$,$f(x)=2-x", "olympiadbench", True),
    ("Hence $\\boxed{1.68}$ and $\\boxed{0.45}$.", "1.68,0.45", "olympiadbench", True),
    ("Hence $\\boxed{\\frac{32}{9}}$ and $\\boxed{\\frac{1}{2}}$.", "\\frac{32}{9}$,$\\frac{1}{2}", "olympiadbench", True),
    ("Hence $\\boxed{60^\\circ}$ and $\\boxed{90^\\circ}$.", "90^{\\circ}$,$60^{\\circ}", "olympiadbench", True),
    ("The ordered pair is $x = \\boxed{3}$, $y = \\boxed{4}$.", "(3, 4)", "olympiadbench", True),
    ("\\boxed{69}. Wait, that is wrong. Redoing it: \\boxed{84} and \\boxed{69}.", "69$,$84", "olympiadbench", True),
    # ... and the near misses: a value missing, a wrong value, an extra candidate, the wrong order of a tuple
    ("So $x = \\boxed{3}$, $y = \\boxed{5}$.", "3, 4", "math500", False),
    ("So $x = \\boxed{3}$.", "3, 4", "math500", False),
    ("The candidates are \\boxed{3}, \\boxed{4} and \\boxed{5}.", "3, 4", "math500", False),
    ("For part (a) the answer is $\\boxed{69}$, and for part (b) the answer is $\\boxed{85}$.", "69$,$84", "olympiadbench", False),
    ("The ordered pair is $x = \\boxed{4}$, $y = \\boxed{3}$.", "(3, 4)", "olympiadbench", False),
    ("\\boxed{69}. " + FILLER + FILLER + "So the other one is \\boxed{84}.", "69$,$84", "olympiadbench", False),
    ("\\boxed{69}, \\boxed{84}. Wait, I should double-check the second. It is \\boxed{85}.", "69$,$84", "olympiadbench", False),
    ("The pairs are $\\boxed{(2, 32)}$ and $\\boxed{(8, 19)}$.", "(2,32), (8,18)", "olympiadbench", False),
    # a gold with \pm asks for two values
    ("So $x = \\boxed{1+\\sqrt{19}}$ or $x = \\boxed{1-\\sqrt{19}}$.", "1 \\pm \\sqrt{19}", "math500", True),
    ("\\boxed{3 - 2\\sqrt{2}}, \\boxed{3 + 2\\sqrt{2}}", "3 \\pm 2 \\sqrt{2}", "math500", True),
    ("\\boxed{1 \\pm \\sqrt{19}}", "1 \\pm \\sqrt{19}", "math500", True),
    ("So $x = \\boxed{1+\\sqrt{19}}$.", "1 \\pm \\sqrt{19}", "math500", False),
    ("\\boxed{3 - 2\\sqrt{2}}, \\boxed{3 + \\sqrt{2}}", "3 \\pm 2 \\sqrt{2}", "math500", False),
    # rejected candidates and the end of a thinking section end a run
    ("$x = \\boxed{2}$ is extraneous, so the solutions are $\\boxed{3}$ and $\\boxed{4}$.", "3, 4", "math500", True),
    ("So \\boxed{3}.</think>The solutions are \\boxed{3} and \\boxed{4}.", "3, 4", "math500", True),
]

HEDGING = [
    # several different candidates boxed together for a single-value gold never score
    ("\\boxed{3}, \\boxed{5}", "5", "math500", False),
    ("The answer is $\\boxed{3}$ or $\\boxed{5}$.", "5", "math500", False),
    ("The answer is $\\boxed{3}$ or $\\boxed{5}$.", "3", "math500", False),
    ("It is either \\boxed{12} or \\boxed{13}.", "13", "aime24", False),
    ("\\boxed{12}, \\boxed{13}", "13", "aime25", False),
    ("I think it is $\\boxed{\\frac{1}{2}}$, but it could also be $\\boxed{\\frac{1}{3}}$.", "\\frac{1}{3}", "math500", False),
    ("So $x = \\boxed{3}$, $y = \\boxed{4}$.", "4", "math500", False),
    ("For part (a) the answer is $\\boxed{1}$, and for part (b) it is $\\boxed{2}$.", "2", "olympiadbench", False),
    ("The answer is \\boxed{7}\\boxed{8}", "8", "toy-3", False),
    # ... while the same value boxed twice, a restatement, or a correction is fine
    ("The answer is $\\boxed{5}$.\n\n**Final Answer**\n$\\boxed{5}$", "5", "math500", True),
    ("\\boxed{5} \\boxed{5}", "5", "aime24", True),
    ("So $\\boxed{\\frac{1}{2}} = \\boxed{0.5}$.", "\\frac{1}{2}", "math500", True),
    ("So $\\boxed{x = 5}$, that is, $\\boxed{5}$.", "5", "math500", True),
    ("I got \\boxed{3}. Wait, I made a mistake in the second step. The answer is \\boxed{5}.", "5", "math500", True),
    ("I got \\boxed{3}. Actually, let me recompute: the answer is \\boxed{5}.", "5", "math500", True),
    ("First attempt: \\boxed{3}. " + FILLER + FILLER + "So the final answer is \\boxed{5}.", "5", "math500", True),
    ("\\boxed{3}. Hmm, no. Correcting the sign gives \\boxed{5}.", "5", "aime24", True),
    ("...\\boxed{7}", "7", "toy-3", True),
]

NUMBER_FORMATS = [
    # thousands grouping by spaces, thin spaces, \, \; \  ~ and {,}: groups of exactly three digits
    ("\\boxed{1 000}", "1000", "math500", True),
    ("\\boxed{10\\,000}", "10000", "math500", True),
    ("\\boxed{10\\ 000}", "10000", "math500", True),
    ("\\boxed{10\\;000}", "10000", "math500", True),
    ("\\boxed{10~000}", "10000", "math500", True),
    ("\\boxed{10\u2009000}", "10000", "math500", True),
    ("\\boxed{10\u202f000}", "10000", "math500", True),
    ("\\boxed{10\u00a0000}", "10000", "math500", True),
    ("\\boxed{1\\,000\\,000}", "1000000", "olympiadbench", True),
    ("\\boxed{1 234 567.5}", "1234567.5", "olympiadbench", True),
    ("\\boxed{1{,}000}", "1000", "math500", True),
    ("\\boxed{1{,}000{,}000}", "10^6", "math500", True),
    ("\\boxed{12{,}345.67}", "12345.67", "minerva", True),
    ("\\boxed{10,\\!080}", "10080", "math500", True),
    ("\\boxed{10080}", "10,\\!080", "math500", True),
    ("\\boxed{1,000}", "1000", "math500", True),
    ("\\boxed{58500}", "58,500", "math500", True),
    ("\\boxed{58{,}500}", "58,500", "math500", True),
    ("\\boxed{58\\,500}", "58,500", "math500", True),
    ("\\boxed{58 500}", "58,500", "math500", True),
    ("\\boxed{58,500}", "58,500", "math500", True),
    ("\\boxed{58,500 \\text{ license plates}}", "58,500", "math500", True),
    ("\\boxed{1 000}", "1000", "aime24", True),
    ("\\boxed{6\\,700}", "6700", "olympiadbench", True),
    ("\\boxed{109\\,890}", "109890", "olympiadbench", True),
    ("\\boxed{15\\,000}", "15000", "minerva", True),
    ("\\boxed{15,000 \\text{ K}}", "15000", "minerva", True),
    # numbers with units, currency and percent signs where the gold is a bare number
    ("\\boxed{1,000.99 m^2}", "1000.99", "math500", True),
    ("\\boxed{1,000.99 \\text{ m}^2}", "1000.99", "math500", True),
    ("\\boxed{1000.99 \\, \\mathrm{m}^{2}}", "1000.99", "math500", True),
    ("\\boxed{1000.99 €}", "1000.99", "math500", True),
    ("\\boxed{€1000.99}", "1000.99", "math500", True),
    ("\\boxed{\\$1,000}", "1000", "math500", True),
    ("\\boxed{$1,000$}", "1000", "math500", True),
    ("\\boxed{\\$1{,}000.50}", "1000.5", "math500", True),
    ("\\boxed{£5}", "5", "amc23", True),
    ("\\boxed{¥300}", "300", "math500", True),
    ("\\boxed{1000 \\text{ dollars}}", "1000", "math500", True),
    ("\\boxed{1,000 \\text{ USD}}", "1000", "math500", True),
    ("\\boxed{\\text{\\$}18.90}", "\\$18.90", "math500", True),
    ("\\boxed{18.9}", "\\$18.90", "math500", True),
    ("\\boxed{\\$18.90}", "\\$18.90", "math500", True),
    ("\\boxed{32348}", "\\$32,\\!348", "math500", True),
    ("\\boxed{\\$32,348}", "\\$32,\\!348", "math500", True),
    ("\\boxed{32{,}348 \\text{ dollars}}", "\\$32,\\!348", "math500", True),
    ("\\boxed{5.4}", "5.4 \\text{ cents}", "math500", True),
    ("\\boxed{5.4 \\text{ cents}}", "5.4 \\text{ cents}", "math500", True),
    ("\\boxed{62.5\\%}", "62.5%", "olympiadbench", True),
    ("\\boxed{62.5}", "62.5%", "olympiadbench", True),
    ("\\boxed{8\\%}", "8 \\%", "olympiadbench", True),
    ("\\boxed{17.5 \\text{ percent}}", "17.5%", "olympiadbench", True),
    ("\\boxed{25\\%}", "25", "math500", True),
    ("\\boxed{41.8\\%}", "41.8", "minerva", True),
    ("\\boxed{25 \\%}", "25", "aime24", True),
    ("\\boxed{\\$36}", "\\$36", "math500", True),
    # a percentage against a bare-number gold may mean the number or the number over 100
    ("\\boxed{10\\%}", "0.1", "math500", True),
    ("\\boxed{62.5\\%}", "0.625", "math500", True),
    ("\\boxed{50\\%}", "\\frac{1}{2}", "math500", True),
    ("\\boxed{0.625}", "62.5%", "olympiadbench", True),
    ("\\boxed{6.25\\%}", "0.625", "math500", False),
    ("\\boxed{0.63}", "62.5%", "olympiadbench", False),
    ("\\boxed{11\\%}", "0.1", "math500", False),
    ("\\boxed{36}", "\\$36", "math500", True),
    ("\\boxed{36 \\text{ dollars}}", "\\$36", "math500", True),
    # ... and what grouping must not swallow: other group sizes, products, lists and tuples
    ("\\boxed{2 \\, 3}", "23", "math500", False),
    ("\\boxed{2\\,3}", "23", "math500", False),
    ("\\boxed{12\\,34}", "1234", "math500", False),
    ("\\boxed{1\\,0000}", "10000", "math500", False),
    ("\\boxed{1 00}", "100", "math500", False),
    ("\\boxed{1000\\,000}", "1000000", "math500", False),
    ("\\boxed{1 000}", "1", "math500", False),
    ("\\boxed{58.5}", "58,500", "math500", False),
    ("\\boxed{585}", "58,500", "math500", False),
    ("\\boxed{2251252}", "(2,251,252)", "olympiadbench", False),
    ("\\boxed{(2, 251, 252)}", "(2,251,252)", "olympiadbench", True),
    ("\\boxed{54108}", "27,54,108,135,189,216,270,297,351,378", "olympiadbench", False),
    ("\\boxed{2500, 7500}", "2500,7500", "olympiadbench", True),
    ("\\boxed{2500}", "2500,7500", "olympiadbench", False),
    ("\\boxed{1,000.99 m^2}", "1000", "math500", False),
    ("\\boxed{\\$1,001}", "1000", "math500", False),
    ("\\boxed{63\\%}", "62.5%", "olympiadbench", False),
    ("\\boxed{19}", "\\$18.90", "math500", False),
    ("\\boxed{1 000 00}", "100000", "math500", False),
    ("\\boxed{0.5 000}", "0.5", "math500", False),
    ("\\boxed{5 x}", "5", "math500", False),
    ("\\boxed{3 \\sqrt{2}}", "3", "math500", False),
    ("\\boxed{2 \\pi}", "2", "minerva", False),
    ("\\boxed{12 \\text{ inches}}", "12", "math500", True),
    ("\\boxed{5 m}", "5", "math500", True),
    ("\\boxed{\\textbf{(B)}\\ 34}", "33", "amc23", False),
    ("\\boxed{(A)\\ 33}", "33", "amc23", True),
]

GENERAL = [
    # fractions, decimals, radicals, pi, powers
    ("\\boxed{\\dfrac{3}{56}}", "\\frac{3}{56}", "math500", True),
    ("\\boxed{3/56}", "\\frac{3}{56}", "math500", True),
    ("\\boxed{\\tfrac{17}{50}}", "\\dfrac{17}{50}", "math500", True),
    ("\\boxed{0.34}", "\\dfrac{17}{50}", "math500", True),
    ("\\boxed{0.35}", "\\dfrac{17}{50}", "math500", False),
    ("\\boxed{0.35625}", ".35625", "math500", True),
    ("\\boxed{\\frac{57}{160}}", ".35625", "math500", True),
    ("\\boxed{\\frac{\\sqrt{21}}{5}}", "\\frac{\\sqrt{21}}{5}", "math500", True),
    ("\\boxed{\\sqrt{21}/5}", "\\frac{\\sqrt{21}}{5}", "math500", True),
    ("\\boxed{\\frac{21}{5\\sqrt{21}}}", "\\frac{\\sqrt{21}}{5}", "math500", True),
    ("\\boxed{\\frac{\\sqrt{21}}{4}}", "\\frac{\\sqrt{21}}{5}", "math500", False),
    ("\\boxed{\\sqrt{51}}", "\\sqrt{51}", "math500", True),
    ("\\boxed{51^{1/2}}", "\\sqrt{51}", "math500", True),
    ("\\boxed{\\sqrt{52}}", "\\sqrt{51}", "math500", False),
    ("\\boxed{288\\pi}", "288 \\pi", "math500", True),
    ("\\boxed{\\pi \\cdot 288}", "288 \\pi", "math500", True),
    ("\\boxed{288}", "288 \\pi", "math500", False),
    ("\\boxed{2^{1009}}", "2^{1009}", "olympiadbench", True),
    ("\\boxed{2^{1008}}", "2^{1009}", "olympiadbench", False),
    ("\\boxed{2 - \\sqrt{3}}", "2-\\sqrt{3}", "olympiadbench", True),
    ("\\boxed{-\\sqrt{3} + 2}", "2-\\sqrt{3}", "olympiadbench", True),
    ("\\boxed{\\frac{1}{2+\\sqrt{3}}}", "2-\\sqrt{3}", "olympiadbench", True),
    ("\\boxed{2 + \\sqrt{3}}", "2-\\sqrt{3}", "olympiadbench", False),
    ("\\boxed{\\frac{9\\sqrt{3}}{20}}", "\\frac{9 \\sqrt{3}}{20}", "olympiadbench", True),
    ("\\boxed{0.45\\sqrt{3}}", "\\frac{9 \\sqrt{3}}{20}", "olympiadbench", True),
    ("\\boxed{\\frac{9}{32}\\sqrt{2}}", "M=\\frac{9}{32} \\sqrt{2}", "olympiadbench", True),
    ("\\boxed{M = \\frac{9\\sqrt{2}}{32}}", "M=\\frac{9}{32} \\sqrt{2}", "olympiadbench", True),
    ("\\boxed{\\frac{9}{32}}", "M=\\frac{9}{32} \\sqrt{2}", "olympiadbench", False),
    ("\\boxed{6-5i}", "6 - 5i", "math500", True),
    ("\\boxed{-5i + 6}", "6 - 5i", "math500", True),
    ("\\boxed{6+5i}", "6 - 5i", "math500", False),
    ("\\boxed{p-q}", "p - q", "math500", True),
    ("\\boxed{-q+p}", "p - q", "math500", True),
    ("\\boxed{q-p}", "p - q", "math500", False),
    # integers, signs, leading zeros
    ("\\boxed{033}", "33", "aime24", True),
    ("\\boxed{33.0}", "33", "aime25", True),
    ("\\boxed{+33}", "33", "amc23", True),
    ("\\boxed{34}", "33", "aime24", False),
    ("\\boxed{-33}", "33", "aime24", False),
    ("The answer is $\\boxed{\\textbf{(C)}\\ 33}$", "33", "amc23", True),
    ("\\boxed{33 \\text{ ways}}", "33", "aime24", True),
    ("\\boxed{\\frac{66}{2}}", "33", "aime24", True),
    ("\\boxed{3 \\cdot 11}", "33", "amc23", True),
    # intervals, sets, tuples, unions
    ("\\boxed{(-\\sqrt{3}, \\sqrt{3})}", "(-\\sqrt{3}, \\sqrt{3})", "math500", True),
    ("\\boxed{\\left(-\\sqrt{3}, \\sqrt{3}\\right)}", "(-\\sqrt{3}, \\sqrt{3})", "math500", True),
    ("\\boxed{[-\\sqrt{3}, \\sqrt{3}]}", "(-\\sqrt{3}, \\sqrt{3})", "math500", False),
    ("\\boxed{[\\frac{1}{2}, 8]}", "[\\frac{1}{2}, 8]", "olympiadbench", True),
    ("\\boxed{[0.5, 8]}", "[\\frac{1}{2}, 8]", "olympiadbench", True),
    ("\\boxed{(\\frac{1}{2}, 8]}", "[\\frac{1}{2}, 8]", "olympiadbench", False),
    ("\\boxed{(2,12) \\cup (12,102)}", "(2,12) \\cup (12,102)", "math500", True),
    ("\\boxed{(2,102)}", "(2,12) \\cup (12,102)", "math500", False),
    ("\\boxed{(6,31,-1)}", "(6,31,-1)", "math500", True),
    ("\\boxed{(6, 31, 1)}", "(6,31,-1)", "math500", False),
    ("\\boxed{(31, 6, -1)}", "(6,31,-1)", "math500", False),
    ("\\boxed{1, -2}", "1,-2", "math500", True),
    ("\\boxed{-2, 1}", "1,-2", "math500", True),
    ("\\boxed{-2 \\text{ and } 1}", "1,-2", "math500", True),
    ("\\boxed{x = 1 \\text{ or } x = -2}", "1,-2", "math500", True),
    ("\\boxed{1}", "1,-2", "math500", False),
    ("\\boxed{1, 2}", "1,-2", "math500", False),
    ("\\boxed{\\{1, -2\\}}", "1,-2", "math500", True),
    ("\\boxed{1\\pm\\sqrt{5}, -2}", "\\{1\\pm\\sqrt{5},-2\\}", "math500", True),
    ("\\boxed{-2, 1+\\sqrt{5}, 1-\\sqrt{5}}", "\\{1\\pm\\sqrt{5},-2\\}", "math500", True),
    ("\\boxed{(1,1), (3,2)}", "(1,1), (3,2)", "olympiadbench", True),
    ("\\boxed{(3,2), (1,1)}", "(1,1), (3,2)", "olympiadbench", True),
    ("\\boxed{(1,1)}", "(1,1), (3,2)", "olympiadbench", False),
    ("\\boxed{(1,1), (2,3)}", "(1,1), (3,2)", "olympiadbench", False),
    ("\\boxed{5, 15}", "5,15", "olympiadbench", True),
    ("\\boxed{15, 5}", "5,15", "olympiadbench", True),
    ("\\boxed{5 \\text{ and } 15}", "5,15", "olympiadbench", True),
    ("\\boxed{5, 16}", "5,15", "olympiadbench", False),
    ("\\boxed{-1, 0, 1}", "-1,0,1", "olympiadbench", True),
    ("\\boxed{\\{-1, 0, 1\\}}", "-1,0,1", "olympiadbench", True),
    ("\\boxed{-1, 1}", "-1,0,1", "olympiadbench", False),
    # degrees, text answers, equations
    ("\\boxed{90}", "90^\\circ", "math500", True),
    ("\\boxed{90^{\\circ}}", "90^\\circ", "math500", True),
    ("\\boxed{90^\\circ}", "90", "math500", True),
    ("\\boxed{45^\\circ}", "90^\\circ", "math500", False),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}", "math500", True),
    ("\\boxed{\\text{Navin}}", "\\text{Evelyn}", "math500", False),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", "math500", True),
    ("\\boxed{\\text{(B)}}", "\\text{(C)}", "math500", False),
    ("\\boxed{y = 2x + 3}", "y=2x+3", "math500", True),
    ("\\boxed{y = 3 + 2x}", "y=2x+3", "math500", True),
    ("\\boxed{y = 2x - 3}", "y=2x+3", "math500", False),
    ("\\boxed{x = 5}", "5", "math500", True),
    ("\\boxed{x = 6}", "5", "math500", False),
    ("\\boxed{f(x) = x}", "f(x)=x", "olympiadbench", True),
    ("\\boxed{f(x) = -x}", "f(x)=x", "olympiadbench", False),
    # minerva: scientific notation, units, expressions
    ("\\boxed{4.5 \\times 10^{33}}", "4.5e33", "minerva", True),
    ("\\boxed{4.5 \\times 10^{33} \\mathrm{erg/s}}", "4.5e33", "minerva", True),
    ("\\boxed{4.5 \\times 10^{33}\\ \\text{erg}\\,\\text{s}^{-1}}", "4.5e33", "minerva", True),
    ("\\boxed{4.5e33}", "4.5e33", "minerva", True),
    ("\\boxed{4.6 \\times 10^{33}}", "4.5e33", "minerva", False),
    ("\\boxed{4.5 \\times 10^{32}}", "4.5e33", "minerva", False),
    ("\\boxed{5.3 \\times 10^{-9}}", "5.3e-9", "minerva", True),
    ("\\boxed{1 \\times 10^{11}}", "1e11", "minerva", True),
    ("\\boxed{10^{11}}", "1e11", "minerva", True),
    ("\\boxed{1.70 \\times 10^{4}}", "1.70e4", "minerva", True),
    ("\\boxed{17000}", "1.70e4", "minerva", True),
    ("\\boxed{17\\,000}", "1.70e4", "minerva", True),
    ("\\boxed{1.6 \\mathrm{~cm}}", "1.6", "minerva", True),
    ("\\boxed{1.6\\text{ cm}}", "1.6", "minerva", True),
    ("\\boxed{1.7\\text{ cm}}", "1.6", "minerva", False),
    ("\\boxed{27.39}", "27.39", "minerva", True),
    ("\\boxed{27.4}", "27.39", "minerva", False),
    ("\\boxed{0.003}", "0.003", "minerva", True),
    ("\\boxed{3 \\times 10^{-3}}", "0.003", "minerva", True),
    ("\\boxed{\\frac{K-1}{L}}", "\\frac{K-1}{L}", "minerva", True),
    ("\\boxed{(K-1)/L}", "\\frac{K-1}{L}", "minerva", True),
    ("\\boxed{\\frac{K+1}{L}}", "\\frac{K-1}{L}", "minerva", False),
    ("\\boxed{\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}}", "\\left(\\frac{t^{2}}{2}-t+C\\right) e^{-t}", "minerva", True),
    ("\\boxed{6630 \\mathrm{~K}}", "6630", "minerva", True),
    ("\\boxed{6,630 \\mathrm{~K}}", "6630", "minerva", True),
    ("\\boxed{6630 K}", "6630", "minerva", True),
    ("\\boxed{6631 K}", "6630", "minerva", False),
    # answers with reasoning before them and closing prose after them
    (LONG + "Thus the answer is $\\boxed{720}$. This completes the proof.", "720", "math500", True),
    (LONG + "Thus the answer is $\\boxed{721}$.", "720", "math500", False),
    (LONG + "Thus the total is $\\boxed{58,500}$ license plates.", "58,500", "math500", True),
    (LONG + "Thus the probability is $\\boxed{\\dfrac{8}{15}}$.", "\\frac{8}{15}", "math500", True),
]
# fmt: on

TABLE = MULTI_PART + HEDGING + NUMBER_FORMATS + GENERAL


def test_table_is_large_and_balanced():
    assert len(TABLE) >= 250
    assert 0.3 < sum(case[3] for case in TABLE) / len(TABLE) < 0.8


def test_equivalence_table():
    grades = grade_batch([case[:3] for case in TABLE], timeout=20.0, progress=False)
    wrong = [(case, g) for case, g in zip(TABLE, grades) if g.correct is not case[3]]
    assert not wrong, f"{len(wrong)} of {len(TABLE)} disagree:\n" + "\n".join(
        f"  expected {case[3]}: {case[0][-90:]!r} vs gold {case[1]!r} ({case[2]}) -> {g}" for case, g in wrong
    )
    assert all(g.error in (None, "multiple_answers") for g in grades)


@pytest.mark.parametrize("section", ["MULTI_PART", "HEDGING", "NUMBER_FORMATS", "GENERAL"])
def test_sections_have_both_directions(section):
    verdicts = {case[3] for case in globals()[section]}
    assert verdicts == {True, False}
