"""Group-relative advantages, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from grpo.loss import group_advantages


def test_hand_example_subtracts_each_group_mean():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    advantages, zero_std = group_advantages(rewards, 4)
    # group 0: mean 0.5 → [0.5, −0.5, −0.5, 0.5]; group 1: all 0.5 → zeros
    assert advantages.tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert zero_std == 0.5  # one group of two


def test_advantages_of_each_group_sum_to_zero():
    rewards = torch.tensor([0.2, 0.9, 0.4, 3.0, -1.0, 0.5])
    advantages, zero_std = group_advantages(rewards, 3)
    # group 0: mean 0.5 → [−0.3, 0.4, −0.1]; group 1: mean 2.5/3 → [2.166667, −1.833333, −0.333333]
    torch.testing.assert_close(advantages, torch.tensor([-0.3, 0.4, -0.1, 13 / 6, -11 / 6, -1 / 3]))
    assert zero_std == 0.0


def test_all_equal_group_is_exactly_zero_not_a_rounding_residue():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 2.0], dtype=torch.float64)
    # the naive baseline leaves a residue: 0.1 + 0.1 + 0.1 = 0.30000000000000004, / 3 ≠ 0.1
    naive = rewards[:3] - rewards[:3].mean()
    assert (naive != 0).all()
    advantages, zero_std = group_advantages(rewards, 3)
    assert advantages[:3].tolist() == [0.0, 0.0, 0.0]
    assert advantages[3:].tolist() == [-1.0, 0.0, 1.0]
    assert zero_std == 0.5


@pytest.mark.parametrize("eps", [1e-6, 0.0])
def test_all_equal_group_with_scale_is_zero_not_nan(eps):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7], dtype=torch.float64)
    advantages, zero_std = group_advantages(rewards, 3, scale=True, eps=eps)
    # (R − mean)/std would be 0/0 with eps = 0 and ±(1e-17)/(1e-17) ≈ ±1 with the residue of 0.1
    assert not torch.isnan(advantages).any()
    assert advantages.tolist() == [0.0] * 6
    assert zero_std == 1.0


def test_scale_divides_by_the_population_std():
    rewards = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    advantages, _ = group_advantages(rewards, 4, scale=True, eps=0.0)
    # group 0: mean 0.5, population std 0.5 → [−1, −1, 1, 1] (the sample std 0.57735 would give ±0.866)
    # group 1: mean 2, deviations [−2, −1, 0, 3], population var 14/4 = 3.5, std 1.870829
    s = math.sqrt(3.5)
    expected = torch.tensor([-1, -1, 1, 1, -2 / s, -1 / s, 0, 3 / s], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=0)


def test_scale_adds_eps_to_the_std():
    rewards = torch.tensor([0.0, 1.0])
    advantages, _ = group_advantages(rewards, 2, scale=True, eps=0.5)
    # mean 0.5, std 0.5: ±0.5 / (0.5 + 0.5) = ±0.5
    assert advantages.tolist() == [-0.5, 0.5]


@pytest.mark.parametrize("scale", [False, True])
def test_group_of_one_has_zero_advantage(scale):
    rewards = torch.tensor([0.3, 0.7, 1.0])
    advantages, zero_std = group_advantages(rewards, 1, scale=scale)
    assert advantages.tolist() == [0.0, 0.0, 0.0]
    assert zero_std == 1.0  # every group of one is all-equal


def test_wrong_sizes_raise():
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.zeros(2, 4), 4)


def test_group_size_zero_raises_value_error():
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_is_preserved(dtype):
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=dtype)
    advantages, _ = group_advantages(rewards, 2)
    assert advantages.dtype == dtype
    assert advantages.tolist() == [0.5, -0.5, 0.0, 0.0]


def test_a_non_finite_reward_is_left_out_of_its_groups_baseline():
    rewards = torch.tensor([1.0, float("nan"), 3.0, 5.0, 2.0, 2.0, float("inf"), 4.0])
    advantages, zero_std = group_advantages(rewards, 4)
    # group 0: the baseline is the mean of 1, 3, 5 = 3; the NaN row gets no advantage
    assert advantages[:4].tolist() == [-2.0, 0.0, 0.0, 2.0]
    # group 1: mean of 2, 2, 4 = 8/3
    torch.testing.assert_close(advantages[4:], torch.tensor([-2 / 3, -2 / 3, 0.0, 4 / 3]))
    assert zero_std == 0.0


def test_a_group_with_fewer_than_two_finite_rewards_carries_no_signal():
    rewards = torch.tensor([float("nan"), 1.0, float("-inf"), float("nan"), 0.5, 0.7])
    advantages, zero_std = group_advantages(rewards, 2, scale=True)
    assert advantages[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    # group 2: 0.5, 0.7: deviations ∓0.1, population std 0.1, so ∓0.1 / (0.1 + eps)
    torch.testing.assert_close(advantages[4:], torch.tensor([-0.1, 0.1]) / (0.1 + 1e-6))
    assert zero_std == 2 / 3


def test_scaling_divides_by_the_std_of_the_finite_rewards_only():
    # 1, 3, 5 finite: mean 3, deviations −2, 0, +2, variance 8/3 over the 3 (not 4): A = ±2 / √(8/3) = ±√1.5
    rewards = torch.tensor([1.0, float("nan"), 3.0, 5.0])
    advantages, _ = group_advantages(rewards, 4, scale=True, eps=0.0)
    torch.testing.assert_close(advantages, torch.tensor([-(1.5**0.5), 0.0, 0.0, 1.5**0.5]))
