"""Chunked teacher-forced log-probs equal the naive full-vocabulary log-softmax, with and without grad."""

from __future__ import annotations

import torch

from grpo.logprobs import batched_token_logprobs, token_logprobs
from grpo.rollout import left_pad


def naive_logprobs(model, ids, mask, start, temperature=1.0):
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits / temperature
    logp = torch.log_softmax(logits.float(), dim=-1)[:, :-1]  # (N, L−1, V): the memory this module avoids
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
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=0)
    micro = batched_token_logprobs(tiny_model, ids, mask, 5, micro_batch_size=2, temperature=0.7)
    torch.testing.assert_close(micro, expected, atol=1e-5, rtol=0)


def test_checkpointed_chunks_give_the_naive_gradient(tokenizer, tiny_model):
    ids, mask = batch(tokenizer)
    weights = torch.randn(ids.shape[0], ids.shape[1] - 4)
    (naive_logprobs(tiny_model, ids, mask, 4) * weights).sum().backward()
    expected = {n: p.grad.clone() for n, p in tiny_model.named_parameters()}
    tiny_model.zero_grad()
    (token_logprobs(tiny_model, ids, mask, 4, chunk_tokens=5) * weights).sum().backward()
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-5, rtol=1e-4, msg=name)


def test_padding_does_not_change_a_rows_logprobs(tokenizer, tiny_model):
    row = tokenizer.encode("ab", add_special_tokens=False)
    alone, alone_mask = left_pad([row], tokenizer.pad_token_id, "cpu")
    padded, padded_mask = batch(tokenizer)  # the same row, left-padded among longer ones
    with torch.no_grad():
        a = token_logprobs(tiny_model, alone, alone_mask, 1)
        b = token_logprobs(tiny_model, padded, padded_mask, padded.shape[1] - 1)
    torch.testing.assert_close(a[0], b[1], atol=1e-5, rtol=0)
