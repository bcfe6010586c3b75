"""The GRPO objective: group-relative advantages, then a clipped surrogate on the kept tokens minus β times a
KL penalty.

Pure torch: tensors in, a scalar and some statistics out. No model, no tokenizer, no disk.

**Advantages** (`group_advantages`): each completion is compared with the other completions of its prompt.

    A_i = R_i − mean_{j ∈ group(i)} R_j                       (the poster's baseline)
    A_i = (R_i − mean_group R) / (std_group R + eps)          (DeepSeekMath's, with `scale=True`)

Completions of one prompt are contiguous: rows [g·G, (g+1)·G) form group g. A group whose rewards are all
equal carries no signal: its advantages are exactly 0 (not a division 0/0 that turns into NaN, and not a
rounding residue of R − mean(R)). The fraction of such groups is returned, because a run where it stays near
1 is not learning. A non-finite reward (NaN, ±inf: a scoring function that broke on one row) is left out: it
does not enter its group's baseline and its advantage is 0, so one bad row never turns the batch's advantages
into NaN. A group with fewer than two finite rewards has nothing to compare and counts as all-equal.

**The loss** (`grpo_loss`). For completion i (of N), token t, with the advantage Â_i shared by all its tokens:

    r_t  = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t)
    ℓ_t  = min(r_t·Â_i, clip(r_t, 1−ε, 1+ε)·Â_i) − β·KL_t
    KL_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1        (k3 estimator of KL(π_θ ‖ π_ref), ≥ 0)
    L_i  = (1 / |o_i^{≤t_end}|) Σ_{t ≤ t_end} ℓ_t             (the kept tokens: `loss_mask`)
    loss = −(1/N) Σ_i L_i

`loss_mask` marks the tokens that get gradient: the completion (the spine) or only the reasoning span
up to and including `</think>` (the poster's logprob runs). Which denominator is used is a choice with
consequences, so it is an explicit argument:

- "sequence" (the poster's and DeepSeekMath's; `grpo_loss`'s default): each sequence's mean over its kept
  tokens, then the mean over sequences. Every sequence weighs the same, so a token of a long completion
  weighs less than one of a short completion.
- "token" (DAPO; a run's default, `--loss-aggregation`): the sum over all kept tokens of the batch divided
  by their count. Every token weighs the same; long completions are not diluted.
- "constant" (Dr. GRPO): the sum divided by N × `max_tokens`, a constant, which removes the length
  bias of the per-sequence mean without making the step size depend on the batch's lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo.config import AGGREGATIONS


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


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    # KL_t = exp(ref − logp) − (ref − logp) − 1: unbiased for KL(π_θ ‖ π_ref) under samples of π_θ,
    # always ≥ 0, exactly 0 where the two agree (Schulman, "Approximating KL divergence", 2020)
    log_ratio = ref_logp - logp  # (N, T)
    return torch.expm1(log_ratio) - log_ratio  # (N, T); expm1 keeps it ≥ 0 in float32 near log_ratio = 0


@dataclass
class LossStats:
    kl: float  # mean k3 KL over kept tokens
    clip_fraction: float  # fraction of kept tokens where the clipped branch of the min is active
    ratio_mean: float  # mean π_θ/π_old over kept tokens (1.0 on the first update of a rollout)


def grpo_loss(
    logp: torch.Tensor,  # (N, T) log π_θ of the sampled tokens, with grad
    old_logp: torch.Tensor,  # (N, T) log π_old, the policy that sampled them (no grad)
    ref_logp: torch.Tensor | None,  # (N, T) log π_ref, None when β = 0
    advantages: torch.Tensor,  # (N,)
    loss_mask: torch.Tensor,  # (N, T) 1 for the tokens that get gradient
    *,
    clip_eps: float,
    beta: float,
    aggregation: str = "sequence",
    max_tokens: int | None = None,  # the constant of "constant" aggregation
) -> tuple[torch.Tensor, LossStats]:
    """The loss of the rows given, aggregated over those rows alone (see `microbatch_weight`)."""
    mask = loss_mask.to(logp.dtype)  # (N, T)
    adv = advantages.to(logp.dtype).unsqueeze(1)  # (N, 1)
    # Masked positions (padding, tokens after </think>) are set to 0 before any arithmetic, with
    # torch.where: a -inf log-prob there would otherwise make exp(), the KL and their gradients NaN, and a
    # NaN gradient poisons every parameter however it is masked afterwards (0 · NaN = NaN).
    keep = loss_mask.bool()  # (N, T)
    zero = torch.zeros_like(logp)
    logp = torch.where(keep, logp, zero)  # (N, T)
    old_logp = torch.where(keep, old_logp, zero)  # (N, T)
    if ref_logp is not None:
        ref_logp = torch.where(keep, ref_logp, zero)  # (N, T)

    # r_t = π_θ / π_old; equals 1 (with the gradient of logp) when old_logp is logp.detach()
    ratio = torch.exp(logp - old_logp)  # (N, T)
    unclipped = ratio * adv  # (N, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv  # (N, T)
    # ℓ_t = min(r·Â, clip(r)·Â): pessimistic, so the ratio gains nothing by leaving [1−ε, 1+ε]
    per_token_objective = torch.minimum(unclipped, clipped)  # (N, T)

    kl = torch.zeros_like(logp) if ref_logp is None else kl_k3(logp, ref_logp)  # (N, T), 0 where masked
    # the masked tokens' objective set to 0, so that every sum below is over the kept tokens alone
    per_token_objective = torch.where(keep, per_token_objective - beta * kl, zero)  # (N, T)

    if aggregation == "sequence":
        # per-sequence mean over the kept tokens (|o_i^{≤t_end}|), then mean over sequences (the poster's)
        per_sequence = per_token_objective.sum(1) / mask.sum(1).clamp(min=1)  # (N,)
        loss = -per_sequence.mean()
    elif aggregation == "token":
        # one mean over every kept token of the batch (DAPO)
        loss = -per_token_objective.sum() / mask.sum().clamp(min=1)
    elif aggregation == "constant":
        # sum over kept tokens divided by N × max_tokens, a constant (Dr. GRPO)
        if max_tokens is None:
            raise ValueError("aggregation='constant' needs max_tokens")
        loss = -per_token_objective.sum() / (mask.shape[0] * max_tokens)
    else:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {AGGREGATIONS}")

    with torch.no_grad():
        n_kept = mask.sum().clamp(min=1)
        clip_active = (clipped < unclipped).to(mask.dtype)  # where min() picked the clipped term
        stats = LossStats(
            kl=float(kl.sum() / n_kept),
            clip_fraction=float(torch.where(keep, clip_active, 0).sum() / n_kept),
            ratio_mean=float(torch.where(keep, ratio, 0).sum() / n_kept),
        )
    return loss, stats


def microbatch_weight(mb_mask: torch.Tensor, batch_mask: torch.Tensor, aggregation: str) -> float:
    """Weight of a micro-batch's loss so that the weighted sum over micro-batches is the batch's loss.

    "sequence" and "constant" are means over sequences: weight = rows in the micro-batch / rows in the
    batch. "token" is a mean over tokens: weight = kept tokens in the micro-batch / kept tokens in the batch.
    """
    if aggregation == "token":
        return int(mb_mask.sum()) / max(int(batch_mask.sum()), 1)
    return mb_mask.shape[0] / batch_mask.shape[0]
