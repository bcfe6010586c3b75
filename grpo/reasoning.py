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

import torch

from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE


def tag_end(tokenizer, ids: Sequence[int], tag: str) -> int | None:
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


def think_end(tokenizer, ids: Sequence[int]) -> int | None:
    """t_end: index of the token that completes the first `</think>`, or None if there is none."""
    return tag_end(tokenizer, ids, THINK_CLOSE)


def ids_before(tokenizer, ids: Sequence[int], cut: int) -> list[int]:
    """Token ids whose text is decode(ids)[:cut]: the model's own tokens that end before character `cut`,
    then the text of the token that straddles it, re-encoded up to `cut`."""
    ids = list(ids)
    text = tokenizer.decode(ids, skip_special_tokens=False)

    def length(k: int) -> int:
        return len(tokenizer.decode(ids[:k], skip_special_tokens=False))

    lo, hi = 0, len(ids)  # largest k whose decoded prefix fits within `cut` lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(mid) <= cut:
            lo = mid
        else:
            hi = mid - 1
    rest = text[length(lo) : cut]
    return ids[:lo] + (tokenizer.encode(rest, add_special_tokens=False) if rest else [])


def reasoning_mask(
    tokenizer,
    completion_ids: torch.Tensor,  # (N, C)
    completion_mask: torch.Tensor,  # (N, C)
) -> tuple[torch.Tensor, list[int | None]]:
    """The loss mask of the reasoning span: tokens 0..t_end of each completion, and each row's t_end.

    A completion with no `</think>` (never closed, or cut by the length limit) keeps its whole
    completion as reasoning: it has no answer tokens to exclude, and masking it all would drop the only
    signal such a completion carries.
    """
    mask = completion_mask.clone()  # (N, C)
    ends: list[int | None] = []
    for row, (ids, keep) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist(), strict=True)):
        length = sum(keep)
        end = think_end(tokenizer, ids[:length])
        ends.append(end)
        if end is not None:
            mask[row, end + 1 :] = 0
    return mask, ends


def reasoning_ids(
    tokenizer, ids: Sequence[int], end: int | None, stop_token_ids: Sequence[int] = ()
) -> tuple[list[int], bool]:
    """Token ids of the reasoning cut right after its first `</think>`, and whether it was closed.

    When the last token also carries text after `</think>` (SmolLM2's `><`), only that token is
    re-encoded, up to the end of `</think>`, so the answer that follows starts on a clean boundary.
    When there is no `</think>`, the reasoning is the completion (end-of-turn tokens left out) up to its
    first `<answer>` or `</answer>`, and `</think>` is appended: the scored context is then what a model
    following the format would have written, and the completion's own answer never sits before the gold.
    """
    ids = list(ids)
    if end is None:
        body = [i for i in ids if i not in set(stop_token_ids)]
        text = tokenizer.decode(body, skip_special_tokens=False)
        cuts = [at for at in (text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)) if at >= 0]
        if cuts:
            body = ids_before(tokenizer, body, min(cuts))
        return body + tokenizer.encode(THINK_CLOSE, add_special_tokens=False), False
    before = tokenizer.decode(ids[:end], skip_special_tokens=False)
    through = tokenizer.decode(ids[: end + 1], skip_special_tokens=False)
    cut = through.find(THINK_CLOSE) + len(THINK_CLOSE)
    if cut == len(through):
        return ids[: end + 1], True
    return ids[:end] + tokenizer.encode(through[len(before) : cut], add_special_tokens=False), True
