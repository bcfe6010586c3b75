"""t_end, the reasoning-span mask and the reasoning's ids, for split and for single-token </think>."""

from __future__ import annotations

import pytest
import torch

from grpo.loss import grpo_loss
from grpo.reasoning import reasoning_ids, reasoning_mask, reasoning_span


def ids_of(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def scored_reasoning(tokenizer, ids, stop_token_ids=()):
    """(the scored reasoning's ids, whether it was closed), as the logprob reward finds them."""
    span = reasoning_span(tokenizer, ids, stop_token_ids)
    return reasoning_ids(tokenizer, ids, span), span.end is not None


def test_think_end_is_the_last_piece_of_a_split_close_tag(tokenizer):
    ids = ids_of(tokenizer, "ab</think>\n<answer>3</answer>")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[:9] == ["a", "b", "</", "t", "h", "i", "n", "k", ">"]
    assert reasoning_span(tokenizer, ids).end == 8  # the ">" that completes </think>


def test_think_end_when_the_close_tag_shares_its_last_token(tokenizer):
    ids = ids_of(tokenizer, "ab</think><answer>3</answer>")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[8] == "><"  # ">" of </think> and "<" of <answer> in one token
    assert reasoning_span(tokenizer, ids).end == 8


def test_think_end_for_a_single_special_token(qwen_like_tokenizer):
    ids = ids_of(qwen_like_tokenizer, "ab</think><answer>3</answer>")
    assert qwen_like_tokenizer.convert_ids_to_tokens(ids)[2] == "</think>"
    assert reasoning_span(qwen_like_tokenizer, ids).end == 2


def test_the_posters_backslash_t_string_is_not_a_close_tag(tokenizer):
    # the poster's code searched for "<\think>": "\t" is a tab, so the string is not </think> at all.
    # Here a response holding that string has no reasoning end; the real tag after it is the end.
    assert "<\think>" == "<" + chr(9) + "hink>"
    assert reasoning_span(tokenizer, ids_of(tokenizer, "ab<\think><answer>3</answer>")).end is None
    ids = ids_of(tokenizer, "ab<\think>c</think>")
    assert reasoning_span(tokenizer, ids).end == len(ids) - 1  # the token that closes </think>


@pytest.mark.parametrize("text", ["no close tag here", "", "<think> opened only", "</thin"])
def test_no_close_tag_gives_none(tokenizer, text):
    assert reasoning_span(tokenizer, ids_of(tokenizer, text)).end is None


def test_only_the_first_close_tag_counts(tokenizer):
    ids = ids_of(tokenizer, "a</think>b</think>")
    assert reasoning_span(tokenizer, ids).end == 7


def right_padded(tokenizer, rows):
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        completion_mask[i, : len(r)] = 1
    return ids, completion_mask


def test_reasoning_mask_ends_at_t_end_and_keeps_unclosed_rows_whole(tokenizer):
    texts = ["ab</think><answer>3</answer>", "never closed", "x</think>"]
    ids, completion_mask = right_padded(tokenizer, [ids_of(tokenizer, t) for t in texts])
    width = ids.shape[1]
    mask, spans = reasoning_mask(tokenizer, ids, completion_mask)
    assert [s.end for s in spans] == [8, None, 7]
    assert [s.end is not None for s in spans] == [True, False, True]
    assert mask[0].tolist() == [1] * 9 + [0] * (width - 9)
    assert torch.equal(mask[1], completion_mask[1])  # unclosed, no answer: the whole completion is reasoning
    assert mask[2].tolist() == [1] * 8 + [0] * (width - 8)


@pytest.mark.parametrize("special_think", [False, True])
def test_an_unclosed_completion_keeps_in_the_loss_only_what_the_reward_scored(special_think):
    # never closed, then its own answer and the end of the turn: the reward scores "5+5 is 10" as its
    # reasoning, so the loss keeps those 9 tokens and gives "<answer>10</answer>" and <eos> no gradient
    from tests.conftest import make_tokenizer

    tok = make_tokenizer(special_think=special_think)
    eos = tok.eos_token_id
    rows = [
        ids_of(tok, "5+5 is 10<answer>10</answer>") + [eos],
        ids_of(tok, "thinking on") + [eos],  # ended its turn without an answer: all but <eos>
        ids_of(tok, "cut by the length limit"),  # no end-of-turn token: every token
    ]
    ids, completion_mask = right_padded(tok, rows)
    mask, spans = reasoning_mask(tok, ids, completion_mask, stop_token_ids=[eos])
    assert [s.length for s in spans] == [9, 11, 23]
    assert [s.answer_at is not None for s in spans] == [True, False, False]
    assert mask.sum(1).tolist() == [9, 11, 23]
    for row, span in zip(rows, spans, strict=True):
        scored, closed = reasoning_ids(tok, row, span), span.end is not None
        assert not closed
        # the scored reasoning is the kept tokens, then the appended </think>
        assert scored[: span.length] == row[: span.length]
        assert tok.decode(scored[span.length :]) == "</think>"


def test_a_shared_token_at_the_early_answer_is_left_out_of_the_loss(tokenizer):
    # "x><answer>": ">" and the "<" of "<answer>" are one token; it straddles the cut, so the loss leaves
    # it out (the reward re-encodes its ">" part), and keeps "x" alone
    ids = ids_of(tokenizer, "x><answer>1</answer>")
    mask, spans = reasoning_mask(tokenizer, torch.tensor([ids]), torch.ones((1, len(ids)), dtype=torch.long))
    assert spans[0].length == 1 and spans[0].answer_at is not None
    assert mask[0].tolist() == [1] + [0] * (len(ids) - 1)


def test_tokens_after_t_end_get_zero_gradient(tokenizer):
    ids = torch.tensor([ids_of(tokenizer, "ab</think><answer>3</answer>")])
    mask, _ = reasoning_mask(tokenizer, ids, torch.ones_like(ids))
    logp = torch.randn(ids.shape, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), None, torch.tensor([1.0]), mask, clip_eps=0.2, beta=0.0)
    loss.backward()
    assert (logp.grad[0, 9:] == 0).all()
    # the kept tokens share −A/|o^{≤t_end}| = −1/9
    torch.testing.assert_close(logp.grad[0, :9], torch.full((9,), -1 / 9))


