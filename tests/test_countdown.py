"""Countdown: the generator, the exhaustive solver, the safe evaluator and the scorer, checked by hand."""

from __future__ import annotations

import itertools
import re
import time
from fractions import Fraction

import pytest

from grpo.task import Example
from tasks.arithmetic import (
    equation_reward,
    evaluate_expression,
    numbers_used,
    solve,
    tree_to_expression,
    tree_value,
)
from tasks.countdown import CountdownTask, _random_tree


def respond(answer: str, reasoning: str = "some reasoning") -> str:
    """A well-formed response, as the trainer builds it (from the prefilled <think> on)."""
    return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


def problem(nums: list[int], target: int) -> Example:
    return Example(id="hand", gold="", data={"nums": nums, "target": target})


def key(example: Example) -> tuple[tuple[int, ...], int]:
    return tuple(sorted(example.data["nums"])), example.data["target"]


def assert_valid_problem(task: CountdownTask, example: Example) -> None:
    nums, target = example.data["nums"], example.data["target"]
    assert len(nums) == 4
    assert all(type(n) is int and 1 <= n <= 99 for n in nums), nums
    assert type(target) is int and 1 <= target <= 100 and target not in nums, target
    assert evaluate_expression(example.gold) == target, example
    assert sorted(numbers_used(example.gold)) == sorted(nums), example
    reward = task.score(example, respond(example.gold))
    assert reward.parts == {"format": 1.0, "equation": 1.0} and reward.total == 1.0, example


# --------------------------------------------------------------------------------------------------
# Generator and splits


@pytest.fixture(scope="module")
def small_task() -> CountdownTask:
    return CountdownTask(n_train=300, n_test=100, seed=0)


@pytest.fixture(scope="module")
def default_task() -> CountdownTask:
    return CountdownTask()


def test_every_problem_of_a_small_instance_is_solved_by_its_gold(small_task):
    train, test = small_task.examples("train"), small_task.examples("test")
    assert (len(train), len(test)) == (300, 100)
    for example in [*train, *test]:
        assert_valid_problem(small_task, example)


def test_ids_are_unique_and_numbered_per_split(small_task):
    train, test = small_task.examples("train"), small_task.examples("test")
    assert train[0].id == "countdown-train-000000" and train[123].id == "countdown-train-000123"
    assert test[99].id == "countdown-test-000099"
    assert len({ex.id for ex in [*train, *test]}) == 400


def test_splits_are_disjoint_and_without_duplicates(small_task):
    train_keys = [key(ex) for ex in small_task.examples("train")]
    test_keys = [key(ex) for ex in small_task.examples("test")]
    assert len(set(train_keys)) == 300 and len(set(test_keys)) == 100
    assert not set(train_keys) & set(test_keys)


def test_same_seed_same_problems_other_seed_other_problems(small_task):
    again = CountdownTask(n_train=300, n_test=100, seed=0)
    assert again.examples("train") == small_task.examples("train")
    assert again.examples("test") == small_task.examples("test")
    other = CountdownTask(n_train=300, n_test=100, seed=1)
    assert {key(ex) for ex in other.examples("train")} != {key(ex) for ex in small_task.examples("train")}
    assert [ex.data for ex in other.examples("test")] != [ex.data for ex in small_task.examples("test")]


def test_test_split_does_not_depend_on_n_train(small_task):
    assert CountdownTask(n_train=5, n_test=100, seed=0).examples("test") == small_task.examples("test")
    # A smaller train split is a prefix of a larger one.
    assert (
        CountdownTask(n_train=50, n_test=100, seed=0).examples("train") == small_task.examples("train")[:50]
    )


def test_default_sizes_and_a_sample_of_default_problems(default_task):
    start = time.perf_counter()
    train, test = default_task.examples("train"), default_task.examples("test")
    print(f"generated 11,000 problems in {time.perf_counter() - start:.2f} s")
    assert (len(train), len(test)) == (10_000, 1_000)
    assert not {key(ex) for ex in train} & {key(ex) for ex in test}
    assert len({key(ex) for ex in train}) == 10_000
    for example in [*train[::97], *test[::37]]:
        assert_valid_problem(default_task, example)
    # The splits are built once and cached.
    assert default_task.examples("train") is train


def test_exhaustive_solver_agrees_with_the_generator(default_task):
    for example in default_task.examples("test")[:25]:
        found = solve(example.data["nums"], example.data["target"])
        assert found is not None
        assert equation_reward(found, example.data["nums"], example.data["target"]) == 1.0


