"""Exact arithmetic over a handful of integers, for Countdown (tasks/countdown.py): expression trees and
their values, the exhaustive solver, and the evaluator that scores a model's answer.

The exhaustive solver (`solve`) searches every split of the numbers into two groups, every operator and
both operand orders, memoised by the sorted sub-multiset of numbers; it fills in the gold answer of
records that come without one (`CountdownTask.example_from_record`).

Scoring never evaluates model text as Python: `evaluate_expression` is a hand-written tokenizer and
recursive-descent parser over digits, + - * /, parentheses and whitespace (× ÷ − are read as * / -),
bounded in length, literal size and nesting depth. Unary minus and plus are rejected: the numbers are
used as given. Integer literals with a leading zero ("07") are rejected. An answer may end in
"= <target>" (e.g. `6 / (1 - 3 / 4) = 24`); that suffix is checked and stripped, a leading "24 = ..."
is not accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import TypeVar

# Evaluator bounds: a 4-number answer needs ~25 characters, so these only stop abuse.
MAX_EXPRESSION_CHARS = 200
MAX_LITERAL_DIGITS = 6
MAX_NESTING_DEPTH = 32

_DIGITS = frozenset("0123456789")
_WHITESPACE = frozenset(" \t\r\n")
_OPERATORS = {"+": "+", "-": "-", "*": "*", "/": "/", "×": "*", "÷": "/", "−": "-"}

# An expression tree: an int leaf, or (operator, left, right).
Node = int | tuple[str, "Node", "Node"]
Number = TypeVar("Number", Fraction, float)  # exact values (Fraction) or the generator's fast floats


# ----------------------------------------------------------------------------------------------------
# Expression trees: exact value and minimal-parentheses text


def _apply(op: str, a: Number, b: Number) -> Number | None:
    """a op b: exact for Fractions, in floating point for floats and ints; None for division by zero."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


def tree_value(node: Node) -> Fraction | None:
    """The exact value of a tree; None if it divides by zero."""
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = tree_value(left), tree_value(right)
    return None if a is None or b is None else _apply(op, a, b)


def approximate_value(node: Node) -> float | None:
    """The value in floating point (int leaves, true division): a fast pre-check for the generator."""
    if node.__class__ is int:
        return node
    op, left, right = node
    a, b = approximate_value(left), approximate_value(right)
    return None if a is None or b is None else _apply(op, a, b)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _tree_text(node: Node) -> tuple[str, int]:
    """The expression with only the parentheses it needs, and its precedence (3 for a literal)."""
    if isinstance(node, int):
        return str(node), 3
    op, left, right = node
    prec = _PRECEDENCE[op]
    left_text, left_prec = _tree_text(left)
    right_text, right_prec = _tree_text(right)
    if left_prec < prec:
        left_text = f"({left_text})"
    # a - (b + c) and a / (b * c) keep their parentheses; a + (b - c) and a * (b / c) do not need them.
    if right_prec < prec or (right_prec == prec and op in "-/"):
        right_text = f"({right_text})"
    return f"{left_text} {op} {right_text}", prec


def tree_to_expression(node: Node) -> str:
    """Render an expression tree, e.g. ("-", ("*", ("+", 12, 7), 3), 5) -> "(12 + 7) * 3 - 5"."""
    return _tree_text(node)[0]


# ----------------------------------------------------------------------------------------------------
# Exhaustive solver


