"""Teacher-forced log-probabilities of given tokens, without a full-vocabulary log-softmax of the batch.

    log π(x_t | x_<t) = z_t[x_t] − logsumexp(z_t),      z_t = lm_head(h_{t−1}) / temperature

A naive `log_softmax(model(ids).logits)` holds (rows × positions × vocabulary) fp32 numbers at once:
for 64 completions of 1,024 tokens and Qwen3's 151,936-token vocabulary that is 40 GB. Here the decoder
runs once per micro-batch, only the positions that are scored go through the output projection, and
they do so in chunks of `chunk_tokens` positions, each reduced to one number per position before the
next chunk starts. With gradients on, each chunk is checkpointed: its logits are recomputed in the
backward pass instead of being stored.

Assumes logits = lm_head(last hidden state), as in the Llama, Qwen and SmolLM families (no logit
soft-capping or scaling).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    # left padding: the first real token of every row is position 0, as in the rollout's prefill
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)


def _chunk_logprobs(lm_head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = lm_head(hidden).float()  # (chunk, V), fp32 for a stable logsumexp
    if temperature != 1.0:  # no copy of the chunk's logits in the common case
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (chunk,)
    return picked - torch.logsumexp(logits, dim=-1)  # (chunk,)


def token_logprobs(
    model,
    input_ids: torch.Tensor,  # (N, L)
    attention_mask: torch.Tensor,  # (N, L)
    start: int,  # score the tokens input_ids[:, start:]
    *,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
) -> torch.Tensor:
    """log π(input_ids[:, t] | input_ids[:, :t]) for t ≥ start, shape (N, L − start). One forward pass."""
    if not 1 <= start < input_ids.shape[1]:
        raise ValueError(f"start={start} must be in [1, {input_ids.shape[1]})")
    hidden = model.get_decoder()(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
    ).last_hidden_state  # (N, L, H)
    # the hidden state at t − 1 predicts the token at t
    hidden = hidden[:, start - 1 : -1].reshape(-1, hidden.shape[-1])  # (N·T, H)
    targets = input_ids[:, start:].reshape(-1)  # (N·T,)
    lm_head = model.get_output_embeddings()
    pieces = []
    for h, y in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens), strict=True):
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logprobs, lm_head, h, y, temperature, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(lm_head, h, y, temperature))
    return torch.cat(pieces).view(input_ids.shape[0], -1)  # (N, T)


@torch.no_grad()
def batched_token_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    *,
    micro_batch_size: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """`token_logprobs` without gradient, `micro_batch_size` rows per forward pass."""
    rows = range(0, input_ids.shape[0], micro_batch_size)
    return torch.cat(
        [
            token_logprobs(
                model,
                input_ids[i : i + micro_batch_size],
                attention_mask[i : i + micro_batch_size],
                start,
                temperature=temperature,
            )
            for i in rows
        ]
    )


class TokenLogprobs(torch.nn.Module):
    """`token_logprobs` as a module. DistributedDataParallel synchronises the gradients of what runs
    inside the forward of the module it wraps, so the policy update goes through this module."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, start: int, temperature: float = 1.0) -> torch.Tensor:
        return token_logprobs(self.model, input_ids, attention_mask, start, temperature=temperature)
