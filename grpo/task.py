"""What the trainer, the evaluation and the command lines need from a domain: examples with gold answers, chat
messages, its rules' score, and the facts the options and reports read (which options it takes, its CPU defaults, its
score). The domains themselves live in `tasks/` (Countdown, poetry, your own JSONL), registered by name in
`tasks.TASKS`; nothing under `grpo/` imports or names them, so the algorithm reads without them and a new
domain is one subclass of `Task` and one line of that registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


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
    """A domain. Subclasses set `name` and `summary` and implement `examples`, `messages` and `score`; the rest
    has defaults that fit a domain which generates its examples and takes no options of its own."""

    name: str = "task"
    """What `--task` calls it; also the report's `task`."""
    summary: str = ""
    """What `--task NAME` trains on, in a few words of the option's help."""

    # ------------------------------------------------------------ what the command lines know of it
    options: ClassVar[tuple[str, ...]] = ()
    """The options of train.py and evaluate.py (their config fields) that this domain reads beyond every run's,
    e.g. ("data",). An option another domain reads, given to this one with another value than its default, is
    refused (`grpo.config.task_option_problem`)."""
    cpu_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Per `--reward`: the defaults of a run on a CPU that differ from Config's, e.g. {"rule": {"lr": 3e-5}}."""

    @classmethod
    def from_options(cls, options: Any, device: str = "cpu") -> Task:
        """The task a train.py or evaluate.py config names, built from the `options` it reads. `device`: where
        a model its rules need runs."""
        return cls()

    @classmethod
    def option_problem(cls, options: Any, reward: str | None, needs_examples: bool) -> str | None:
        """What is wrong with `options` for this domain, or None. `reward`: the run's `--reward` (None when
        evaluating); `needs_examples`: whether the run reads the task's own examples (evaluating a
        responses file does not)."""
        return None

    # ------------------------------------------------------------ facts about its data
    data_path: Path | None = None
    """The file the examples were read from (None: generated); error messages and reports name it."""
    skipped_long_answers: int = 0
    """Training examples dropped by `skip_long_answers` (metrics.jsonl's `skipped_long_answers`)."""

    def skip_long_answers(self, tokenizer: Any, max_tokens: int) -> int:
        """Drop the training examples whose gold answer is longer than `max_tokens` tokens; return how many. Only
        a domain with `max_answer_tokens` among its `options` is asked (its answers come from a user's file)."""
        return 0

    def examples(self, split: str) -> Sequence[Example]:
        """The examples of `split` ("train" or "test"); deterministic, and the two splits are disjoint."""
        raise NotImplementedError

    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages (system, user) before the chat template; the trainer adds the <think> prefill."""
        raise NotImplementedError

    def score(self, example: Example, response: str) -> Reward:
        """Rule-based reward of one response (the text from the prefilled <think> on). Never raises for a bad
        response (a broken set-up may: poetry's missing embedding model)."""
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

    # ------------------------------------------------------------ responses files and reports
    record_fields: ClassVar[tuple[str, ...]] = ()
    """The fields by which a line of a responses file is recognised as one of this domain's examples."""
    required_fields: ClassVar[tuple[str, ...]] = ()
    """The fields every such line must have (a domain whose fields are alternatives checks them itself)."""

    def example_from_record(self, record: dict[str, Any]) -> Example:
        """An Example from a responses file's line (its fields, as in the data); ValueError if unusable,
        NotImplementedError for a domain that cannot read records at all."""
        raise NotImplementedError(f"task {self.name!r} cannot build examples from records")

    def report_settings(self) -> dict[str, Any]:
        """What a report records of how this task read its examples (beside the run's settings), so that two
        reports can be told to hold the same examples: the data file, by default."""
        return {} if self.data_path is None else {"data": str(self.data_path)}

    def report_score(self, part_means: Mapping[str, float | None], total_mean: float | None) -> float | None:
        """The score a report shows for this domain, from the means of its reward's parts and of its total: the
        mean total by default (a domain whose published score is another mix of its parts says so here)."""
        return total_mean


def text_key(text: str) -> str:
    """What the split-overlap check compares (grpo.evaluation.check_disjoint): case and whitespace folded."""
    return " ".join(text.lower().split())
