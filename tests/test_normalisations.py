"""The logprob reward's normalisations and their order, on hand-made GoldScores (no model)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from grpo.loss import group_advantages
from grpo.rewards import GoldScores, batch_normalise, normalised_logprob


def scores(logp_sum, gold_tokens, empty_logp_sum=None) -> GoldScores:
    as_tensor = lambda x: None if x is None else torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return GoldScores(as_tensor(logp_sum), as_tensor(gold_tokens), as_tensor(empty_logp_sum))


def all_closed(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


# --------------------------------------------------------------------------------------------------
# Each normalisation alone


def test_length_normalisation_divides_by_the_gold_length():
    # [−2/2, −6/3, −3/1]; a length of 0 counts as 1 rather than dividing by zero
    length = normalised_logprob(scores([-2.0, -6.0, -3.0], [2, 3, 1]), all_closed(3), batch_norm="none")
    assert length.tolist() == [-1.0, -2.0, -3.0]
    assert normalised_logprob(scores([-3.0], [0]), all_closed(1), batch_norm="none").tolist() == [-3.0]


def test_exp_normalisation():
    s = scores([0.0, -math.log(2), -math.log(4)], [1, 1, 1])
    rewards = normalised_logprob(s, all_closed(3), exp=True, batch_norm="none")
    torch.testing.assert_close(rewards, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))


def test_batch_normalise_zscore_hand_values():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    # mean 3, deviations [−2, −1, 0, 3], population var 14/4 = 3.5, std 1.870829
    s = math.sqrt(3.5)
    expected = torch.tensor([-2 / s, -1 / s, 0.0, 3 / s], dtype=torch.float64)
    torch.testing.assert_close(batch_normalise(rewards, "zscore"), expected)
    # ≈ [−1.069045, −0.534522, 0, 1.603567]
    assert batch_normalise(rewards, "zscore")[0].item() == pytest.approx(-1.069045, abs=1e-6)


def test_batch_normalise_minmax_hand_values():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    # (R − 1) / (6 − 1)
    torch.testing.assert_close(
        batch_normalise(rewards, "minmax"), torch.tensor([0.0, 0.2, 0.4, 1.0], dtype=torch.float64)
    )


def test_batch_normalise_none_is_the_identity():
    rewards = torch.tensor([-1.0, 4.0])
    assert batch_normalise(rewards, "none").tolist() == [-1.0, 4.0]


@pytest.mark.parametrize("method", ["zscore", "minmax"])
@pytest.mark.parametrize("values", [[0.5, 0.5, 0.5, 0.5], [-2.0], [3.0, 3.0]])
def test_all_equal_batch_maps_to_zeros(method, values):
    out = batch_normalise(torch.tensor(values, dtype=torch.float64), method)
    assert not torch.isnan(out).any()
    assert out.tolist() == [0.0] * len(values)


def test_all_equal_batch_with_a_rounding_residue_maps_to_zeros_under_zscore():
    rewards = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    # 0.1 + 0.1 + 0.1 = 0.30000000000000004: the mean is not 0.1, the deviations are ±1.4e-17
    assert batch_normalise(rewards, "zscore").tolist() == [0.0, 0.0, 0.0]


def test_all_equal_batch_with_a_rounding_residue_maps_to_zeros_under_minmax():
    rewards = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    assert batch_normalise(rewards, "minmax").tolist() == [0.0, 0.0, 0.0]


def test_unknown_batch_normalisation_raises():
    with pytest.raises(ValueError, match="unknown batch normalisation"):
        batch_normalise(torch.tensor([1.0, 2.0]), "rank")
    with pytest.raises(ValueError, match="unknown batch normalisation"):
        normalised_logprob(scores([-1.0, -2.0], [1, 1]), all_closed(2), batch_norm="max")


# --------------------------------------------------------------------------------------------------
# Direction: a more likely gold answer gets a higher reward


@pytest.mark.parametrize(
    "length_norm, exp, batch_norm",
    list(itertools.product([False, True], [False, True], ["none", "zscore", "minmax"])),
)
def test_a_more_likely_gold_answer_always_gets_a_higher_reward(length_norm, exp, batch_norm):
    # one gold answer of 3 tokens, scored after four reasonings; sorted from least to most likely
    logp_sum = [-9.0, -6.0, -2.5, -0.3]
    rewards = normalised_logprob(
        scores(logp_sum, [3, 3, 3, 3]), all_closed(4), length_norm=length_norm, exp=exp, batch_norm=batch_norm
    )
    # strictly increasing with logp_sum (the poster's abs() made it strictly decreasing)
    assert (rewards[1:] > rewards[:-1]).all(), rewards.tolist()
    if batch_norm == "minmax":
        assert rewards[0] == 0.0 and rewards[-1] == 1.0  # the least likely gets 0, the most likely 1


# --------------------------------------------------------------------------------------------------
# The order: length → exp → batch


def test_order_length_then_exp_then_batch_two_completions():
    s = scores([-2.0, -6.0], [2, 3])
    closed = all_closed(2)
    # length: [−2/2, −6/3] = [−1, −2]
    length = normalised_logprob(s, closed, length_norm=True, exp=False, batch_norm="none")
    assert length.tolist() == [-1.0, -2.0]
    # exp: [e^−1, e^−2]
    exp = normalised_logprob(s, closed, length_norm=True, exp=True, batch_norm="none")
    torch.testing.assert_close(exp, torch.tensor([math.exp(-1), math.exp(-2)], dtype=torch.float64))
    # minmax: [1, 0]
    assert normalised_logprob(s, closed, length_norm=True, exp=True, batch_norm="minmax").tolist() == [
        1.0,
        0.0,
    ]


def test_order_length_then_exp_then_batch_three_completions():
    # three values tell the orders apart where two cannot (any monotone map of two values minmaxes to [1, 0])
    s = scores([-2.0, -6.0, -3.0], [2, 3, 1])
    # length: [−1, −2, −3] → exp: [e^−1, e^−2, e^−3] → minmax: [1, (e^−2 − e^−3)/(e^−1 − e^−3), 0]
    # and (e^−2 − e^−3)/(e^−1 − e^−3) = e^−1 (1 − e^−1)/(1 − e^−2) = 1/(1 + e) = 0.268941
    rewards = normalised_logprob(s, all_closed(3), length_norm=True, exp=True, batch_norm="minmax")
    torch.testing.assert_close(rewards, torch.tensor([1.0, 1 / (1 + math.e), 0.0], dtype=torch.float64))
    # minmax then exp would give [e, e^0.5, 1]; no exp gives [1, 0.5, 0]
    no_exp = normalised_logprob(s, all_closed(3), length_norm=True, exp=False, batch_norm="minmax")
    assert no_exp.tolist() == [1.0, 0.5, 0.0]


def test_without_length_norm_the_sum_is_used():
    s = scores([-2.0, -6.0, -3.0], [2, 3, 1])
    # minmax of the sums: (R + 6) / 4 → [1, 0, 0.75]
    rewards = normalised_logprob(s, all_closed(3), length_norm=False, exp=False, batch_norm="minmax")
    assert rewards.tolist() == [1.0, 0.0, 0.75]


# --------------------------------------------------------------------------------------------------
# Completions that never closed </think>


def test_batch_min_gives_unclosed_the_lowest_closed_reward_before_batch_norm():
    s = scores([-2.0, -6.0, -4.0, -1.0], [2, 2, 2, 2])
    closed = torch.tensor([True, True, True, False])
    # length: [−1, −3, −2, −0.5]; the unclosed one (the most likely!) takes the closed minimum, −3
    before = normalised_logprob(s, closed, batch_norm="none", unclosed="batch_min")
    assert before.tolist() == [-1.0, -3.0, -2.0, -3.0]
    # minmax over [−1, −3, −2, −3]: (R + 3) / 2 → [1, 0, 0.5, 0]
    after = normalised_logprob(s, closed, batch_norm="minmax", unclosed="batch_min")
    assert after.tolist() == [1.0, 0.0, 0.5, 0.0]
    # "score" keeps its own value: minmax over [−1, −3, −2, −0.5] → [0.8, 0, 0.4, 1]
    scored = normalised_logprob(s, closed, batch_norm="minmax", unclosed="score")
    torch.testing.assert_close(scored, torch.tensor([0.8, 0.0, 0.4, 1.0], dtype=torch.float64))


def test_bar_early_answer_bars_only_the_unclosed_that_wrote_an_answer():
    s = scores([-2.0, -6.0, -4.0, -1.0], [2, 2, 2, 2])
    closed = torch.tensor([True, True, False, False])
    # row 3 wrote <answer> without closing </think>: its scored reasoning was cut before the answer, so an
    # answer written at once would score as no reasoning at all; it takes the lowest rated reward, −3.
    # Row 2, unclosed but with no answer (cut by the length limit), is rated on its own −2.
    answered = torch.tensor([False, False, False, True])
    rewards = normalised_logprob(s, closed, batch_norm="none", unclosed="bar_early_answer", answered=answered)
    assert rewards.tolist() == [-1.0, -3.0, -2.0, -3.0]
    # a closed row is never barred by it, whatever `answered` says
    rewards = normalised_logprob(
        s,
        all_closed(4),
        batch_norm="none",
        unclosed="bar_early_answer",
        answered=torch.ones(4, dtype=torch.bool),
    )
    assert rewards.tolist() == [-1.0, -3.0, -2.0, -0.5]
    with pytest.raises(ValueError, match="needs `answered`"):
        normalised_logprob(s, closed, unclosed="bar_early_answer")


def test_batch_min_leaves_values_when_none_is_closed():
    s = scores([-2.0, -6.0, -4.0, -1.0], [2, 2, 2, 2])
    closed = torch.zeros(4, dtype=torch.bool)
    rewards = normalised_logprob(s, closed, batch_norm="none", unclosed="batch_min")
    assert rewards.tolist() == [-1.0, -3.0, -2.0, -0.5]


# --------------------------------------------------------------------------------------------------
# Too short a reasoning: the guard against the collapse to an empty <think></think>


def test_too_short_reasoning_takes_the_lowest_reward_of_the_others():
    s = scores([-2.0, -6.0, -4.0, -1.0], [2, 2, 2, 2])
    too_short = torch.tensor([False, False, False, True])
    # length: [−1, −3, −2, −0.5]; the short one scored best (no reasoning to get wrong) but takes −3
    before = normalised_logprob(s, all_closed(4), batch_norm="none", too_short=too_short)
    assert before.tolist() == [-1.0, -3.0, -2.0, -3.0]
    # minmax over [−1, −3, −2, −3] → [1, 0, 0.5, 0]
    after = normalised_logprob(s, all_closed(4), batch_norm="minmax", too_short=too_short)
    assert after.tolist() == [1.0, 0.0, 0.5, 0.0]


def test_too_short_and_unclosed_are_both_barred_and_rated_against_the_rest():
    s = scores([-2.0, -6.0, -4.0, -1.0], [2, 2, 2, 2])
    closed = torch.tensor([True, True, False, True])
    too_short = torch.tensor([False, False, False, True])
    # rated: rows 0 and 1 (−1, −3); row 2 unclosed and row 3 too short both take −3
    rewards = normalised_logprob(s, closed, batch_norm="none", unclosed="batch_min", too_short=too_short)
    assert rewards.tolist() == [-1.0, -3.0, -3.0, -3.0]
    # with unclosed="score" the unclosed row keeps its −2
    rewards = normalised_logprob(s, closed, batch_norm="none", unclosed="score", too_short=too_short)
    assert rewards.tolist() == [-1.0, -3.0, -2.0, -3.0]


def test_a_nan_row_is_not_the_minimum_the_too_short_take():
    s = scores([-2.0, float("nan"), -4.0, -1.0], [2, 2, 2, 2])
    too_short = torch.tensor([False, False, False, True])
    rewards = normalised_logprob(s, all_closed(4), batch_norm="none", too_short=too_short)
    # finite rated rows: −1 and −2, so the short row takes −2; the NaN row stays NaN (advantages drop it)
    assert rewards[[0, 2, 3]].tolist() == [-1.0, -2.0, -2.0]
    assert math.isnan(rewards[1].item())


def test_unknown_unclosed_policy_raises():
    with pytest.raises(ValueError, match="unknown unclosed policy"):
        normalised_logprob(scores([-1.0, -2.0], [1, 1]), all_closed(2), unclosed="drop")


# --------------------------------------------------------------------------------------------------
# Debiasing


def test_debias_subtracts_the_empty_reasoning_score_before_length_norm():
    s = scores([-6.0, -6.0], [2, 2], empty_logp_sum=[-4.0, -8.0])
    # (−6 − (−4)) / 2 = −1 and (−6 − (−8)) / 2 = 1
    # (subtracting after length norm would give −3 + 4 = 1 and −3 + 8 = 5)
    rewards = normalised_logprob(s, all_closed(2), debias=True, batch_norm="none")
    assert rewards.tolist() == [-1.0, 1.0]
    # the same scores undebiased: [−3, −3]
    assert normalised_logprob(s, all_closed(2), debias=False, batch_norm="none").tolist() == [-3.0, -3.0]


def advantages_of(s: GoldScores, formats: list[float], *, debias: bool, scale: bool) -> torch.Tensor:
    """The trainer's A_i for groups of 3: R_i = 0.9 · norm(log P) + 0.1 · format_i, then group_advantages."""
    logprob = normalised_logprob(s, all_closed(len(formats)), debias=debias, batch_norm="minmax")
    rewards = 0.9 * logprob + 0.1 * torch.tensor(formats, dtype=torch.float64)
    return group_advantages(rewards, 3, scale=scale)[0]


