"""Where the reasoning ends, in tokens: t_end, the reasoning-span mask, and the reasoning's token ids.

t_end is the index of the completion token that completes the first `</think>` of the decoded text.
It is found from the decoded text itself, not by matching token ids, so it is right whether
`</think>` is one special token (Qwen3), several pieces (SmolLM2 writes `</` `think` `>`), or shares its
last token with the text that follows (`</` `think` `><` `answer` `>`). Decoding a longer prefix only
ever adds text, so "the prefix contains `</think>`" is monotone in the prefix length and a binary search
over prefixes finds t_end with O(log T) decodes.

(The poster's code searched for the string "<\\think>", in which "\\t" is a tab: it never matched, and
the mask silently covered the whole completion. tests/test_reasoning.py pins the fix.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch

from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def tag_end(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], tag: str) -> int | None:
    """Index of the token that completes the first `tag` in decode(ids), or None if there is none."""
    ids = list(ids)

    def contains(k: int) -> bool:  # does the decoded prefix of k tokens contain the tag?
        return tag in tokenizer.decode(ids[:k], skip_special_tokens=False)

    if not ids or not contains(len(ids)):
        return None
    lo, hi = 1, len(ids)  # smallest k with contains(k) lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if contains(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


def tokens_before(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], cut: int) -> int:
    """The largest k such that decode(ids[:k]) fits within the first `cut` characters of decode(ids)."""
    ids = list(ids)

    def length(k: int) -> int:
        return len(tokenizer.decode(ids[:k], skip_special_tokens=False))

    lo, hi = 0, len(ids)  # the largest k with length(k) ≤ cut lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(mid) <= cut:
            lo = mid
        else:
            hi = mid - 1
    return lo


def answer_start(text: str) -> int | None:
    """Offset of the first `<answer>` or `</answer>` in `text` (whichever comes first), or None."""
    found = [at for at in (text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)) if at >= 0]
    return min(found) if found else None


@dataclass(frozen=True)
class ReasoningSpan:
    """Which tokens of one completion are its reasoning: what the logprob reward scores and the loss keeps.

    Closed (a `</think>` was written): tokens 0..end, t_end included. Never closed: the tokens before its
    first `<answer>` or `</answer>` (a model that skips `</think>` and answers has its answer cut off, so
    the answer is never scored as reasoning nor trained as if it were), end-of-turn tokens left out.
    """

    end: int | None  # t_end: index of the token that completes the first </think>; None when never closed
    length: int  # the reasoning is completion tokens 0 .. length − 1: what the loss mask keeps
    # never closed, and yet it wrote an answer tag (the format broken, the reasoning cut short): the character
    # offset of that tag; None otherwise
    answer_at: int | None = None


def reasoning_span(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], stop_token_ids: Sequence[int] = ()
) -> ReasoningSpan:
    """The reasoning span of one completion's ids (no padding). Stop tokens end a row, so they come last."""
    ids = list(ids)
    end = tag_end(tokenizer, ids, THINK_CLOSE)  # t_end
    if end is not None:
        return ReasoningSpan(end, end + 1)
    stop = set(stop_token_ids)
    body = len(ids)
    while body and ids[body - 1] in stop:
        body -= 1
    # decode is typed str | list[str] (it decodes batches too); one row of ids decodes to one str
    cut = answer_start(cast(str, tokenizer.decode(ids[:body], skip_special_tokens=False)))
    if cut is None:
        return ReasoningSpan(None, body)
    return ReasoningSpan(None, tokens_before(tokenizer, ids[:body], cut), cut)


def reasoning_mask(
    tokenizer: PreTrainedTokenizerBase,
    completion_ids: torch.Tensor,  # (N, C)
    completion_mask: torch.Tensor,  # (N, C)
    stop_token_ids: Sequence[int] = (),
) -> tuple[torch.Tensor, list[ReasoningSpan]]:
    """The loss mask of the reasoning span (`ReasoningSpan.length` tokens of each row), and each row's span.

    A completion with no `</think>` keeps its reasoning, the text before its own answer if it wrote one:
    it has no closed think block, but its reasoning is what the logprob reward scored, and masking it all
    would drop the only signal such a completion carries. Its answer and its end-of-turn token get no
    gradient, as after a `</think>`: the loss keeps exactly what the reward credited.
    """
    mask = torch.zeros_like(completion_mask)  # (N, C)
    spans: list[ReasoningSpan] = []
    for row, (ids, keep) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)):
        span = reasoning_span(tokenizer, ids[: sum(keep)], stop_token_ids)
        spans.append(span)
        mask[row, : span.length] = 1
    return mask, spans


def reasoning_ids(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], span: ReasoningSpan) -> list[int]:
    """Token ids of the scored reasoning of a completion whose span is `span` (`reasoning_span`).

    Closed: the tokens through t_end; when the last one also carries text after `</think>` (SmolLM2's `><`),
    only that token is re-encoded, up to the end of `</think>`, so the answer that follows starts on a clean
    boundary. Never closed: the span's tokens (end-of-turn tokens left out, and the completion's own answer,
    the text of a token that straddles its tag re-encoded up to the tag), then `</think>`: the scored context
    is what a model following the format would have written, and its own answer never sits before the gold.
    """
    ids = list(ids)
    # decode is typed str | list[str] (it decodes batches too); one row of ids decodes to one str
    decode = lambda k: cast(str, tokenizer.decode(ids[:k], skip_special_tokens=False))  # noqa: E731
    end = span.end
    if end is None:  # never closed
        body = ids[: span.length]
        if span.answer_at is not None:  # it answered: the token straddling the tag, its text before the tag
            rest = decode(span.length + 1)[len(decode(span.length)) : span.answer_at]
            body += tokenizer.encode(rest, add_special_tokens=False) if rest else []
        return body + tokenizer.encode(THINK_CLOSE, add_special_tokens=False)
    before, through = decode(end), decode(end + 1)
    cut = through.find(THINK_CLOSE) + len(THINK_CLOSE)
    if cut == len(through):
        return ids[: end + 1]
    return ids[:end] + tokenizer.encode(through[len(before) : cut], add_special_tokens=False)
