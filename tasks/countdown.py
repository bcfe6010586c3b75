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

The numbers' arithmetic (exact values, the exhaustive solver, and the evaluator that scores an answer without
ever running model text as Python) is tasks/arithmetic.py's.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

from grpo.config import CPU_LOGPROB_DEFAULTS
from grpo.tags import format_reward, parse_response
from grpo.task import Example, Reward, Task
from tasks.arithmetic import (
    MAX_LITERAL_DIGITS,
    Node,
    approximate_value,
    equation_reward,
    numbers_used,
    solve,
    tree_to_expression,
    tree_value,
)
from tasks.base import FORMAT_INSTRUCTIONS

NUM_NUMBERS = 4
NUMBER_RANGE = (1, 99)
TARGET_RANGE = (1, 100)
_EXPRESSIONS_PER_DRAW = 64

# example_from_record solves records without a gold answer; beyond 5 numbers the exhaustive search is slow.
MAX_RECORD_NUMBERS = 5

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
            approx = approximate_value(tree)
            if approx is None or not TARGET_RANGE[0] - 0.5 < approx < TARGET_RANGE[1] + 0.5:
                continue
            if abs(approx - round(approx)) > 1e-6:
                continue
            value = tree_value(tree)
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