def _splits(values: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every ordered split of a multiset into two non-empty parts (as sorted tuples), each once."""
    n = len(values)
    seen = set()
    for mask in range(1, (1 << n) - 1):
        left = tuple(sorted(values[i] for i in range(n) if mask >> i & 1))
        right = tuple(sorted(values[i] for i in range(n) if not mask >> i & 1))
        if (left, right) not in seen:
            seen.add((left, right))
            yield left, right


def _combinations(values: tuple[int, ...]) -> Iterator[tuple[Fraction, Node]]:
    """(value, tree) for trees that use the whole multiset at the top level, via memoised subsets."""
    for left, right in _splits(values):
        left_reach, right_reach = _reachable(left), _reachable(right)
        for a, left_tree in left_reach.items():
            for b, right_tree in right_reach.items():
                for op in "+-*/":
                    # + and * are commutative: the other split order produces the same values.
                    if op in "+*" and left > right:
                        continue
                    value = _apply(op, a, b)
                    if value is not None:
                        yield value, (op, left_tree, right_tree)


@lru_cache(maxsize=2048)
def _reachable(values: tuple[int, ...]) -> dict[Fraction, Node]:
    """Every exact value reachable from the sorted multiset `values` (each used once), with one tree each."""
    if len(values) == 1:
        return {Fraction(values[0]): values[0]}
    reach: dict[Fraction, Node] = {}
    for value, tree in _combinations(values):
        if value not in reach:
            reach[value] = tree
    return reach


def solve(nums: Sequence[int], target: int) -> str | None:
    """An expression using every number of `nums` once that equals `target` exactly, or None if none exists.

    Exhaustive over + - * /, both operand orders and every parenthesisation; stops at the first solution.
    """
    values = tuple(sorted(nums))
    if not values:
        return None
    if len(values) == 1:
        return str(values[0]) if values[0] == target else None
    for value, tree in _combinations(values):
        if value == target:
            return tree_to_expression(tree)
    return None


# ----------------------------------------------------------------------------------------------------
# Safe evaluator: tokenizer + recursive descent, never eval


class _Reject(Exception):
    """Raised inside the parser for any input it does not accept; never escapes this module."""


def _tokenize(text: str) -> list[str | int]:
    """Integer literals as ints, operators and parentheses as one-character strings."""
    tokens: list[str | int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            literal = text[i:j]
            if len(literal) > MAX_LITERAL_DIGITS or (len(literal) > 1 and literal[0] == "0"):
                raise _Reject
            tokens.append(int(literal))
            i = j
        elif ch in _OPERATORS:
            tokens.append(_OPERATORS[ch])
            i += 1
        elif ch in "()":
            tokens.append(ch)
            i += 1
        else:
            raise _Reject  # letters, '.', '^', '=', quotes, control characters, ...
    return tokens


class _Parser:
    """expr := term (('+' | '-') term)* ; term := factor (('*' | '/') factor)* ; factor := INT | '(' expr ')'

    Values are exact Fractions; a division by zero makes the value None (the parse itself goes on, so that
    `numbers_used` can still report the literals of a well-formed expression).
    """

    def __init__(self, tokens: list[str | int]):
        self.tokens = tokens
        self.pos = 0
        self.literals: list[int] = []

    def peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> Fraction | None:
        if not self.tokens:
            raise _Reject
        value = self.expr(depth=0)
        if self.pos != len(self.tokens):
            raise _Reject  # trailing tokens, e.g. "1 2" or "(1))"
        return value

    def expr(self, depth: int) -> Fraction | None:  # expr := term (("+" | "-") term)*
        return self.left_to_right(("+", "-"), self.term, depth)

    def term(self, depth: int) -> Fraction | None:  # term := factor (("*" | "/") factor)*
        return self.left_to_right(("*", "/"), self.factor, depth)

    def left_to_right(self, ops: tuple[str, str], operand, depth: int) -> Fraction | None:
        """operand (op operand)*, applied left to right: 8 - 2 - 1 = (8 - 2) - 1."""
        value = operand(depth)
        while self.peek() in ops:
            op = self.tokens[self.pos]
            self.pos += 1
            right = operand(depth)
            value = None if value is None or right is None else _apply(op, value, right)
        return value

    def factor(self, depth: int) -> Fraction | None:
        token = self.peek()
        if isinstance(token, int):
            self.pos += 1
            self.literals.append(token)
            return Fraction(token)
        if token == "(":
            if depth >= MAX_NESTING_DEPTH:
                raise _Reject
            self.pos += 1
            value = self.expr(depth + 1)
            if self.peek() != ")":
                raise _Reject
            self.pos += 1
            return value
        raise _Reject  # unary minus/plus, "**", a missing operand, end of input


def _parse(text: str) -> tuple[Fraction | None, list[int]] | None:
    """(value or None on division by zero, integer literals in order), or None if not an expression."""
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        return None
    try:
        parser = _Parser(_tokenize(text))
        value = parser.parse()
    except _Reject:
        return None
    return value, parser.literals


def evaluate_expression(text: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None for anything invalid (never raises).

    Accepts non-negative integer literals (at most 6 digits, no leading zero), + - * / (and × ÷ −),
    parentheses (at most 32 deep) and whitespace, in at most 200 characters. Division by zero -> None.
    """
    parsed = _parse(text)
    return None if parsed is None else parsed[0]


def numbers_used(text: str) -> list[int] | None:
    """The integer literals of a well-formed expression, in order of appearance, or None if malformed.

    Only the form is checked: "1 / 0" gives [1, 0] although it has no value.
    """
    parsed = _parse(text)
    return None if parsed is None else parsed[1]


def equation_reward(answer: str | None, nums: Sequence[int], target: int) -> float:
    """1.0 when `answer` uses each of `nums` exactly once and equals `target` exactly, else 0.0.

    An optional trailing "= <target>" is accepted and stripped; any other "=" fails.
    """
    if not isinstance(answer, str):
        return 0.0
    expression, eq, claimed = answer.partition("=")
    if eq:
        claimed = claimed.strip()
        if not (0 < len(claimed) <= MAX_LITERAL_DIGITS and set(claimed) <= _DIGITS):
            return 0.0  # also rejects a second "="
        if int(claimed) != target:
            return 0.0
    parsed = _parse(expression.strip())
    if parsed is None:
        return 0.0
    value, literals = parsed
    if value is None or value != target:
        return 0.0
    # Multiset equality: reuse, omission, foreign numbers and concatenation ("12" from 1 and 2) all fail.
    return 1.0 if sorted(literals) == sorted(nums) else 0.0
