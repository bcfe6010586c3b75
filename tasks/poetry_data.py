"""The poetry task's data: reading poems, splitting them into a prompt and a gold ending, the train/test split,
and preparing data/poetry.jsonl (`make data`). The task itself is tasks/poetry.py's.

Data. Poems come from a prepared JSONL file (`make data`, i.e. `python -m tasks.poetry --prepare`), or
straight from the public-domain CSV beside the checkout (`../shared/data/public-domain-poems.csv`), or
from any CSV/JSONL given with `--data PATH`. A poem keeps its non-empty lines; poems of 4–40 lines are
used; the first max(1, n // 3) lines are the prompt and the rest is the gold ending. Duplicate texts are
dropped, then a seeded shuffle (random.Random(42)) cuts 90% train / 10% test. An Example's data holds
author, title, form (the human label, shown in the prompt), form_class (that label in `classify_form`'s
vocabulary, "" when it names no shape), poem_start and poem_end (= the gold answer).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from grpo.task import Example
from tasks.base import json_type
from tasks.poetry_scoring import nonempty_lines

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = REPO_ROOT.parent / "shared" / "data" / "public-domain-poems.csv"
PREPARED_JSONL = Path("data") / "poetry.jsonl"
DATA_ENV = "LOGPROB_GRPO_DATA"
HUB_DATASET = "schifferlearning/Poetry-Categorized"

MIN_LINES, MAX_LINES = 4, 40
SPLIT_SEED = 42
TEST_FRACTION = 0.1
SPLITS = ("train", "test")

# Human form labels (Poetry Foundation / Academy of American Poets, and the hub set's heuristic labels)
# mapped to `classify_form`'s vocabulary where the label describes the poem's shape. Labels of subject
# or mode (elegy, ode, ballad, pastoral, …) map to "". The prompt always shows the human label.
FORM_CLASSES = {
    "sonnet": "sonnet",
    "limerick": "limerick",
    "haiku": "haiku",
    "quatrain": "quatrain",
    "couplet": "couplet",
    "tercet": "tercet",
    "sestet": "sestet",
    "octave": "octave",
    "blank verse": "blank verse",
    "free verse": "free verse",
    "free_verse": "free verse",
    "prose poem": "free verse",
}


# ---------------------------------------------------------------- reading and splitting


def split_poem(text: str) -> tuple[str, str] | None:
    """(start, ending) of a poem of 4–40 non-empty lines, else None.

    The start is the first max(1, n // 3) lines (7 lines → 2 + 5, 40 → 13 + 27); both are joined by "\\n".
    """
    lines = nonempty_lines(text)
    if not MIN_LINES <= len(lines) <= MAX_LINES:
        return None
    cut = max(1, len(lines) // 3)
    return "\n".join(lines[:cut]), "\n".join(lines[cut:])


def load_poems(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Poem records from a CSV or a JSON-lines file (by suffix: .jsonl or .json; a .json array also works).

    CSV columns: author, poem_title or title, poem_text or text (or poem_start + poem_end), optional form.
    JSONL fields: author, title, and text or poem_start + poem_end; optionally form, form_class, split, id.
    Each record has author, title, form, and text and/or poem_start + poem_end (which win when present).
    Raises ValueError naming the file (and line) and what is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poetry data file {path} does not exist")
    if path.suffix.lower() in (".jsonl", ".json"):
        return _load_jsonl(path)
    return _load_csv(path)


def _load_csv(path: Path) -> list[dict[str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # poems are single fields with many lines
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        title = next((name for name in ("poem_title", "title") if name in columns), None)
        text = next((name for name in ("poem_text", "text") if name in columns), None)
        presplit = "poem_start" in columns and "poem_end" in columns  # e.g. the hub set's CSV export
        missing = [name for name, found in (("author", "author" in columns), ("poem_title or title", title),
                                            ("poem_text or text", text or presplit)) if not found]  # fmt: skip
        if missing:
            raise ValueError(
                f"{path}: missing CSV column(s) {', '.join(missing)} (found: {', '.join(columns)})"
            )
        records = []
        for row in reader:
            record = {"author": row["author"] or "", "title": row[title] or "", "form": row.get("form") or ""}
            record["text"] = (row[text] or "") if text else ""
            if presplit:
                record.update(poem_start=row["poem_start"] or "", poem_end=row["poem_end"] or "")
            records.append(record)
        return records


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines; a file that holds one JSON array of objects is read too."""
    content = path.read_text(encoding="utf-8")
    if content.lstrip().startswith("["):
        try:
            numbered = list(enumerate(json.loads(content), start=1))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not JSON ({err})") from None
    else:
        numbered = []
        for number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object ({err})") from err
    records = []
    for number, row in numbered:
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        has_text = "text" in row or ("poem_start" in row and "poem_end" in row)
        missing = [name for name in ("author", "title") if name not in row]
        missing += [] if has_text else ["text (or poem_start and poem_end)"]
        if missing:
            raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        records.append({"form": "", **row})
    return records


def poem_id(author: str, title: str, poem_start: str, poem_end: str) -> str:
    """A short stable id: 12 hex digits of sha1(author, title, text)."""
    key = "\x1f".join((author, title, poem_start, poem_end))
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]


