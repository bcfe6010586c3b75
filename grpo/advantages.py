"""Group-relative advantages: each completion is compared with the other completions of its prompt.

    A_i = R_i − mean_{j ∈ group(i)} R_j                       (the poster's baseline)
    A_i = (R_i − mean_group R) / (std_group R + eps)          (DeepSeekMath's, with `scale=True`)

Pure torch. Completions of one prompt are contiguous: rows [g·G, (g+1)·G) form group g.

A group whose rewards are all equal carries no signal: its advantages are exactly 0 (not a division
0/0 that turns into NaN, and not a rounding residue of R − mean(R)). The fraction of such groups is
returned, because a run where it stays near 1 is not learning.

A non-finite reward (NaN, ±inf: a scoring function that broke on one row) is left out: it does not enter its
group's baseline and its advantage is 0, so one bad row never turns the batch's advantages into NaN.
A group with fewer than two finite rewards has nothing to compare and counts as all-equal.
"""

from __future__ import annotations

import torch


def group_advantages(
    rewards: torch.Tensor,  # (N,) with N = n_groups × group_size
    group_size: int,
    *,
    scale: bool = False,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, float]:
    """Return (advantages (N,), fraction of groups whose rewards are all equal)."""
    if group_size < 1 or rewards.ndim != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} do not split into groups of {group_size}")
    grouped = rewards.double().view(-1, group_size)  # (n_groups, G), float64 so the baseline is exact
    finite = torch.isfinite(grouped)  # (n_groups, G)
    zeroed = torch.where(finite, grouped, torch.zeros_like(grouped))  # non-finite rewards set to 0, aside
    n_finite = finite.sum(dim=1, keepdim=True)  # (n_groups, 1)
    baseline = zeroed.sum(dim=1, keepdim=True) / n_finite.clamp(min=1)  # (n_groups, 1) mean of the finite
    advantages = zeroed - baseline  # (n_groups, G)
    if scale:
        variance = (torch.where(finite, advantages, torch.zeros_like(advantages)) ** 2).sum(
            dim=1, keepdim=True
        ) / n_finite.clamp(min=1)  # (n_groups, 1), denominator n (unbiased=False)
        advantages = advantages / (variance.sqrt() + eps)  # (n_groups, G)
    inf = torch.full_like(grouped, float("inf"))
    highest = torch.where(finite, grouped, -inf).amax(dim=1)  # (n_groups,)
    lowest = torch.where(finite, grouped, inf).amin(dim=1)  # (n_groups,)
    all_equal = (highest == lowest) | (n_finite.squeeze(1) < 2)  # (n_groups,)
    advantages = torch.where(all_equal.unsqueeze(1) | ~finite, torch.zeros_like(advantages), advantages)
    return advantages.view(-1).to(rewards.dtype), float(all_equal.double().mean())
