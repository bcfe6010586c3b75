"""Poetry completion: given the author, title, form and first third of a poem, write the rest.

Data. Poems are read, split and prepared (`make data`, i.e. `python -m tasks.poetry --prepare`) by
tasks/poetry_data.py; its docstring says how.

Departures from the poster. The poster used `schifferlearning/Poetry-Categorized` from the hub
(2,880 / 320 poems, forms assigned by a line-count heuristic); these machines cannot reach the hub, so
the default is the human-labelled public-domain CSV, and `--prepare` falls back to the hub set only when
the CSV is absent (keeping that set's own train/test split and poem starts, to reproduce the poster).
Its rules (`tasks/poetry_scoring.py`) say where their parts differ.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from grpo.config import CPU_LOGPROB_DEFAULTS
from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, format_reward, parse_response
from grpo.task import Example, Reward, Task
from tasks.poetry_data import (
    PREPARED_JSONL,
    SPLITS,
    build_splits,
    default_data_path,
    example_from_record,
    load_poems,
    prepare_data,
)
from tasks.poetry_scoring import (
    PARTS,
    MissingEmbeddingModel,
    answer_lines,
    embed,
    form_part,
    nonempty_lines,
    resolve_weights,
    rhyme_part,
    similarity_part,
    syllable_part,
    total_reward,
)

# ---------------------------------------------------------------- the task

SYSTEM_PROMPT = (
    "You are a poet who finishes other poets' poems. First think inside "
    f"{THINK_OPEN} {THINK_CLOSE}: work out the poem's form, metre, rhyme scheme, voice and where it is "
    f"going. Then give your final answer inside {ANSWER_OPEN} {ANSWER_CLOSE}: only the remaining lines "
    "of the poem, one verse line per line, with no title, comment or repetition of the given lines."
)


class PoetryTask(Task):
    """Complete a poem from its first third; scored on format, similarity, form, rhyme and syllables.

    data: a CSV or JSONL of poems; None looks in the default places (`default_data_path`).
    weights: reward weights laid over DEFAULT_WEIGHTS (keys: format, similarity, form, rhyme, syllables).
    device: where the sentence-embedding model runs.
    """

    name = "poetry"
    summary = "write the ending of a poem"
    options = ("data",)
    cpu_defaults = {"logprob": CPU_LOGPROB_DEFAULTS, "rule": {"lr": 3e-5}}  # the rule reward's lr as measured
    record_fields = (
        "poem_start",
        "poem_end",
        "text",
    )  # poem_start + poem_end, or text: example_from_record checks
    example_from_record = staticmethod(example_from_record)

    @classmethod
    def from_options(cls, options: Any, device: str = "cpu") -> PoetryTask:
        return cls(data=options.data, device=device)

    def __init__(
        self,
        data: str | os.PathLike | None = None,
        weights: Mapping[str, float] | None = None,
        device: str = "cpu",
    ):
        self.data_path = Path(data) if data is not None else default_data_path()
        self.weights = resolve_weights(weights)
        self.device = device
        self._splits = build_splits(load_poems(self.data_path))
        self._gold_vectors: dict[str, torch.Tensor] = {}  # gold ending → its embedding (384,)

    def examples(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose 'train' or 'test'")
        return self._splits[split]

    def messages(self, example: Example) -> list[dict[str, str]]:
        data = example.data
        header = [f"Author: {data['author'] or 'unknown'}", f"Title: {data['title'] or 'untitled'}"]
        if data.get("form"):
            header.append(f"Form: {data['form']}")
        user = (
            "\n".join(header)
            + "\n\nHere is how the poem begins:\n\n"
            + data["poem_start"]
            + "\n\nWrite the rest of the poem in the same form, metre, rhyme scheme and voice. Reason inside "
            f"{THINK_OPEN} {THINK_CLOSE}, then put only the remaining lines of the poem inside "
            f"{ANSWER_OPEN} {ANSWER_CLOSE}."
        )
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def score(self, example: Example, response: str) -> Reward:
        return self.score_batch([example], [response])[0]

    def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[Reward]:
        """Score many responses; each distinct answer is embedded once, each gold ending once per task."""
        responses = [response if isinstance(response, str) else "" for response in responses]
        answers = [_scored_answer(response) for response in responses]  # None: no (or an empty) answer
        golds = {ex.gold for ex, answer in zip(examples, answers, strict=True) if answer}
        new_golds = golds - self._gold_vectors.keys()
        vectors = self._embeddings(sorted({answer for answer in answers if answer} | new_golds))
        self._gold_vectors.update((gold, vectors[gold]) for gold in new_golds if gold in vectors)
        vectors = {
            **{gold: self._gold_vectors[gold] for gold in golds if gold in self._gold_vectors},
            **vectors,
        }
        return [
            self._reward(ex, response, answer, vectors)
            for ex, response, answer in zip(examples, responses, answers, strict=True)
        ]

    def _embeddings(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if not texts:
            return {}
        try:
            return dict(zip(texts, embed(texts, device=self.device), strict=True))
        except MissingEmbeddingModel:
            raise  # an install problem, not a bad response: stop rather than score similarity 0 all run
        except Exception as err:  # a response must never stop training; the warning names it
            warnings.warn(f"poetry similarity failed, scored 0: {err!r}", RuntimeWarning, stacklevel=3)
            return {}

    def _reward(
        self, example: Example, response: str, answer: str | None, vectors: Mapping[str, torch.Tensor]
    ) -> Reward:
        parts = dict.fromkeys(PARTS, 0.0)
        parts["format"] = format_reward(response)
        if answer:  # no answer: only the format part can score (and it is 0 without an answer block)
            try:
                ending, gold = answer.split("\n"), nonempty_lines(example.gold)
                if answer in vectors and example.gold in vectors:
                    parts["similarity"] = similarity_part(vectors[answer], vectors[example.gold])
                parts["form"] = form_part(example.data["poem_start"], answer, example.gold)
                parts["rhyme"] = rhyme_part(ending, gold)
                parts["syllables"] = syllable_part(ending, gold)
            except Exception as err:  # as above: warn and score 0 rather than crash a run
                warnings.warn(
                    f"poetry scoring of {example.id} failed, scored 0: {err!r}", RuntimeWarning, stacklevel=3
                )
        return Reward(total=total_reward(parts, self.weights), parts=parts)


def _scored_answer(response: str) -> str | None:
    """The answer as scored (capped, blank lines dropped, lines joined by "\\n"), or None if empty/absent."""
    answer = parse_response(response).answer
    if answer is None:
        return None
    return "\n".join(answer_lines(answer)) or None


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.poetry", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prepare", action="store_true", help="write the prepared JSONL (what `make data` runs)"
    )
    parser.add_argument(
        "--out", default=str(PREPARED_JSONL), help="where --prepare writes (default: %(default)s)"
    )
    parser.add_argument(
        "--source", default=None, help="CSV/JSONL to prepare from (default: the shared CSV, else the hub set)"
    )
    parser.add_argument("--data", default=None, help="without --prepare: the data file to summarise")
    args = parser.parse_args(argv)
    try:
        if args.prepare:
            counts = prepare_data(args.out, args.source)
            print(f"wrote {args.out}: {counts['train']} train, {counts['test']} test poems")
        else:
            task = PoetryTask(data=args.data)
            counts = {split: len(task.examples(split)) for split in SPLITS}
            print(f"{task.data_path}: {counts['train']} train, {counts['test']} test poems")
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
