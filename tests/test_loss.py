"""The GRPO loss, checked by hand: its gradient, its clipping, its KL term, its masks and denominators."""

from __future__ import annotations

import math

import pytest
import torch

from grpo.loss import AGGREGATIONS, grpo_loss, kl_k3, microbatch_weight

EPS = 0.2  # ε of every test below


def loss_and_grad(logp, old_logp, ref_logp, advantages, mask, **kwargs):
    """The loss and d loss / d logp, for a leaf copy of `logp`."""
    logp = logp.detach().clone().requires_grad_(True)
    kwargs = {"clip_eps": EPS, "beta": 0.0, **kwargs}
    loss, stats = grpo_loss(logp, old_logp, ref_logp, advantages, mask, **kwargs)
    loss.backward()
    return loss.detach(), logp.grad, stats


def single_token_grad(ratio: float, advantage: float) -> tuple[float, float]:
    """Loss and gradient of one kept token with π_θ/π_old = ratio."""
    logp = torch.tensor([[math.log(ratio)]], dtype=torch.float64)
    old_logp = torch.zeros(1, 1, dtype=torch.float64)
    loss, grad, _ = loss_and_grad(logp, old_logp, None, torch.tensor([advantage]), torch.ones(1, 1))
    return float(loss), float(grad[0, 0])


# --------------------------------------------------------------------------------------------------
# Ratio 1: the REINFORCE gradient