def test_unknown_split_and_bad_sizes_raise():
    task = CountdownTask(n_train=1, n_test=1)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        task.examples("validation")
    with pytest.raises(ValueError, match="n_train"):
        CountdownTask(n_train=-1)
    with pytest.raises(ValueError, match="seed"):
        CountdownTask(seed="0")
    assert CountdownTask.name == "math"


# --------------------------------------------------------------------------------------------------
# Solver and expression rendering


def test_solver_handles_fractional_intermediates_and_unsolvable_sets():
    found = solve([1, 3, 4, 6], 24)  # the only solution is 6 / (1 - 3 / 4)
    assert evaluate_expression(found) == 24 and sorted(numbers_used(found)) == [1, 3, 4, 6]
    assert solve([1, 1, 1, 1], 100) is None  # the largest value is (1 + 1) * (1 + 1) = 4
    assert solve([1, 1, 1, 1], 4) is not None
    assert solve([5], 5) == "5" and solve([5], 6) is None
    assert solve([], 0) is None


def test_rendering_keeps_only_needed_parentheses():
    assert tree_to_expression(("-", ("*", ("+", 12, 7), 3), 5)) == "(12 + 7) * 3 - 5"
    assert tree_to_expression(("-", 8, ("-", 4, 2))) == "8 - (4 - 2)"
    assert tree_to_expression(("/", 8, ("/", 4, 2))) == "8 / (4 / 2)"
    assert tree_to_expression(("+", 1, ("-", 2, 3))) == "1 + 2 - 3"
    assert tree_to_expression(("*", 2, ("/", 6, 3))) == "2 * 6 / 3"
    assert tree_to_expression(("-", ("-", 8, 4), 2)) == "8 - 4 - 2"


def test_every_rendered_expression_parses_back_to_its_value():
    # All 24 orders x 64 operator triples x 5 shapes over one multiset with a repeated number.
    nums = [2, 3, 3, 7]
    for order in itertools.permutations(nums):
        for ops in itertools.product("+-*/", repeat=3):
            for shape in range(5):
                tree = _random_tree(order, ops, shape)
                text = tree_to_expression(tree)
                assert evaluate_expression(text) == tree_value(tree), text
                assert sorted(numbers_used(text)) == sorted(nums)


# --------------------------------------------------------------------------------------------------
# Evaluator


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8-4-2", 2),  # left-associative
        ("8/4/2", 1),
        ("2+3*4", 14),  # * before +
        ("2*3-4/2", 4),
        ("(2+3)*4", 20),
        ("8-(4-2)", 6),
        ("8/(4/2)", 4),
        ("((7))", 7),
        (" 1 +\t2\n", 3),
        ("6/(1-3/4)", 24),
        ("1/3", Fraction(1, 3)),
        ("3 - 5", -2),
        ("0", 0),
        ("999999", 999_999),
        ("3 × 4 ÷ 2 − 1", 5),
        ("(" * 32 + "1" + ")" * 32, 1),
    ],
)
def test_evaluator_values(text, value):
    assert evaluate_expression(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1/0",
        "1/(2-2)",
        "2**3",
        "2^3",
        "-1+2",  # unary minus: the numbers are used as given
        "+1",
        "1+",
        "(1+2",
        "1+2)",
        "()",
        "1 2",
        "1.5",
        "1e3",
        "07",
        "1234567",  # more than 6 digits
        "1=1",
        "abc",
        "٣+1",  # a non-ASCII digit
        "1\x00+2",
        "__import__('os').system('ls')",
        "1+" * 100 + "1",  # over 200 characters
        "(" * 33 + "1" + ")" * 33,  # nested deeper than 32
    ],
)
def test_evaluator_rejects(text):
    assert evaluate_expression(text) is None


def test_numbers_used():
    assert numbers_used("(12 + 7) * 3 - 5") == [12, 7, 3, 5]
    assert numbers_used("12+3+4") == [12, 3, 4]
    assert numbers_used("1 / 0") == [1, 0]  # well-formed, though it has no value
    assert numbers_used("1 +") is None and numbers_used("2**3") is None


# --------------------------------------------------------------------------------------------------
# Scorer


