"""Chunked teacher-forced log-probs equal the naive full-vocabulary log-softmax, with and without grad.

The tiny model computes in float64 throughout (conftest's `make_float64_model`), so the different ways
of computing the same numbers agree to float64 rounding: measured ≤ 6e-16 of the norm, values and
gradients. REL = 1e-9 holds on any CPU, whatever its summation order, and is far below what a real bug
(a wrong position, token or temperature, a gradient path lost) produces. In float32 plain rounding
differed by up to 4e-7 of the norm, and elementwise tolerances failed on some CPUs.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close_relative, make_float64_model, positions_run

from grpo.logprobs import left_pad, token_logprobs

REL = 1e-9


@pytest.fixture
def tiny_model(tokenizer):
    return make_float64_model(tokenizer)


def naive_logprobs(model, ids, mask, start, temperature=1.0):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits / temperature
    logp = torch.log_softmax(logits.double(), dim=-1)[:, :-1]  # (N, L−1, V): the memory this module avoids
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)[:, start - 1 :]


def batch(tokenizer):
    rows = [
        tokenizer.encode(t, add_special_tokens=False)
        for t in ["hello there</think>", "ab", "a longer row of text"]
    ]
    return left_pad(rows, tokenizer.pad_token_id, "cpu")


def test_chunked_equals_naive_without_grad(tokenizer, tiny_model):
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        expected = naive_logprobs(tiny_model, ids, mask, 5, temperature=0.7)
        chunked = token_logprobs(tiny_model, ids, mask, 5, temperature=0.7, chunk_tokens=7)
        micro = token_logprobs(tiny_model, ids, mask, 5, micro_batch_size=2, temperature=0.7)
    assert_close_relative(chunked, expected, REL, "chunked")
    assert_close_relative(micro, expected, REL, "micro-batched")


def test_checkpointed_chunks_give_the_naive_gradient(tokenizer, tiny_model):
    ids, mask = batch(tokenizer)
    weights = torch.randn(ids.shape[0], ids.shape[1] - 4, dtype=torch.float64)
    (naive_logprobs(tiny_model, ids, mask, 4) * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    (token_logprobs(tiny_model, ids, mask, 4, chunk_tokens=5) * weights).sum().backward()
    for name, p in tiny_model.named_parameters():
        assert_close_relative(p.grad, expected[name], REL, name)


def test_padding_does_not_change_a_rows_logprobs(tokenizer, tiny_model):
    row = tokenizer.encode("ab", add_special_tokens=False)
    alone, alone_mask = left_pad([row], tokenizer.pad_token_id, "cpu")
    padded, padded_mask = batch(tokenizer)  # the same row, left-padded among longer ones
    with torch.no_grad():
        a = token_logprobs(tiny_model, alone, alone_mask, 1)
        b = token_logprobs(tiny_model, padded, padded_mask, padded.shape[1] - 1)
    assert_close_relative(a[0], b[1], REL, "padded")


def grouped_batch(tokenizer, G=3):
    """Two left-padded prompts, G right-padded completions each (a rollout's layout)."""
    prompts, prompt_mask = left_pad(
        [tokenizer.encode(t, add_special_tokens=False) for t in ["<|user|>add 3 and 4", "hi"]],
        tokenizer.pad_token_id,
        "cpu",
    )
    completions = ["7</think>", "3 + 4 = 7 so", "x", "no", "hello there", "<think>"]
    rows, row_mask = [], []
    for text in completions:
        ids = tokenizer.encode(text, add_special_tokens=False)
        rows.append(ids + [tokenizer.pad_token_id] * (12 - len(ids)))
        row_mask.append([1] * len(ids) + [0] * (12 - len(ids)))
    ids = torch.cat([prompts.repeat_interleave(G, 0), torch.tensor(rows)], dim=1)
    mask = torch.cat([prompt_mask.repeat_interleave(G, 0), torch.tensor(row_mask)], dim=1)
    return ids, mask, prompts.shape[1]


def test_shared_prompt_pass_gives_the_plain_values_and_gradient_with_less_work(tokenizer, tiny_model):
    ids, mask, start = grouped_batch(tokenizer)
    n_rows, length = ids.shape
    weights = torch.randn(n_rows, length - start, dtype=torch.float64)
    tiny_model.train()  # as in the update
    plain, plain_work = positions_run(tiny_model, lambda: token_logprobs(tiny_model, ids, mask, start))
    (plain * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    shared, shared_work = positions_run(
        tiny_model, lambda: token_logprobs(tiny_model, ids, mask, start, group_size=3)
    )
    (shared * weights).sum().backward()
    assert_close_relative(shared, plain, REL, "log-probs")
    for name, p in tiny_model.named_parameters():
        assert_close_relative(p.grad, expected[name], REL, name)
    assert plain_work == n_rows * length
    assert shared_work == 2 * start + n_rows * (length - start - 1)  # each prompt once, no last token


def test_rows_that_do_not_share_their_prompt_take_the_plain_pass(tokenizer, tiny_model):
    ids, mask, start = grouped_batch(tokenizer)
    with torch.no_grad():
        plain = token_logprobs(tiny_model, ids, mask, start)
        # groups of 2 cut across the two prompts (rows 2 and 3 differ): nothing may be shared
        out, work = positions_run(
            tiny_model, lambda: token_logprobs(tiny_model, ids, mask, start, group_size=2)
        )
        assert_close_relative(out, plain, REL, "groups of 2")
        assert work == ids.numel()
        # one completion token: only the prompts run
        one, work = positions_run(
            tiny_model,
            lambda: token_logprobs(
                tiny_model, ids[:, : start + 1], mask[:, : start + 1], start, group_size=3
            ),
        )
        assert_close_relative(one, plain[:, :1], REL, "one completion token")
        assert work == 2 * start
