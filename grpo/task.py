"""What the trainer and the evaluation need from a domain: examples with gold answers, chat messages, and a
scorer. The domains themselves live in `tasks/` (Countdown, poetry, your own JSONL); nothing under `grpo/`
imports them, so the algorithm reads without them and a new domain is one subclass of `Task`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


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


def text_key(text: str) -> str:
    """What the split-overlap check compares (grpo.evaluation.check_disjoint): case and whitespace folded."""
    return " ".join(text.lower().split())