@pytest.mark.parametrize("nums", [[1, 2, 3, 4], [4, 1, 3, 2]])
@pytest.mark.parametrize(
    "answer", ["1+2+3+4", "4 + 3 + 2 + 1", "1*2*3+4", "4*3-2*1", "4 × 3 − 2 × 1", "\n (1 + 2 + 3 + 4) \n"]
)
def test_correct_answers_in_any_order_score_one(nums, answer):
    reward = CountdownTask(n_train=0, n_test=0).score(problem(nums, 10), respond(answer))
    assert reward.parts == {"format": 1.0, "equation": 1.0} and reward.total == 1.0


@pytest.mark.parametrize(
    ("answer", "equation"),
    [
        ("6/(1-3/4)", 1.0),  # fractional intermediate, integral result
        ("6 / (1 - 3 / 4) = 24", 1.0),  # trailing "= target" accepted
        ("6/(1-3/4)=24", 1.0),
        ("6/(1-3/4) = 25", 0.0),  # a wrong claimed value
        ("6/(1-3/4) = 24 = 24", 0.0),
        ("24 = 6/(1-3/4)", 0.0),  # only the trailing form is accepted
        ("6/(1-3/4) =", 0.0),
        ("(6-3)*(4+1)", 0.0),  # right numbers, wrong value (15)
        ("6*4", 0.0),  # right value, missing numbers
        ("6*4*1*1", 0.0),  # a reused number, one missing
        ("6*4*1*3/3", 0.0),  # a reused number, all present
        ("(6+3-1)*3", 0.0),  # 3 reused, 4 missing
        ("6*4*(3-2)", 0.0),  # a foreign number
        ("6*4+1-1", 0.0),
        ("", 0.0),
    ],
)
def test_equation_part(answer, equation):
    reward = CountdownTask(n_train=0, n_test=0).score(problem([1, 3, 4, 6], 24), respond(answer))
    assert reward.parts == {"format": 1.0, "equation": equation}
    assert reward.total == (1.0 + equation) / 2


def test_concatenated_digits_fail():
    task = CountdownTask(n_train=0, n_test=0)
    example = problem([1, 2, 3, 4], 19)
    assert task.score(example, respond("4*(3+2)-1")).parts["equation"] == 1.0
    assert task.score(example, respond("12+3+4")).parts["equation"] == 0.0  # 1 and 2 glued into 12


@pytest.mark.parametrize(
    "answer",
    [
        "1/(4-3-1)*2",  # division by zero
        "2**3+1+4",
        "2^3+1+4",
        "__import__('os').system('ls')",
        "exec('import os')",
        "1+2+3+4; import os",
        "1+2+3+4\x00",
        "10",
    ],
)
def test_invalid_answers_score_equation_zero(answer):
    reward = CountdownTask(n_train=0, n_test=0).score(problem([1, 2, 3, 4], 10), respond(answer))
    assert reward.parts == {"format": 1.0, "equation": 0.0} and reward.total == 0.5


@pytest.mark.parametrize(
    ("response", "fmt", "equation"),
    [
        ("<think>a</think><answer>1+2+3+4", 0.0, 0.0),  # answer never closed
        ("<think>a<answer>1+2+3+4</answer>", 0.0, 1.0),  # think never closed: the answer still counts
        ("<think>a</think><answer>1+2+3+4</answer><answer>1+2+3+4</answer>", 0.0, 1.0),  # doubled answer
        ("<think>a</think><answer>10</answer><answer>1+2+3+4</answer>", 0.0, 0.0),  # the first one counts
        ("<think>a</think><think>b</think><answer>1+2+3+4</answer>", 0.0, 1.0),  # doubled think
        ("<think>a</think><answer>1+2+3+4</answer> and more", 0.0, 1.0),  # text after the answer
        ("<think>only thinking</think>", 0.0, 0.0),  # no answer
        ("", 0.0, 0.0),
        ("1+2+3+4", 0.0, 0.0),  # no tags at all
    ],
)
def test_format_and_equation_are_scored_separately(response, fmt, equation):
    reward = CountdownTask(n_train=0, n_test=0).score(problem([1, 2, 3, 4], 10), response)
    assert reward.parts == {"format": fmt, "equation": equation}
    assert reward.total == (fmt + equation) / 2


