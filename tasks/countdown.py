"""Countdown: reach a target with four numbers, each used once, and + - * / with any parentheses.

The poster's math task. A problem is four integers in 1..99 and an integer target; a correct answer is an
expression such as `(12 + 7) * 3 - 5` that uses every given number exactly once and evaluates, in exact
rational arithmetic, to the target. Intermediate values may be fractions or negative: `6 / (1 - 3 / 4)`
is a valid way to make 24 from 1, 3, 4, 6.

Generator (seeded, in-process, no data download). Each problem is drawn as:
  1. four numbers, each uniform in 1..99;
  2. a random expression over them: a random order of the four numbers, one of the five binary-tree shapes
     with four leaves, and an operator uniform in + - * / at each of the three inner nodes;
  3. evaluated exactly with `fractions.Fraction`; kept when the value is an integer in 1..100 that is not
     itself one of the four numbers (no one-step problems), otherwise another expression is drawn
     (up to 64 per draw of numbers, then the numbers are redrawn).
The kept expression is the gold answer and is itself the proof that the problem is solvable (the tests
re-check every gold answer with this module's own evaluator). Sampling an expression, rather than
enumerating every reachable value with the exhaustive solver, is the one departure from "enumerate and
pick": full enumeration costs ~16 ms per problem in Python, sampling (with a float pre-check before the
exact value) ~0.1 ms, so the default 11,000 problems take about a second. The sampling prefers targets
that many expressions reach, i.e. easier problems; the gold answers lean on + and -, since products of
numbers up to 99 mostly leave the target range 1..100.

Splits. The test split is drawn from its own stream (`seed`, "test") and the train split from another
(`seed`, "train"), skipping any problem (sorted numbers, target) already taken, so the splits are
disjoint, have no duplicates inside, and the test split does not depend on `n_train`.

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

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar

from grpo.config import CPU_LOGPROB_DEFAULTS
from grpo.tags import format_reward, parse_response
from grpo.task import Example, Reward, Task
from tasks.base import FORMAT_INSTRUCTIONS

NUM_NUMBERS = 4
NUMBER_RANGE = (1, 99)
TARGET_RANGE = (1, 100)
_EXPRESSIONS_PER_DRAW = 64

# Evaluator bounds: a 4-number answer needs ~25 characters, so these only stop abuse.
MAX_EXPRESSION_CHARS = 200
MAX_LITERAL_DIGITS = 6
MAX_NESTING_DEPTH = 32
# example_from_record solves records without a gold answer; beyond 5 numbers the exhaustive search is slow.
MAX_RECORD_NUMBERS = 5

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


def _tree_value(node: Node) -> Fraction | None:
    """The exact value of a tree; None if it divides by zero."""
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a, b = _tree_value(left), _tree_value(right)
    return None if a is None or b is None else _apply(op, a, b)


def _approximate_value(node: Node) -> float | None:
    """The value in floating point (int leaves, true division): a fast pre-check for the generator."""
    if node.__class__ is int:
        return node
    op, left, right = node
    a, b = _approximate_value(left), _approximate_value(right)
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


# ----------------------------------------------------------------------------------------------------
# Generator


_PERMUTATIONS = tuple(itertools.permutations(range(NUM_NUMBERS)))
_OPERATOR_TRIPLES = tuple(itertools.product("+-*/", repeat=3))
_N_SHAPES = 5
_N_EXPRESSIONS = len(_PERMUTATIONS) * len(_OPERATOR_TRIPLES) * _N_SHAPES  # 24 * 64 * 5 = 7,680


def _random_tree(leaves: Sequence[int], ops: Sequence[str], shape: int) -> Node:
    """One of the five binary trees with four leaves a, b, c, d and inner operators x, y, z."""
    a, b, c, d = leaves
    x, y, z = ops
    if shape == 0:
        return (z, (y, (x, a, b), c), d)  # ((a x b) y c) z d
    if shape == 1:
        return (z, (x, a, (y, b, c)), d)  # (a x (b y c)) z d
    if shape == 2:
        return (y, (x, a, b), (z, c, d))  # (a x b) y (c z d)
    if shape == 3:
        return (x, a, (z, (y, b, c), d))  # a x ((b y c) z d)
    return (x, a, (y, b, (z, c, d)))  # a x (b y (c z d))


def _draw_problem(rng: random.Random) -> tuple[list[int], int, str]:
    """Four numbers, an integer target they reach, and the expression that reaches it (see module doc)."""
    while True:
        nums = [rng.randint(*NUMBER_RANGE) for _ in range(NUM_NUMBERS)]
        for _ in range(_EXPRESSIONS_PER_DRAW):
            # One draw picks the order of the numbers, the three operators and the tree shape.
            index = rng.randrange(_N_EXPRESSIONS)
            order, index = _PERMUTATIONS[index % len(_PERMUTATIONS)], index // len(_PERMUTATIONS)
            ops, shape = _OPERATOR_TRIPLES[index % len(_OPERATOR_TRIPLES)], index // len(_OPERATOR_TRIPLES)
            tree = _random_tree([nums[i] for i in order], ops, shape)
            # Floats reject most candidates cheaply; the exact Fraction value decides.
            approx = _approximate_value(tree)
            if approx is None or not TARGET_RANGE[0] - 0.5 < approx < TARGET_RANGE[1] + 0.5:
                continue
            if abs(approx - round(approx)) > 1e-6:
                continue
            value = _tree_value(tree)
            if value is not None and value.denominator == 1 and TARGET_RANGE[0] <= value <= TARGET_RANGE[1]:
                if int(value) not in nums:
                    return nums, int(value), tree_to_expression(tree)


def _problem_key(nums: Sequence[int], target: int) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(nums)), target


def _generate_split(
    split: str, n: int, seed: int, taken: set[tuple[tuple[int, ...], int]]
) -> tuple[Example, ...]:
    """`n` problems not in `taken` (which is updated), from the stream of (seed, split)."""
    rng = random.Random(f"countdown/{seed}/{split}")  # str seeds hash with SHA-512: stable across runs
    examples = []
    while len(examples) < n:
        nums, target, gold = _draw_problem(rng)
        key = _problem_key(nums, target)
        if key in taken:
            continue
        taken.add(key)
        examples.append(
            Example(
                id=f"countdown-{split}-{len(examples):06d}", gold=gold, data={"nums": nums, "target": target}
            )
        )
    return tuple(examples)


# ----------------------------------------------------------------------------------------------------
# The task

_SYSTEM_PROMPT = "You solve arithmetic puzzles. " + FORMAT_INSTRUCTIONS

# Format examples for the prompt, with pairwise disjoint numbers: one of them never shares a number
# with the problem, so the model is not shown a piece of the solution.
_PROMPT_EXAMPLES = ("(1 + 2) * 3", "(6 - 4) * 5", "7 * 9 - 8", "(12 - 10) * 11", "(15 - 13) * 14")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompt_example(nums: Sequence[int]) -> str:
    for expression in _PROMPT_EXAMPLES:
        if not set(numbers_used(expression) or []) & set(nums):
            return expression
    return _PROMPT_EXAMPLES[0]  # unreachable with at most 4 numbers


class CountdownTask(Task):
    """Countdown with 4 numbers in 1..99 and targets in 1..100, generated in-process from `seed`."""

    name = "math"
    summary = "Countdown: 4 numbers, reach the target"
    cpu_defaults = {"logprob": CPU_LOGPROB_DEFAULTS}
    record_fields = required_fields = ("nums", "target")

    def __init__(self, n_train: int = 10_000, n_test: int = 1_000, seed: int = 0):
        for arg, value in (("n_train", n_train), ("n_test", n_test)):
            if not _is_int(value) or value < 0:
                raise ValueError(f"{arg} must be a non-negative int, got {value!r}")
        if not _is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.n_train = n_train
        self.n_test = n_test
        self.seed = seed
        self._splits: dict[str, tuple[Example, ...]] | None = None

    def examples(self, split: str) -> Sequence[Example]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}: CountdownTask has 'train' and 'test'")
        if self._splits is None:
            taken: set[tuple[tuple[int, ...], int]] = set()
            test = _generate_split("test", self.n_test, self.seed, taken)  # first: independent of n_train
            train = _generate_split("train", self.n_train, self.seed, taken)
            self._splits = {"train": train, "test": test}
        return self._splits[split]

    def messages(self, example: Example) -> list[dict[str, str]]:
        nums, target = list(example.data["nums"]), example.data["target"]
        numbers = ", ".join(str(n) for n in nums)
        user = (
            f"Numbers: {numbers}\nTarget: {target}\n\n"
            f"Write an arithmetic expression that equals {target}. Use each of the numbers above exactly "
            "once (no other numbers, and no gluing digits together), combined with +, -, *, / and "
            "parentheses. Work it out inside <think> </think>, then put only the expression inside "
            f"<answer> </answer>, for example <answer>{_prompt_example(nums)}</answer>."
        )
        return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def score(self, example: Example, response: str) -> Reward:
        if not isinstance(response, str):
            return Reward(total=0.0, parts={"format": 0.0, "equation": 0.0})
        fmt = format_reward(response)
        equation = equation_reward(
            parse_response(response).answer, example.data["nums"], example.data["target"]
        )
        # The poster's math score is the mean of the two parts.
        return Reward(total=(fmt + equation) / 2, parts={"format": fmt, "equation": equation})

    def report_score(self, part_means: Mapping[str, float | None], total_mean: float | None) -> float | None:
        """The poster's math score: (mean format + mean equation) / 2."""
        fmt, equation = part_means.get("format"), part_means.get("equation")
        return None if fmt is None or equation is None else (fmt + equation) / 2

    @staticmethod
    def example_from_record(record: dict[str, Any]) -> Example:
        """An Example from {"nums": [...], "target": int, optional "gold_answer" or "gold", optional "id"}.

        Without a gold answer the exhaustive solver supplies one; an unsolvable record gets gold "".
        """
        if not isinstance(record, dict):
            raise ValueError(f"a Countdown record must be a dict, got {type(record).__name__}")
        nums, target = record.get("nums"), record.get("target")
        if (
            not isinstance(nums, (list, tuple))
            or not 1 <= len(nums) <= MAX_RECORD_NUMBERS
            or not all(_is_int(n) and 0 < n < 10**MAX_LITERAL_DIGITS for n in nums)
        ):
            raise ValueError(
                f"record 'nums' must be a list of 1 to {MAX_RECORD_NUMBERS} positive ints of at most "
                f"{MAX_LITERAL_DIGITS} digits, got {nums!r}"
            )
        if not _is_int(target):
            raise ValueError(f"record 'target' must be an int, got {target!r}")
        gold = record.get("gold_answer", record.get("gold"))
        if gold is None:
            gold = solve(nums, target) or ""
        elif not isinstance(gold, str):
            raise ValueError(f"record gold answer must be a str, got {gold!r}")
        record_id = record.get("id")
        if record_id is None:
            record_id = f"countdown-{'-'.join(str(n) for n in nums)}-to-{target}"
        return Example(id=str(record_id), gold=gold, data={"nums": list(nums), "target": target})
