"""Bring your own data, the file: prompts with reference answers, one per line of a JSONL or CSV file, read,
checked and split. The task over them is tasks/jsonl.py's.

`prompt` (a string) or `messages` (a chat that ends with the user's turn; a system message may come first);
`answer`, the gold text (surrounding whitespace dropped); optional `id` (default: a hash of the prompt and
answer; unique either way) and `split` (train or test). Other fields are kept for a scoring function. A CSV
has the columns prompt and answer, optionally id, split and others.

Split. A line without `split` is held out when a hash of its prompt falls below `test_fraction`: the same file
always splits the same way, editing or adding a line moves no other, one prompt with two answers stays on one
side, and a smaller fraction holds out a subset of what a larger one does. Evaluation's overlap check compares
prompts here, not answers: short answers ("yes", "shadow") repeat across different questions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grpo.task import Example, text_key
from tasks.base import json_object, json_type

SPLITS = ("train", "test")
TEST_FRACTION = 0.1
ROLES = ("system", "user", "assistant")
# a line's fields that are not kept as the example's data: its own, and those evaluation adds to a report's
# records (a report's records are valid lines of a responses file, and are read back here)
_NOT_DATA = frozenset({"prompt", "messages", "answer", "gold", "id", "split", "index", "response", "completion", "total",
                       "parts", "likelihood", "prompt_tokens", "completion_tokens", "finish_reason", "line"})  # fmt: skip

# ---------------------------------------------------------------- reading a file


def read_records(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """(line number, fields) of every example of a JSONL file, or of a CSV file (by its suffix).

    Raises FileNotFoundError for a missing file, ValueError naming the file and the line for one that
    cannot be read: empty, not UTF-8, a line that is not a JSON object, a CSV without its columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} {'is not a file' if path.exists() else 'does not exist'}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    return _csv_records(path, text) if path.suffix.lower() == ".csv" else _jsonl_records(path, text)


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    numbered = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            numbered.append((number, json_object(line)))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    return numbered


def _csv_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    # a field may be as long as the file (a long prompt); the csv module refuses fields over 128 kB by default
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""), restval="", strict=True)
    try:
        return _csv_rows(path, reader)
    except csv.Error as err:  # e.g. a quote never closed
        raise ValueError(f"{path}: not valid CSV after line {reader.line_num} ({err})") from None


def _csv_rows(path: Path, reader: csv.DictReader) -> list[tuple[int, dict[str, Any]]]:
    columns = reader.fieldnames or []
    missing = [name for name in ("prompt", "answer") if name not in columns]
    if missing:
        raise ValueError(f"{path}: missing CSV column(s) {', '.join(missing)} (found: {', '.join(columns)})")
    numbered, ended = [], reader.line_num
    for row in reader:
        # a quoted field may span lines: the row starts on the line after the previous one ended
        number, ended = ended + 1, reader.line_num
        if None in row:
            raise ValueError(f"{path}:{number}: more values than the {len(columns)} columns")
        # an empty id or split cell is an absent one
        numbered.append((number, {k: v for k, v in row.items() if not (k in ("id", "split") and v == "")}))
    return numbered


def _checked_prompt(record: Mapping[str, Any]) -> dict[str, Any]:
    """{"prompt": text} or {"messages": [...]} from a record's fields; ValueError unless exactly one is usable."""
    if "prompt" in record and "messages" in record:
        raise ValueError("has both 'prompt' and 'messages': give one of them")
    if "messages" in record:
        return {"messages": _checked_messages(record["messages"])}
    if "prompt" not in record:
        raise ValueError("needs 'prompt' (a string) or 'messages' (a list of chat messages)")
    if not isinstance(record["prompt"], str):
        raise ValueError(f"'prompt' must be a string, got {json_type(record['prompt'])}")
    if not record["prompt"].strip():
        raise ValueError("'prompt' is empty")
    return {"prompt": record["prompt"]}


def _checked_answer(record: Mapping[str, Any]) -> str:
    """The record's answer, stripped: its `answer`, or `gold` (what a report's records call it, for evaluate.py
    --responses reading them back); ValueError if missing, not a string or empty."""
    name = "answer" if "answer" in record or "gold" not in record else "gold"
    if name not in record:
        raise ValueError("missing field 'answer'")
    if not isinstance(record[name], str):
        raise ValueError(f"'{name}' must be a string, got {json_type(record[name])}")
    answer = record[name].strip()
    if not answer:
        raise ValueError(f"'{name}' is empty")
    return answer