def test_hostile_responses_never_raise_and_return_quickly():
    task = CountdownTask(n_train=0, n_test=0)
    example = problem([1, 2, 3, 4], 10)
    hostile = {
        "long answer": respond("1+" * 50_000 + "1"),  # 100k characters
        "deep parentheses": respond("(" * 10_000 + "1+2+3+4" + ")" * 10_000),
        "deep, untagged": "(" * 10_000 + "1" + ")" * 10_000,
        "huge response": "<think>" + "x" * 1_000_000 + "</think><answer>1+2+3+4</answer>",
        "many tags": "<answer>" * 10_000 + "</answer>" * 10_000,
        "control characters": respond("\x00\x01\x7f\u202e1+2+3+4"),
        "huge literal": respond("9" * 10_000),
        "injection": "__import__('os').system('ls')",
    }
    start = time.perf_counter()
    rewards = {name: task.score(example, response) for name, response in hostile.items()}
    assert time.perf_counter() - start < 2.0
    for name, reward in rewards.items():
        assert reward.parts["equation"] == 0.0 or name == "huge response", name
    assert rewards["huge response"].parts == {"format": 1.0, "equation": 1.0}
    assert rewards["long answer"].parts == {"format": 1.0, "equation": 0.0}
    assert task.score(example, None).total == 0.0  # not even a string


def test_equation_reward_without_an_answer():
    assert equation_reward(None, [1, 2, 3, 4], 10) == 0.0
    assert equation_reward("1+2+3+4", [1, 2, 3, 4], 10) == 1.0


# --------------------------------------------------------------------------------------------------
# Records and messages


def test_example_from_record_solves_when_gold_is_absent():
    example = CountdownTask.example_from_record({"nums": [1, 3, 4, 6], "target": 24})
    assert example.data == {"nums": [1, 3, 4, 6], "target": 24}
    assert evaluate_expression(example.gold) == 24 and sorted(numbers_used(example.gold)) == [1, 3, 4, 6]
    assert example.id == "countdown-1-3-4-6-to-24"
    assert CountdownTask.example_from_record({"nums": [1, 1, 1, 1], "target": 100}).gold == ""
    three = CountdownTask.example_from_record({"nums": [3, 5, 7], "target": 26})  # 3 * 7 + 5
    assert evaluate_expression(three.gold) == 26


def test_example_from_record_keeps_given_gold_and_id():
    record = {"nums": [1, 3, 4, 6], "target": 24, "gold_answer": "6/(1-3/4)", "id": 7}
    example = CountdownTask.example_from_record(record)
    assert (example.gold, example.id) == ("6/(1-3/4)", "7")
    assert CountdownTask.example_from_record({"nums": [2, 2], "target": 4, "gold": "2+2"}).gold == "2+2"
    task = CountdownTask(n_train=0, n_test=0)
    assert task.score(example, respond(example.gold)).total == 1.0


@pytest.mark.parametrize(
    "record",
    [
        {"target": 24},
        {"nums": "1,3,4,6", "target": 24},
        {"nums": [], "target": 24},
        {"nums": [1, 2, 3, 4, 5, 6], "target": 24},
        {"nums": [1, "3", 4, 6], "target": 24},
        {"nums": [1.0, 3, 4, 6], "target": 24},
        {"nums": [True, 3, 4, 6], "target": 24},
        {"nums": [0, 3, 4, 6], "target": 24},
        {"nums": [1, 3, 4, 6]},
        {"nums": [1, 3, 4, 6], "target": "24"},
        {"nums": [1, 3, 4, 6], "target": 24.0},
        {"nums": [1, 3, 4, 6], "target": 24, "gold_answer": 24},
        [1, 3, 4, 6],
    ],
)
def test_example_from_record_rejects_bad_records(record):
    with pytest.raises(ValueError, match="record"):
        CountdownTask.example_from_record(record)


def test_messages_state_the_problem_and_the_format():
    task = CountdownTask(n_train=0, n_test=0)
    system, user = task.messages(problem([1, 4, 7, 12], 53))
    assert system["role"] == "system" and user["role"] == "user"
    assert "<think>" in system["content"] and "<answer>" in system["content"]
    assert "1, 4, 7, 12" in user["content"] and "53" in user["content"]
    assert "exactly once" in user["content"]
    # 1, 4, 7 and 12 rule out the first four format examples: the fifth shares no number with the problem.
    assert re.findall(r"<answer>(.*?)</answer>", user["content"])[-1] == "(15 - 13) * 14"
    _, user = task.messages(problem([20, 30, 40, 50], 90))
    assert re.findall(r"<answer>(.*?)</answer>", user["content"])[-1] == "(1 + 2) * 3"
