"""Teacher-forced log-probabilities of given tokens, without a full-vocabulary log-softmax of the batch.

    log π(x_t | x_<t) = z_t[x_t] − logsumexp(z_t),      z_t = lm_head(h_{t−1}) / temperature

A naive `log_softmax(model(ids).logits)` holds (rows × positions × vocabulary) fp32 numbers at once:
for 64 completions of 1,024 tokens and Qwen3's 151,936-token vocabulary that is 40 GB. Here the decoder
runs once per micro-batch, only the positions that are scored go through the output projection, and
they do so in chunks of `chunk_tokens` positions, each reduced to one number per position before the
next chunk starts. With gradients on, each chunk is checkpointed: its logits are recomputed in the
backward pass instead of being stored.

Rows in groups of G that share their prompt (a rollout's layout) can have the prompt run through the
decoder once per group (`group_size=G`): the prompt's keys and values are computed once, repeated for
the G rows, and the completions attend to them, with gradients flowing back through the repeat. The
numbers are those of the plain pass (tested); the work on the prompt is divided by G.

Assumes logits = lm_head(last hidden state), as in the Llama, Qwen and SmolLM families (no logit
soft-capping or scaling).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

from grpo.decode import cache_argument, make_rollout_cache, returned_cache

if TYPE_CHECKING:
    from grpo.models import CausalLM


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one left-padded batch: ids (n, width), right-aligned on `pad_id`, and their 0/1 mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long, device=device)
            mask[i, width - len(r) :] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    # left padding: the first real token of every row is position 0, as in the rollout's prefill
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)


def _chunk_logprobs(
    lm_head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    logits = lm_head(hidden)  # (chunk, V)
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # at least fp32 for a stable logsumexp (a float64 model stays float64)
    if temperature != 1.0:  # no copy of the chunk's logits in the common case
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (chunk,)
    return picked - torch.logsumexp(logits, dim=-1)  # (chunk,)


def predicting_hidden_states(
    model: CausalLM,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    start: int,
    group_size: int = 1,
    shared_prefix: int | None = None,
) -> torch.Tensor:
    """The last hidden states that predict tokens start … L−1 (those at positions start−1 … L−2): (N, T, H).

    With `group_size=G`, the first `shared_prefix` columns (default: `start`) run once per group of G rows
    when they are the same in every row of the group; otherwise every row runs whole.
    """
    decoder = model.get_decoder()
    positions = position_ids_from_mask(attention_mask)  # (N, L)
    G, prefix = group_size, start if shared_prefix is None else shared_prefix
    if not 1 <= prefix <= start:
        raise ValueError(f"shared_prefix={prefix} must be in [1, start={start}]")
    # activation checkpointing turns the cache off in training, and the shared prefix needs it (the flag is
    # transformers 5's is_activation_checkpointing, is_gradient_checkpointing before; a PEFT wrapper passes
    # either on to its model)
    checkpointing = getattr(model, "is_activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    n_rows, length = input_ids.shape
    # shared: the rows come in consecutive groups of G with the same first `prefix` tokens and mask
    shared = G > 1 and n_rows % G == 0 and not (model.training and bool(checkpointing))
    if shared:
        for x in (input_ids, attention_mask):
            prompts = x[:, :prefix].reshape(n_rows // G, G, prefix)  # (groups, G, prefix)
            shared = shared and bool((prompts == prompts[:, :1]).all())
    if not shared:
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        ).last_hidden_state
        return hidden[:, start - 1 : -1]  # (N, T, H)
    # the prefix once per group: its keys and values, repeated for the group's G rows. Without gradients
    # they go into a cache allocated once (no copies as the rest is appended); with gradients into the
    # model's own cache, whose tensors autograd can follow
    cache = None if torch.is_grad_enabled() else make_rollout_cache(model, n_rows, length)
    prompt = decoder(
        input_ids=input_ids[::G, :prefix],
        attention_mask=attention_mask[::G, :prefix],
        position_ids=positions[::G, :prefix],
        use_cache=True,
        **({cache_argument(decoder): cache} if cache is not None else {}),
    )
    # the prefix's last hidden state predicts column `prefix`, in each of the G rows
    hidden = prompt.last_hidden_state[:, -1:].repeat_interleave(G, dim=0)  # (N, 1, H)
    if length - 1 > prefix:
        cache = returned_cache(prompt)
        assert cache is not None  # (use_cache=True)
        cache.batch_repeat_interleave(G)  # differentiable: every row's gradient flows back to the prefix
        # then the rest of every row (its last token predicts nothing, so it is left out)
        rest = decoder(
            input_ids=input_ids[:, prefix:-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, prefix:-1],
            use_cache=True,
            **{cache_argument(decoder): cache},
        ).last_hidden_state  # (N, L − 1 − prefix, H)
        hidden = torch.cat([hidden, rest], dim=1)  # (N, L − prefix, H): predicts columns prefix … L−1
    return hidden[:, start - prefix :]  # (N, T, H)


def token_logprobs(
    model: CausalLM,
    input_ids: torch.Tensor,  # (N, L)
    attention_mask: torch.Tensor,  # (N, L)
    start: int,  # score the tokens input_ids[:, start:]
    *,
    temperature: float = 1.0,
    micro_batch_size: int | None = None,
    chunk_tokens: int = 1024,
    group_size: int = 1,
    shared_prefix: int | None = None,
) -> torch.Tensor:
    """log π(input_ids[:, t] | input_ids[:, :t]) for t ≥ start, shape (N, L − start).

    `micro_batch_size` rows per forward pass (None: all N at once); the output projection runs on
    `chunk_tokens` positions at a time, so the (N·T, V) logits are never held whole. `group_size=G`: rows
    i·G … i·G + G − 1 share their first `shared_prefix` tokens (default `start`), so that prefix goes through
    the decoder once per group (checked: otherwise, or under activation checkpointing, every row runs whole).
    """
    if not 1 <= start < input_ids.shape[1]:
        raise ValueError(f"start={start} must be in [1, {input_ids.shape[1]})")
    n = input_ids.shape[0]
    lm_head = model.get_output_embeddings()
    step = micro_batch_size or n
    rows = []
    for i in range(0, n, step):
        ids, mask = input_ids[i : i + step], attention_mask[i : i + step]  # (mb, L)
        hidden = predicting_hidden_states(model, ids, mask, start, group_size, shared_prefix)  # (mb, T, H)
        hidden = hidden.reshape(-1, hidden.shape[-1])  # (mb·T, H)
        targets = ids[:, start:].reshape(-1)  # (mb·T,)
        pieces = []
        for h, y in zip(hidden.split(chunk_tokens), targets.split(chunk_tokens), strict=True):
            if torch.is_grad_enabled():
                pieces.append(checkpoint(_chunk_logprobs, lm_head, h, y, temperature, use_reentrant=False))
            else:
                pieces.append(_chunk_logprobs(lm_head, h, y, temperature))
        rows.append(torch.cat(pieces).view(ids.shape[0], -1))  # (mb, T)
    return rows[0] if len(rows) == 1 else torch.cat(rows)  # (N, T)


class TokenLogprobs(torch.nn.Module):
    """`token_logprobs` as a module. DistributedDataParallel synchronises the gradients of what runs
    inside the forward of the module it wraps, so the policy update goes through this module."""

    def __init__(self, model: CausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,  # (N, L)
        attention_mask: torch.Tensor,  # (N, L)
        start: int,
        temperature: float = 1.0,
        group_size: int = 1,
    ) -> torch.Tensor:
        logp = token_logprobs(
            self.model, input_ids, attention_mask, start, temperature=temperature, group_size=group_size
        )
        # a copy, not the view token_logprobs returns: FSDP hooks the backward of this module's output, and
        # warns that an in-place op on a view would skip it (N × T numbers, nothing to a step)
        return logp.clone()