def example_from_record(record: Mapping[str, Any]) -> Example:
    """An Example from a dict with author, title, form and either poem_start + poem_end or text.

    Raises ValueError for a missing text, a field that is not a string, or a text that is not a poem of
    4–40 non-empty lines.
    """
    if "text" not in record and not ("poem_start" in record and "poem_end" in record):
        raise ValueError("missing field(s): 'poem_start' and 'poem_end', or 'text'")
    for key in ("author", "title", "form", "form_class", "poem_start", "poem_end", "text"):
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key!r} must be a string, got {json_type(value)}")
    author, title = str(record.get("author") or ""), str(record.get("title") or "")
    form = str(record.get("form") or "")
    if "poem_start" in record and "poem_end" in record:
        poem_start, poem_end = str(record["poem_start"]).strip("\n"), str(record["poem_end"]).strip("\n")
        if not poem_start.strip() or not poem_end.strip():
            raise ValueError(f"{title!r} by {author!r}: poem_start and poem_end must both have text")
    else:
        split = split_poem(str(record.get("text") or ""))
        if split is None:
            raise ValueError(f"{title!r} by {author!r}: a poem needs {MIN_LINES}–{MAX_LINES} non-empty lines")
        poem_start, poem_end = split
    form_class = record.get("form_class")
    data = {
        "author": author,
        "title": title,
        "form": form,
        "form_class": FORM_CLASSES.get(form.strip().lower(), "") if form_class is None else str(form_class),
        "poem_start": poem_start,
        "poem_end": poem_end,
    }
    example_id = str(record.get("id") or poem_id(author, title, poem_start, poem_end))
    return Example(id=example_id, gold=poem_end, data=data)


def _dedupe_key(example: Example) -> str:
    # case and spacing differ between copies of the same poem in the sources
    return " ".join((example.data["poem_start"] + "\n" + example.data["poem_end"]).lower().split())


def build_splits(records: Iterable[Mapping[str, Any]], seed: int = SPLIT_SEED) -> dict[str, list[Example]]:
    """Train and test examples: unusable poems and repeated texts dropped, then a seeded 90/10 cut.

    When every record carries a "split" of train/test (a prepared file, the hub set), that split is kept;
    otherwise the usable poems, in file order, are shuffled with random.Random(seed) and the first 90%
    are train. Both splits keep the shuffled order, so the first k test examples are a random sample.
    A repeated text keeps only its first occurrence, so no text is in both splits.
    """
    examples: list[Example] = []
    given_splits: list[str | None] = []
    seen: set[str] = set()
    for record in records:
        try:
            example = example_from_record(record)
        except ValueError:
            continue  # too short or too long to split
        key = _dedupe_key(example)
        if key in seen:
            continue
        seen.add(key)
        examples.append(example)
        given_splits.append(record.get("split"))
    if examples and all(split in SPLITS for split in given_splits):
        return {
            name: [ex for ex, split in zip(examples, given_splits, strict=True) if split == name]
            for name in SPLITS
        }
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_train = int(len(examples) * (1 - TEST_FRACTION))
    return {"train": [examples[i] for i in order[:n_train]], "test": [examples[i] for i in order[n_train:]]}