def _checked_messages(messages: Any) -> list[dict[str, str]]:
    """role and content of each chat message; ValueError unless it is a chat the model can answer."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else json_type(messages)
        raise ValueError(f"'messages' must be a non-empty list of chat messages, got {got}")
    checked = []
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and message.get("role") in ROLES
            and isinstance(message.get("content"), str)
        ):
            shown = json.dumps(message, ensure_ascii=False)
            raise ValueError(
                f'messages[{i}] must be {{"role": "system", "user" or "assistant", "content": '
                f"a string}}, got {shown[:60]}{'…' if len(shown) > 60 else ''}"
            )
        if message["role"] == "system" and i > 0:
            raise ValueError(f"messages[{i}]: a system message may only come first")
        checked.append({"role": message["role"], "content": message["content"]})
    if checked[-1]["role"] != "user" or not checked[-1]["content"].strip():
        raise ValueError("the last message must be the user's, with text: it is the turn the model answers")
    return checked


def prompt_key(data: Mapping[str, Any]) -> str:
    """The text of an example's prompt: its `prompt`, or its `messages` as canonical JSON."""
    if "prompt" in data:
        return data["prompt"]
    return json.dumps(data["messages"], ensure_ascii=False, sort_keys=True)


def parse_record(record: Mapping[str, Any]) -> tuple[Example, str | None]:
    """(example, its `split` or None) from one line's fields; ValueError with a one-line reason."""
    data, answer = _checked_prompt(record), _checked_answer(record)
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"'split' must be 'train' or 'test', got {json.dumps(split)}")
    example_id = record.get("id")
    if example_id is None:
        digest = hashlib.sha1(f"{prompt_key(data)}\x1f{answer}".encode()).hexdigest()
        example_id = f"jsonl-{digest[:12]}"
    elif isinstance(example_id, bool) or not isinstance(example_id, (str, int)) or example_id == "":
        raise ValueError(f"'id' must be a non-empty string or a number, got {json.dumps(example_id)}")
    data.update((key, value) for key, value in record.items() if key not in _NOT_DATA)
    return Example(id=str(example_id), gold=answer, data=data), split


def read_examples(path: str | os.PathLike) -> list[tuple[Example, str | None]]:
    """Every example of a file with its given split (or None); ValueError naming the file and line."""
    examples: list[tuple[Example, str | None]] = []
    lines: dict[str, int] = {}  # id → the line it was first seen on
    for number, record in read_records(path):
        try:
            example, split = parse_record(record)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from None
        if example.id in lines:
            raise ValueError(
                f"{path}:{number}: id {example.id!r} is also on line {lines[example.id]}"
                if "id" in record
                else f"{path}:{number}: the same prompt and answer as line {lines[example.id]}; "
                "remove one, or give each an id"
            )
        lines[example.id] = number
        examples.append((example, split))
    return examples


def held_out(key: str, test_fraction: float) -> bool:
    """Whether a prompt goes to the test split: its SHA-256, as a number in [0, 1), is below test_fraction.

    Depends on the prompt alone, so no other line of the file moves it, and it is the same on every machine
    and Python version (unlike `hash`, which is salted per process). The prompt is hashed as the overlap
    check compares it (`grpo.task.text_key`: case and whitespace folded), so two prompts that differ
    only there land on the same side, and evaluation never finds them on both.
    """
    digest = hashlib.sha256(f"jsonl-split\x1f{text_key(key)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def build_splits(
    examples: Sequence[tuple[Example, str | None]], test_fraction: float = TEST_FRACTION
) -> dict[str, list[Example]]:
    """Train and test examples in file order: a given split is kept, the others go by `held_out`."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example, split in examples:
        if split is None:
            split = "test" if held_out(prompt_key(example.data), test_fraction) else "train"
        splits[split].append(example)
    # a `split` given on a line can still put the same prompt on both sides: refused here, not mid-run
    train_keys = {text_key(prompt_key(ex.data)) for ex in splits["train"]}
    both = [ex.id for ex in splits["test"] if text_key(prompt_key(ex.data)) in train_keys]
    if both:
        raise ValueError(
            f"{len(both)} test example(s) ({', '.join(map(repr, both[:3]))}) have the prompt of a training "
            "example (case and whitespace aside), given by their `split` fields: the test score would measure "
            "memory; drop one of each pair or give both the same split"
        )
    return splits
