"""What the domains share: the format instructions of their system messages and a JSONL line reader.

The protocol a domain implements (`Example`, `Reward`, `Task`) is `grpo.task`'s: to add a domain, subclass
`Task`, implement three methods, and add it to the registry `tasks.TASKS`. The trainer knows nothing else
about it.
"""

from __future__ import annotations

import json
from typing import Any

from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# What every task's system message asks for, so that the format reward and the logprob reward's
# `<answer>` context are what the model was told to write (a task may phrase its own, as poetry does).
FORMAT_INSTRUCTIONS = (
    f"Reason step by step inside {THINK_OPEN} {THINK_CLOSE} first, "
    f"then give your final answer inside {ANSWER_OPEN} {ANSWER_CLOSE}."
)


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