def data_candidates(repo_root: Path = REPO_ROOT) -> list[Path]:
    """Where the task looks for data when none is given, in order."""
    candidates = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    candidates += [
        PREPARED_JSONL,
        repo_root / PREPARED_JSONL,
        repo_root.parent / "shared" / "data" / SHARED_CSV.name,
    ]
    return list(dict.fromkeys(path.resolve() for path in candidates))


def default_data_path(repo_root: Path = REPO_ROOT) -> Path:
    """$LOGPROB_GRPO_DATA, else ./data/poetry.jsonl, else <repo>/data/poetry.jsonl, else the shared CSV."""
    if os.environ.get(DATA_ENV) and not Path(os.environ[DATA_ENV]).is_file():
        raise FileNotFoundError(f"${DATA_ENV} is set to {os.environ[DATA_ENV]}, which is not a file")
    for candidate in data_candidates(repo_root):
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(path) for path in data_candidates(repo_root))
    raise FileNotFoundError(
        f"no poetry data found (looked at {looked}): run `make data` to prepare data/poetry.jsonl, "
        "or pass --data PATH (a CSV or JSONL of poems)"
    )


# ---------------------------------------------------------------- preparing data/poetry.jsonl


def _hub_records() -> list[dict[str, Any]]:
    """The poster's poetry set from the Hugging Face hub, with its own train/test split and poem starts.

    With `datasets` installed it reads any file format; without it, `huggingface_hub` fetches the
    repository's CSV/JSON files (a parquet-only repository then needs `pip install datasets`).
    """
    try:
        from datasets import load_dataset  # optional: not a project dependency
    except ImportError:
        return _hub_records_from_files()
    records = []
    for split, rows in load_dataset(HUB_DATASET).items():
        name = "test" if split.startswith("test") else "train"
        records += [{**row, "split": name} for row in rows]
    return [{**record, "form": str(record.get("form") or "").replace("_", " ")} for record in records]


def _hub_records_from_files() -> list[dict[str, Any]]:
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(HUB_DATASET, repo_type="dataset", allow_patterns=["*.csv", "*.json", "*.jsonl"])
    )
    files = sorted(folder.rglob("*.csv")) + sorted(folder.rglob("*.json")) + sorted(folder.rglob("*.jsonl"))
    if not files:
        raise RuntimeError(
            f"{HUB_DATASET} has no CSV or JSON files here; `pip install datasets` reads its parquet"
        )
    records = []
    for file in files:
        split = "test" if "test" in file.name.lower() else "train"
        records += [{**record, "split": split} for record in load_poems(file)]
    return [{**record, "form": str(record.get("form") or "").replace("_", " ")} for record in records]


def prepare_data(
    out_path: str | os.PathLike = PREPARED_JSONL, source: str | os.PathLike | None = None
) -> dict[str, int]:
    """Write the split poems as JSONL (id, split, author, title, form, form_class, poem_start, poem_end).

    The source is `source`, else the shared CSV if present, else the hub set (which needs the network,
    and `datasets` or `huggingface_hub`). Returns the number of examples per split.
    """
    if source is not None:
        records = load_poems(source)
    elif SHARED_CSV.is_file():
        records = load_poems(SHARED_CSV)
    else:
        try:
            records = _hub_records()
        except Exception as err:  # offline, no `datasets`, or the hub changed: say so, do not half-write
            raise RuntimeError(
                f"{SHARED_CSV} is absent and {HUB_DATASET} could not be read from the hub: {err}"
            ) from err
    splits = build_splits(records)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as file:
        for split in SPLITS:
            for example in splits[split]:
                file.write(
                    json.dumps({"id": example.id, "split": split, **example.data}, ensure_ascii=False) + "\n"
                )
    return {split: len(splits[split]) for split in SPLITS}