def test_ratio_one_gives_the_reinforce_gradient():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.5]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([1.0, -2.0])
    logp_leaf = logp.clone().requires_grad_(True)
    # old_logp = logp.detach(): r_t = 1 but carries the gradient of logp
    loss, stats = grpo_loss(logp_leaf, logp_leaf.detach(), None, advantages, mask, clip_eps=EPS, beta=0.0)
    loss.backward()
    loss = float(loss.detach())
    # d loss / d logp_t = −A_i / |kept_i| / N, N = 2:
    #   row 0: −1 / 2 / 2 = −0.25 on its 2 kept tokens, 0 on the masked one
    #   row 1: +2 / 3 / 2 = +1/3 on its 3 kept tokens
    expected = torch.tensor([[-0.25, -0.25, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    torch.testing.assert_close(logp_leaf.grad, expected, rtol=0, atol=1e-12)
    # loss = −(1/2)(mean_row0 A + mean_row1 A) = −(1 − 2)/2 = 0.5
    assert loss == pytest.approx(0.5)
    assert stats.ratio_mean == pytest.approx(1.0)
    assert stats.clip_fraction == 0.0
    assert stats.kl == 0.0


# --------------------------------------------------------------------------------------------------
# Clipping


def test_positive_advantage_above_the_clip_gets_no_gradient():
    # A = 1, r = 1.5 > 1.2: min(1.5, 1.2) = 1.2 is the clipped constant → loss −1.2, gradient 0
    loss, grad = single_token_grad(1.5, 1.0)
    assert loss == pytest.approx(-1.2)
    assert grad == 0.0


def test_positive_advantage_below_the_clip_keeps_its_gradient():
    # A = 1, r = 0.5 < 0.8: min(0.5, 0.8) = 0.5 is the unclipped r·A → loss −0.5, d(−r·A)/d logp = −r·A = −0.5
    loss, grad = single_token_grad(0.5, 1.0)
    assert loss == pytest.approx(-0.5)
    assert grad == pytest.approx(-0.5)


def test_negative_advantage_below_the_clip_gets_no_gradient():
    # A = −1, r = 0.5 < 0.8: min(−0.5, −0.8) = −0.8 is the clipped constant → loss 0.8, gradient 0
    loss, grad = single_token_grad(0.5, -1.0)
    assert loss == pytest.approx(0.8)
    assert grad == 0.0


def test_negative_advantage_above_the_clip_keeps_its_gradient():
    # A = −1, r = 1.5 > 1.2: min(−1.5, −1.2) = −1.5 is the unclipped r·A → loss 1.5, gradient −r·A = 1.5
    loss, grad = single_token_grad(1.5, -1.0)
    assert loss == pytest.approx(1.5)
    assert grad == pytest.approx(1.5)


def test_clip_fraction_counts_the_clipped_active_kept_tokens():
    ratios = torch.tensor([[1.5, 0.5, 1.1], [0.5, 1.5, 0.5]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages = torch.tensor([1.0, -1.0])
    _, _, stats = loss_and_grad(ratios.log(), torch.zeros(2, 3, dtype=torch.float64), None, advantages, mask)
    # clipped branch active: (0,0) A>0 r>1.2 and (1,0) A<0 r<0.8; (1,2) would be but is masked
    # 2 of 5 kept tokens
    assert stats.clip_fraction == pytest.approx(2 / 5)
    # mean ratio over kept tokens: (1.5 + 0.5 + 1.1 + 0.5 + 1.5) / 5 = 1.02
    assert stats.ratio_mean == pytest.approx(1.02)


# --------------------------------------------------------------------------------------------------
# The KL penalty


def test_k3_is_zero_with_zero_gradient_where_policy_and_reference_agree():
    logp = torch.tensor([-1.3, -0.2, -4.0], requires_grad=True)
    kl = kl_k3(logp, logp.detach().clone())
    assert torch.equal(kl, torch.zeros(3))
    kl.sum().backward()
    # d/d logp [exp(ref − logp) − (ref − logp) − 1] = −exp(ref − logp) + 1 = 0 at ref = logp
    assert torch.equal(logp.grad, torch.zeros(3))


def test_k3_hand_value():
    # ref − logp = ln 2: exp(ln 2) − ln 2 − 1 = 2 − 0.693147 − 1 = 0.306853
    kl = kl_k3(torch.tensor([0.0], dtype=torch.float64), torch.tensor([math.log(2)], dtype=torch.float64))
    assert float(kl) == pytest.approx(1 - math.log(2))
    assert float(kl) == pytest.approx(0.306853, abs=1e-6)
    # ref − logp = −1: e^−1 + 1 − 1 = 0.367879
    kl = kl_k3(torch.tensor([0.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64))
    assert float(kl) == pytest.approx(math.exp(-1))


def test_k3_is_non_negative_on_random_inputs():
    generator = torch.Generator().manual_seed(0)
    logp = -3 * torch.rand(10_000, generator=generator, dtype=torch.float64)
    ref_logp = -3 * torch.rand(10_000, generator=generator, dtype=torch.float64)
    kl = kl_k3(logp, ref_logp)
    assert kl.min() >= 0
    assert kl.max() > 0.5  # the draw does reach values that are far apart


def test_beta_scales_the_kl_contribution_exactly():
    logp = torch.zeros(1, 2, dtype=torch.float64)
    ref_logp = torch.tensor([[math.log(2), 0.0]], dtype=torch.float64)
    advantages = torch.zeros(1)  # surrogate term 0: the loss is the KL term alone
    mask = torch.ones(1, 2)
    loss_1, _, stats = loss_and_grad(logp, logp, ref_logp, advantages, mask, beta=0.1)
    loss_2, _, _ = loss_and_grad(logp, logp, ref_logp, advantages, mask, beta=0.2)
    loss_0, _, _ = loss_and_grad(logp, logp, ref_logp, advantages, mask, beta=0.0)
    # mean KL = (0.306853 + 0) / 2 = 0.153426; loss = −(0 − β·KL) = β·0.153426
    assert stats.kl == pytest.approx((1 - math.log(2)) / 2)
    assert float(loss_1) == pytest.approx(0.1 * (1 - math.log(2)) / 2)
    assert float(loss_2) == pytest.approx(2 * float(loss_1), rel=1e-12)
    assert float(loss_0) == 0.0


def test_beta_adds_exactly_beta_times_the_aggregated_kl_to_a_nonzero_surrogate():
    generator = torch.Generator().manual_seed(1)
    logp = -torch.rand(3, 4, generator=generator, dtype=torch.float64)
    old_logp = logp - 0.1 * torch.randn(3, 4, generator=generator, dtype=torch.float64)
    ref_logp = -torch.rand(3, 4, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([1.0, -0.5, 0.25])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    loss_0, _, _ = loss_and_grad(logp, old_logp, ref_logp, advantages, mask, beta=0.0)
    loss_b, _, _ = loss_and_grad(logp, old_logp, ref_logp, advantages, mask, beta=0.3)
    # "sequence": the KL part is β × mean over rows of each row's mean KL over its kept tokens
    log_ratio = ref_logp - logp  # (N, T); k3 written out: exp(r) − r − 1
    kl = (torch.exp(log_ratio) - log_ratio - 1) * mask
    kl_term = (kl.sum(1) / mask.sum(1)).mean()
    assert float(loss_b - loss_0) == pytest.approx(0.3 * float(kl_term), rel=1e-10)


# --------------------------------------------------------------------------------------------------
# Masks


def test_masked_tokens_get_no_gradient_and_do_not_change_the_loss():
    generator = torch.Generator().manual_seed(2)
    logp = -torch.rand(2, 4, generator=generator, dtype=torch.float64)
    old_logp = logp - 0.3 * torch.randn(2, 4, generator=generator, dtype=torch.float64)
    ref_logp = -torch.rand(2, 4, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([0.7, -1.3])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    for aggregation in AGGREGATIONS:
        kwargs = dict(beta=0.1, aggregation=aggregation, max_tokens=4)
        loss, grad, stats = loss_and_grad(logp, old_logp, ref_logp, advantages, mask, **kwargs)
        assert torch.equal(grad[mask == 0], torch.zeros(3, dtype=torch.float64)), aggregation
        assert (grad[mask == 1] != 0).all(), aggregation  # the kept tokens do get gradient
        # far-off values on the masked tokens only: same loss and statistics
        moved = torch.where(mask == 1, logp, logp - 5.0)
        moved_loss, _, moved_stats = loss_and_grad(moved, old_logp, ref_logp, advantages, mask, **kwargs)
        assert float(moved_loss) == pytest.approx(float(loss), rel=1e-12, abs=1e-15), aggregation
        assert moved_stats.kl == pytest.approx(stats.kl)
        assert moved_stats.clip_fraction == stats.clip_fraction
        assert moved_stats.ratio_mean == pytest.approx(stats.ratio_mean)


# --------------------------------------------------------------------------------------------------
# Aggregations


def aggregation_example():
    """Rows of 1 and 3 kept tokens, β = 0, per-token objective r·A unclipped (0.8 ≤ r ≤ 1.2).

    row 0: A = 2, r = [1, ·, ·]             → objectives [2]              sum 2,    mean 2
    row 1: A = 1, r = [1, 1.1, 0.95]        → objectives [1, 1.1, 0.95]   sum 3.05, mean 1.016667
    """
    ratios = torch.tensor([[1.0, 1.15, 0.85], [1.0, 1.1, 0.95]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    return ratios.log(), torch.zeros(2, 3, dtype=torch.float64), torch.tensor([2.0, 1.0]), mask


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        ("sequence", -(2 + 3.05 / 3) / 2),  # mean of per-sequence means: −(2 + 1.016667)/2 = −1.508333
        ("token", -(2 + 3.05) / 4),  # sum / total kept: −5.05/4 = −1.2625
        ("constant", -(2 + 3.05) / (2 * 5)),  # sum / (N × max_tokens) = −5.05/10 = −0.505
    ],
)
def test_aggregation_hand_values(aggregation, expected):
    logp, old_logp, advantages, mask = aggregation_example()
    loss, grad, _ = loss_and_grad(
        logp, old_logp, None, advantages, mask, aggregation=aggregation, max_tokens=5
    )
    assert float(loss) == pytest.approx(expected, rel=1e-12)


def test_aggregation_gradients_weigh_tokens_as_documented():
    logp, _, advantages, mask = aggregation_example()
    old_logp = logp  # r = 1: d loss / d logp_t = −A_i × (weight of token t)
    grads = {
        a: loss_and_grad(logp, old_logp, None, advantages, mask, aggregation=a, max_tokens=5)[1]
        for a in AGGREGATIONS
    }
    # sequence: −A_i / |kept_i| / N → row 0: −2/1/2 = −1; row 1: −1/3/2 = −1/6
    torch.testing.assert_close(
        grads["sequence"][mask == 1], torch.tensor([-1, -1 / 6, -1 / 6, -1 / 6], dtype=torch.float64)
    )
    # token: −A_i / 4 → −0.5, −0.25
    torch.testing.assert_close(
        grads["token"][mask == 1], torch.tensor([-0.5, -0.25, -0.25, -0.25], dtype=torch.float64)
    )
    # constant: −A_i / (2 × 5) → −0.2, −0.1
    torch.testing.assert_close(
        grads["constant"][mask == 1], torch.tensor([-0.2, -0.1, -0.1, -0.1], dtype=torch.float64)
    )


def test_constant_aggregation_needs_max_tokens():
    logp, old_logp, advantages, mask = aggregation_example()
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(logp, old_logp, None, advantages, mask, clip_eps=EPS, beta=0.0, aggregation="constant")


def test_unknown_aggregation_raises():
    logp, old_logp, advantages, mask = aggregation_example()
    with pytest.raises(ValueError, match="unknown aggregation"):
        grpo_loss(logp, old_logp, None, advantages, mask, clip_eps=EPS, beta=0.0, aggregation="mean")


# --------------------------------------------------------------------------------------------------
# Micro-batching


def test_microbatch_weight_hand_values():
    batch_mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 0]])
    # sequence/constant: rows 2 of 4 = 0.5; token: kept tokens (1 + 3) of 6
    assert microbatch_weight(batch_mask[:2], batch_mask, "sequence") == 0.5
    assert microbatch_weight(batch_mask[:2], batch_mask, "constant") == 0.5
    assert microbatch_weight(batch_mask[:2], batch_mask, "token") == pytest.approx(4 / 6)
    assert microbatch_weight(batch_mask[3:], batch_mask, "token") == 0.0


def test_token_microbatch_weight_is_exact():
    batch_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])  # 7 kept tokens
    # the last row keeps one token of seven: 1/7 = 0.142857142857..., not its float32 rounding 0.142857149243
    assert microbatch_weight(batch_mask[2:], batch_mask, "token") == 1 / 7


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_microbatches_of_one_sum_to_the_full_batch(aggregation):
    generator = torch.Generator().manual_seed(3)
    logp = -torch.rand(4, 5, generator=generator, dtype=torch.float64)
    old_logp = logp - 0.4 * torch.randn(4, 5, generator=generator, dtype=torch.float64)  # some clipped
    ref_logp = -torch.rand(4, 5, generator=generator, dtype=torch.float64)
    advantages = torch.tensor([1.0, -0.5, 0.0, 2.0])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    kwargs = dict(clip_eps=EPS, beta=0.05, aggregation=aggregation, max_tokens=5)

    full_logp = logp.clone().requires_grad_(True)
    full_loss, _ = grpo_loss(full_logp, old_logp, ref_logp, advantages, mask, **kwargs)
    full_loss.backward()

    mb_logp = logp.clone().requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(4):
        rows = slice(i, i + 1)
        loss, _ = grpo_loss(
            mb_logp[rows], old_logp[rows], ref_logp[rows], advantages[rows], mask[rows], **kwargs
        )
        weighted = loss * microbatch_weight(mask[rows], mask, aggregation)
        weighted.backward()  # gradients accumulate, as in the trainer
        total = total + weighted.detach()

    assert float(total) == pytest.approx(float(full_loss.detach()), rel=1e-12)
    torch.testing.assert_close(mb_logp.grad, full_logp.grad, rtol=1e-12, atol=1e-15)
    assert full_logp.grad.abs().sum() > 0


@pytest.mark.parametrize("aggregation", ["sequence", "token", "constant"])
def test_a_non_finite_log_prob_at_a_masked_position_never_reaches_the_loss(aggregation):
    # row 0's last position is padding whose log-prob came out as -inf (and the reference's as NaN):
    # a product inf · 0 would make the loss and every gradient NaN
    logp = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, -0.5, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.0, -2.0, float("nan")], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, stats = grpo_loss(
        logp, logp.detach(), ref, torch.tensor([1.0, -1.0]), mask,
        clip_eps=0.2, beta=0.1, aggregation=aggregation, max_tokens=3,
    )  # fmt: skip
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert logp.grad[0, 2] == 0  # masked: no gradient at all
    assert stats.kl == 0.0 and stats.ratio_mean == 1.0  # the statistics skip it too
    # and the kept positions get what they would get with a finite value there
    finite = logp.detach().clone()
    finite[0, 2] = -3.0
    finite.requires_grad_(True)
    expected, _ = grpo_loss(
        finite, finite.detach(), ref.nan_to_num(0.0), torch.tensor([1.0, -1.0]), mask,
        clip_eps=0.2, beta=0.1, aggregation=aggregation, max_tokens=3,
    )  # fmt: skip
    expected.backward()
    assert float(loss.detach()) == float(expected.detach())
    assert torch.equal(logp.grad, finite.grad)
