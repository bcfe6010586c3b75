"""Responses files: JSONL lines of an example's fields and `response`, what the model wrote from <think> on,
scored by the task's own rules with no policy model loaded (`evaluate.py --responses`). A line written before
the key's rename, with `completion` in its place, is read the same. Which domain a line
belongs to is read from its fields (`Task.record_fields`), so that a file of another task's examples is named
as such rather than scored as errors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from grpo.evaluation import build_report, score_records
from grpo.task import Example, Task
from tasks import TASKS
from tasks.base import json_object, json_type

# the key of a line's response: `response`, or `completion` as files and reports wrote it before the rename
RESPONSE_KEYS = ("response", "completion")


class ResponsesFileError(ValueError):
    """A responses file that cannot be scored as a whole (e.g. it holds the other task's examples)."""


def _looks_like(record: Mapping[str, Any]) -> str | None:
    """The task whose fields (`Task.record_fields`) a record has, or None."""
    found = [name for name, task in TASKS.items() if any(key in record for key in task.record_fields)]
    return found[0] if len(found) == 1 else None


def example_from_record(task: Task, record: Mapping[str, Any]) -> Example:
    """Build an Example of `task` from a record's fields, with the task's own reader (which checks them).

    Raises ValueError, with a message meant for the user, for a missing field or a wrong type.
    """
    missing = [key for key in task.required_fields if key not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(map(repr, missing))}")
    try:
        return task.example_from_record(dict(record))
    except NotImplementedError as err:  # a domain that reads no records: the whole file cannot be scored
        raise ResponsesFileError(str(err)) from None


def parse_response_record(task: Task, record: Mapping[str, Any]) -> tuple[Example, str]:
    """(example, response) from one line's JSON object; ValueError with a one-line reason if it is not usable."""
    other = _looks_like(record)
    if other is not None and other != task.name:
        raise ValueError(
            f"a {other} record (it has {', '.join(k for k in TASKS[other].record_fields if k in record)})"
        )
    key = next((key for key in RESPONSE_KEYS if key in record), None)
    if key is None:
        raise ValueError("missing field 'response'")
    if not isinstance(record[key], str):
        raise ValueError(f"{key!r} must be a string, got {json_type(record[key])}")
    return example_from_record(task, record), record[key]


def score_responses_file(
    task: Task, path: str | Path, settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Score a JSONL file of responses, one object per line; no policy model is loaded.

    Each line holds an example's fields and `response`, the whole response from `<think>` on (scored as
    written: a response without the opening tag fails the format part; `completion`, the key's name before,
    is read too). A line that cannot be used (not JSON, a missing field, a wrong type) becomes an entry of
    the report's `errors`, with its line number, and the other lines are still scored. Blank lines are skipped. Raises FileNotFoundError for a
    missing file and ResponsesFileError when every line holds the other task's examples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"responses file {path} does not exist")
    examples: list[Example] = []
    responses: list[str] = []
    line_numbers: list[int] = []
    errors: list[dict[str, Any]] = []
    kinds: Counter = Counter()  # which task each JSON object looks like
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json_object(line)
            kinds[_looks_like(record)] += 1
            example, response = parse_response_record(task, record)
        except ValueError as err:
            errors.append({"line": number, "message": str(err)})
            continue
        examples.append(example)
        responses.append(response)
        line_numbers.append(number)
    objects = sum(kinds.values())
    for other, kind in TASKS.items():
        if other != task.name and objects and kinds[other] == objects:
            raise ResponsesFileError(
                f"{path} holds {other} examples (fields {', '.join(kind.record_fields)}), "
                f"not {task.name}: pass --task {other}"
            )
    records = score_records(task, examples, responses)
    for record, number in zip(records, line_numbers, strict=True):
        record["line"] = number
    recorded = {"task": task.name, "responses": str(path), "name": path.stem, **(settings or {})}
    return build_report(task, records, recorded, errors)
