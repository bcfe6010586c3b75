"""A scoring function for examples/riddles.jsonl: `--reward-fn examples/riddle_reward.py:score`.

Exact match is too strict for riddles ("a candle" and "It is a candle." are both right), so this scores
whether the answer names the gold word, and whether it stays short. Returning a dict logs each part
(`named`, `short`) beside the format reward; the rule reward is (format + mean of the parts) / 2.
"""

import re

from grpo.tags import parse_response


def score(example: dict, response: str) -> dict[str, float]:
    """example: the line's fields (prompt, answer, id, ...); response: what the model wrote from <think> on."""
    answer = parse_response(response).answer or ""
    # the gold as a whole word: "ice" is named in "it is ice", not in "a nice one"
    named = re.search(rf"\b{re.escape(example['answer'].lower())}\b", answer.lower()) is not None
    return {"named": float(named), "short": float(0 < len(answer.split()) <= 4)}
