"""What a domain must provide: examples with gold answers, chat messages, and a scorer.

To add a domain, subclass `Task` and implement three methods. The trainer knows nothing else about it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# What every task's system message asks for, so that the format reward and the logprob reward's
# `<answer>` context are what the model was told to write (a task may phrase its own, as poetry does).
FORMAT_INSTRUCTIONS = (
    f"Reason step by step inside {THINK_OPEN} {THINK_CLOSE} first, "
    f"then give your final answer inside {ANSWER_OPEN} {ANSWER_CLOSE}."
)


@dataclass(frozen=True)
class Example:
    id: str
    """Stable identifier, unique within the task (used in logs, reports and split checks)."""
    gold: str
    """The gold answer: the text that belongs between <answer> and </answer>."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The task's own fields (Countdown: nums, target; poetry: author, title, form, poem_start, poem_end)."""


@dataclass(frozen=True)
class Reward:
    total: float
    """The scalar the rule-based run trains on."""
    parts: dict[str, float]
    """Every component, each in [0, 1] (e.g. {"format": 1.0, "equation": 0.0}); metrics read these."""


class Task:
    """A domain. Subclasses set `name` and implement `examples`, `messages` and `score`."""

    name: str = "task"

    def examples(self, split: str) -> Sequence[Example]:
        """The examples of `split` ("train" or "test"); deterministic, and the two splits are disjoint."""
        raise NotImplementedError

    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages (system, user) before the chat template; the trainer adds the <think> prefill."""
        raise NotImplementedError

    def score(self, example: Example, response: str) -> Reward:
        """Rule-based reward of one response (the text from the prefilled <think> on). Never raises."""
        raise NotImplementedError

    def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[Reward]:
        """Score many responses at once; override when batching helps (e.g. sentence embeddings)."""
        return [self.score(ex, r) for ex, r in zip(examples, responses, strict=True)]

    overlap_field: str = "gold answer"
    """What `overlap_key` reads, as evaluation's refusal names it."""

    def overlap_key(self, example: Example) -> str:
        """The text that may not be in both splits (evaluation refuses to score a test split that shares it
        with the train split). The gold answer by default; a task whose answers repeat across examples
        (one-word answers, labels) keys on its prompts instead."""
        return example.gold


def json_object(line: str) -> dict[str, Any]:
    """One line of a JSONL file as a dict; ValueError with a one-line reason when it is not a JSON object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {json_type(record)}")
    return record


def json_type(value: Any) -> str:
    """How a JSON value's type reads in an error message: "a number", "a string", "null", ..."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")