def test_debias_is_one_number_per_group_so_the_scaled_advantages_do_not_see_it():
    # Two prompts × G 3, gold answers of 2 tokens. log P(a | p, ∅) is one number per prompt (−4, −12), so
    # debiasing shifts each group's length-normalised rewards by a constant (+2, +6) and changes only the batch's
    # min-max range: undebiased [−3, −2, −1 | −5, −4.5, −4], range 4; debiased [−1, 0, 1 | 1, 1.5, 2], range 3
    s = scores([-6.0, -4.0, -2.0, -10.0, -9.0, -8.0], [2] * 6, empty_logp_sum=[-4.0] * 3 + [-12.0] * 3)
    same_format = [0.0] * 6
    plain = advantages_of(s, same_format, debias=False, scale=False)
    # norm [0.5, 0.75, 1 | 0, 0.125, 0.25] × 0.9, centred per group
    assert torch.allclose(plain, 0.9 * torch.tensor([-0.25, 0, 0.25, -0.125, 0, 0.125], dtype=torch.float64))
    # centring removes the shift; what is left is the ranges' ratio, 4/3, the same for every row
    debiased = advantages_of(s, same_format, debias=True, scale=False)
    assert torch.allclose(debiased, plain * 4 / 3)
    # and dividing by each group's std removes that too (--scale-advantages, a CPU logprob run's default)
    assert torch.allclose(
        advantages_of(s, same_format, debias=True, scale=True),
        advantages_of(s, same_format, debias=False, scale=True),
    )
    # unless the format reward differs within a group: its weight against the rescaled logprob part changes
    one_formatted = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert not torch.allclose(
        advantages_of(s, one_formatted, debias=True, scale=True),
        advantages_of(s, one_formatted, debias=False, scale=True),
        atol=1e-3,
    )


def test_debias_without_empty_scores_raises():
    with pytest.raises(ValueError, match="empty-reasoning"):
        normalised_logprob(scores([-6.0, -6.0], [2, 2]), all_closed(2), debias=True)


@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_a_non_finite_reward_is_left_out_of_the_batch_statistics(method):
    rewards = torch.tensor([0.0, float("nan"), 1.0, 3.0, float("-inf")])
    normalised = batch_normalise(rewards, method)
    finite = batch_normalise(torch.tensor([0.0, 1.0, 3.0]), method)
    assert torch.equal(normalised[[0, 2, 3]], finite)  # as if the bad rows were not there
    assert normalised[1].isnan() and not torch.isfinite(normalised[4])  # and they stay flagged
