"""The teacher-forced gold-answer log-prob: batched equals one-at-a-time, token boundaries, direction."""

from __future__ import annotations

import pytest
import torch
from conftest import make_float64_model, positions_run

import grpo.rewards as rewards_module
from grpo.rewards import gold_answer_logprobs, normalised_logprob


def enc(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def naive_gold_logprob(model, tokenizer, prompt, reasoning, gold):
    """One sequence, no padding, full-vocabulary log-softmax: the definition, written plainly.

    The scored context is prompt, reasoning, the line break a model following the format writes after
    `</think>`, then `<answer>` gold `</answer>`."""
    head = prompt + reasoning + enc(tokenizer, "\n") + enc(tokenizer, "<answer>")
    gold_ids = enc(tokenizer, gold)
    ids = torch.tensor([head + gold_ids + enc(tokenizer, "</answer>")])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits, dim=-1)[0]  # (L, V)
    # token at position t is predicted by the logits at t − 1
    return sum(float(logp[len(head) + k - 1, gold_ids[k]]) for k in range(len(gold_ids)))


def example_batch(tokenizer):
    prompts = [enc(tokenizer, "<|user|>make 10\n<|assistant|><think>")] * 2 + [
        enc(tokenizer, "<|user|>q2<|assistant|><think>")
    ] * 2
    reasonings = [
        enc(tokenizer, t) for t in ["5+5</think>", "a much longer reasoning</think>", "</think>", "x</think>"]
    ]
    golds = ["5+5", "5+5", "(1+2)*3", "(1+2)*3"]
    return prompts, reasonings, golds


@pytest.fixture
def model64(tokenizer):
    # float64 throughout (its RMS norm and rotary too, which `.double()` leaves in float32): batched and
    # one-at-a-time sums then agree to 1e-9 on any CPU, whatever its summation order
    return make_float64_model(tokenizer)


