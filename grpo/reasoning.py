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

from grpo.tags import THINK_CLOSE


def think_end(tokenizer, ids: Sequence[int]) -> int | None:
    """Index of the token that completes the first `</think>` in decode(ids), or None if there is none."""
    ids = list(ids)

    def closed(k: int) -> bool:  # does the decoded prefix of k tokens contain </think>?
        return THINK_CLOSE in tokenizer.decode(ids[:k], skip_special_tokens=False)

    if not ids or not closed(len(ids)):
        return None
    lo, hi = 1, len(ids)  # smallest k with closed(k) lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if closed(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


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
    When there is no `</think>`, the whole completion (end-of-turn tokens left out) is the reasoning,
    and `</think>` is appended: the caller can then score an answer after any completion.
    """
    ids = list(ids)
    if end is None:
        body = [i for i in ids if i not in set(stop_token_ids)]
        return body + tokenizer.encode(THINK_CLOSE, add_special_tokens=False), False
    before = tokenizer.decode(ids[:end], skip_special_tokens=False)
    through = tokenizer.decode(ids[: end + 1], skip_special_tokens=False)
    cut = through.find(THINK_CLOSE) + len(THINK_CLOSE)
    if cut == len(through):
        return ids[: end + 1], True
    return ids[:end] + tokenizer.encode(through[len(before) : cut], add_special_tokens=False), True
