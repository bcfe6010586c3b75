"""The output format `<think>reasoning</think><answer>final answer</answer>` and its binary reward.

Pure string functions: no torch, no tokenizer. Every task shares them, and so do the rollout's stop
rules and the logprob reward.

A *response* is what the model wrote in the assistant turn, starting at the `<think>` that the prompt
prefills (the poster prefilled it too: small models rarely open the tag unprompted). The trainer builds
it as `THINK_OPEN + completion_text`; `evaluate.py --responses` reads it from a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
# What a model following the format writes between `</think>` and `<answer>` when its chat template does not
# say (`grpo.rewards.answer_separator`: Qwen3's template writes "\n\n"): a line break. The logprob reward puts
# it there too, so the gold answer is scored in the context the model itself would write (scoring
# `</think><answer>` with nothing between moved SmolLM2's per-token gold log-prob by 0.04–0.07 nats).
ANSWER_SEPARATOR = "\n"

# The assistant turn is prefilled with a short lead-in that ends in <think> (the poster did the same).
ASSISTANT_PREFILL = "Let me think it through first.\n" + THINK_OPEN

# One think block, then one answer block, nothing but whitespace around or between them.
_WELL_FORMED = re.compile(
    r"\s*<think>(?P<reasoning>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*", re.DOTALL
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class ParsedResponse:
    reasoning: str | None  # text inside the first <think>…</think>, None when never closed
    answer: str | None  # text inside the first <answer>…</answer>, None when there is none
    well_formed: bool  # exactly one think block followed by exactly one answer block


def parse_response(response: str) -> ParsedResponse:
    """Split a response into reasoning and answer; never raises on any string."""
    match = _WELL_FORMED.fullmatch(response)
    tags_once = all(response.count(tag) == 1 for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
    if match and tags_once:
        return ParsedResponse(match["reasoning"], match["answer"], True)
    start = response.find(THINK_OPEN)
    end = response.find(THINK_CLOSE, max(start, 0))
    reasoning = response[start + len(THINK_OPEN) : end] if 0 <= start < end else None
    answer = _ANSWER.search(response)
    return ParsedResponse(reasoning, answer.group(1) if answer else None, False)


def format_reward(response: str) -> float:
    """1.0 for exactly one `<think>…</think>` followed by exactly one `<answer>…</answer>`, else 0.0."""
    return 1.0 if parse_response(response).well_formed else 0.0