def test_reasoning_ids_cut_a_shared_token_at_the_end_of_the_tag(tokenizer):
    ids = ids_of(tokenizer, "ab</think><answer>3</answer>")
    cut, closed = scored_reasoning(tokenizer, ids)
    assert closed and tokenizer.decode(cut) == "ab</think>"
    assert cut[:8] == ids[:8]  # the model's own tokens up to the shared one are kept as they were


def test_reasoning_ids_of_a_clean_boundary_are_the_models_own(tokenizer, qwen_like_tokenizer):
    for tok in (tokenizer, qwen_like_tokenizer):
        ids = ids_of(tok, "ab</think>\n<answer>3</answer>")
        cut, closed = scored_reasoning(tok, ids)
        assert closed and cut == ids[: reasoning_span(tok, ids).end + 1]


def test_reasoning_ids_of_an_unclosed_completion_append_the_tag_and_drop_eos(tokenizer):
    ids = ids_of(tokenizer, "still thinking") + [tokenizer.eos_token_id]
    cut, closed = scored_reasoning(tokenizer, ids, stop_token_ids=[tokenizer.eos_token_id])
    assert not closed and tokenizer.decode(cut) == "still thinking</think>"


@pytest.mark.parametrize(
    "text, reasoning",
    [
        ("5+5 is 10<answer>5+5</answer>", "5+5 is 10</think>"),  # its own answer is not scored as reasoning
        ("try 3\n</answer> more", "try 3\n</think>"),  # a stray closer cuts too
        ("a</answer>b<answer>c", "a</think>"),  # whichever tag comes first
    ],
)
def test_an_unclosed_completion_is_cut_before_its_own_answer(tokenizer, qwen_like_tokenizer, text, reasoning):
    for tok in (tokenizer, qwen_like_tokenizer):
        ids = ids_of(tok, text) + [tok.eos_token_id]
        cut, closed = scored_reasoning(tok, ids, stop_token_ids=[tok.eos_token_id])
        assert not closed and tok.decode(cut) == reasoning


def test_the_cut_keeps_the_models_own_tokens_before_a_shared_one(tokenizer):
    # "x><answer>": the tokenizer writes ">" and "<" of "<answer>" as one token "><"
    ids = ids_of(tokenizer, "x><answer>1</answer>")
    assert tokenizer.convert_ids_to_tokens(ids)[1] == "><"
    cut, _ = scored_reasoning(tokenizer, ids)
    assert cut[:1] == ids[:1] and tokenizer.decode(cut) == "x></think>"