def test_batched_reward_equals_one_at_a_time(tokenizer, model64):
    tiny_model = model64
    prompts, reasonings, golds = example_batch(tokenizer)
    scores = gold_answer_logprobs(tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=3)
    naive = torch.tensor(
        [naive_gold_logprob(tiny_model, tokenizer, *args) for args in zip(prompts, reasonings, golds)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(scores.logp_sum, naive, atol=1e-9, rtol=0)
    assert scores.gold_tokens.tolist() == [3, 3, 7, 7]


def test_empty_reasoning_scores_come_from_the_same_pass(tokenizer, model64):
    tiny_model = model64
    prompts, reasonings, golds = example_batch(tokenizer)
    scores = gold_answer_logprobs(
        tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=4, with_empty_reasoning=True
    )
    empty = [
        naive_gold_logprob(tiny_model, tokenizer, p, enc(tokenizer, "</think>"), g)
        for p, g in zip(prompts, golds)
    ]
    torch.testing.assert_close(
        scores.empty_logp_sum, torch.tensor(empty, dtype=torch.float64), atol=1e-9, rtol=0
    )
    # rows 2 and 3 share prompt and gold, so they share the empty-reasoning score (computed once)
    assert scores.empty_logp_sum[2] == scores.empty_logp_sum[3]


def test_gold_ids_in_the_scored_sequence_are_exactly_the_gold_answers_ids(tokenizer, tiny_model, monkeypatch):
    # "<3" after "<answer>" would merge into "><" if the joined string were re-tokenised
    gold = "<3"
    joined = enc(tokenizer, "x</think><answer>" + gold)
    assert tokenizer.convert_ids_to_tokens(joined)[-2] == "><"  # the trap this construction avoids
    seen = []
    original = rewards_module.token_logprobs

    def spy(model, ids, mask, start, **kw):
        seen.append(ids.clone())
        return original(model, ids, mask, start, **kw)

    monkeypatch.setattr(rewards_module, "token_logprobs", spy)
    prompt, reasoning = enc(tokenizer, "p<think>"), enc(tokenizer, "x</think>")
    gold_answer_logprobs(tiny_model, tokenizer, [prompt], [reasoning], [gold], micro_batch_size=1)
    (ids,) = seen
    gold_ids, closer = enc(tokenizer, gold), enc(tokenizer, "</answer>")
    opener = enc(tokenizer, "\n") + enc(tokenizer, "<answer>")
    assert ids[0].tolist() == prompt + reasoning + opener + gold_ids + closer
    assert ids[0, -len(closer) - len(gold_ids) : -len(closer)].tolist() == gold_ids


def test_raising_the_gold_answers_probability_raises_the_reward(tokenizer, tiny_model):
    prompts, reasonings, golds = example_batch(tokenizer)
    before = gold_answer_logprobs(tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=4)
    # a few gradient steps that make the gold answer more likely after completion 0's reasoning only
    optimizer = torch.optim.SGD(tiny_model.parameters(), lr=0.05)
    head = prompts[0] + reasonings[0] + enc(tokenizer, "\n<answer>")
    gold_ids = enc(tokenizer, golds[0])
    ids = torch.tensor([head + gold_ids])
    for _ in range(5):
        logp = torch.log_softmax(tiny_model(input_ids=ids).logits, dim=-1)[0]
        loss = -sum(logp[len(head) + k - 1, gold_ids[k]] for k in range(len(gold_ids)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = gold_answer_logprobs(tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=4)
    assert after.logp_sum[0] > before.logp_sum[0] + 0.1
    # and the normalised reward follows: completion 0 now ranks above its group-mate, whichever way it ranked before
    closed = torch.ones(4, dtype=torch.bool)
    for batch_norm in ("none", "zscore", "minmax"):
        r = normalised_logprob(after, closed, batch_norm=batch_norm)
        assert r[0] > r[1]


def test_groups_sharing_a_prompt_score_it_once_with_the_same_result(tokenizer, model64):
    tiny_model = model64
    prompts, reasonings, golds = example_batch(tokenizer)  # two groups of two rows, one prompt each
    naive = torch.tensor(
        [naive_gold_logprob(tiny_model, tokenizer, *args) for args in zip(prompts, reasonings, golds)],
        dtype=torch.float64,
    )
    plain, plain_work = positions_run(
        tiny_model,
        lambda: gold_answer_logprobs(tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=4),
    )
    shared, shared_work = positions_run(
        tiny_model,
        lambda: gold_answer_logprobs(
            tiny_model, tokenizer, prompts, reasonings, golds, micro_batch_size=4, group_size=2
        ),
    )
    torch.testing.assert_close(shared.logp_sum, naive, atol=1e-9, rtol=0)
    torch.testing.assert_close(plain.logp_sum, naive, atol=1e-9, rtol=0)
    prompt_width = max(len(p) for p in prompts)
    # each of the two prompts ran once instead of twice, and no row fed its last token (it predicts nothing)
    assert plain_work - shared_work == 2 * prompt_width + 4


def test_the_reward_scores_the_completions_own_text_after_the_prefilled_think(tokenizer, model64):
    # The poster's code took the reasoning with the regex <think>(.*?)</think> over the completion; its
    # prompt prefills <think>, so the completion has none, the regex finds nothing, and every sample of a
    # group got the same reward. Here the reasoning is the completion's own tokens after the prefill.
    import re

    from grpo.rewards import gold_scores_of_completions
    from grpo.rollout import build_prompt

    prompt = build_prompt(tokenizer, [{"role": "user", "content": "make 10"}])
    assert tokenizer.decode(prompt).endswith("<think>")  # the prefill
    completions = ["5+5 makes 10</think>\n<answer>5+5</answer>", "7 then 3</think>\n<answer>5+5</answer>"]
    assert all(
        re.search(r"<think>(.*?)</think>", c, re.DOTALL) is None for c in completions
    )  # the poster's miss
    rows = [enc(tokenizer, c) for c in completions]
    width = max(map(len, rows))
    ids = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    gold = gold_scores_of_completions(
        model64, tokenizer, [prompt, prompt], ids, mask, ["5+5", "5+5"], stop_token_ids=[], micro_batch_size=2
    )
    # the scored reasoning is each completion's text through </think>: 12 and 8 characters, then the 7 tokens
    # of "</think>" ("</" is one)
    assert gold.reasoning_tokens.tolist() == [19.0, 15.0] and gold.closed.all()
    expected = [
        naive_gold_logprob(model64, tokenizer, prompt, enc(tokenizer, c.split("\n")[0]), "5+5")
        for c in completions
    ]
    torch.testing.assert_close(
        gold.scores.logp_sum, torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=0
    )
    assert abs(expected[0] - expected[1]) > 1e-3  # different reasonings, different rewards within the group
