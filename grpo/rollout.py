"""A hand-written batched sampler: G completions per prompt, one forward pass per new token, KV cache.

No `model.generate`: the loop below is the whole of it. Prompts are left-padded so that every row's
next token sits in the last column; position ids count real tokens only, so a padded row sees exactly
what it would see alone. Each row stops on its own at an end-of-turn token, after a stop string such as
`</answer>` (which can span several tokens, so it is found in the decoded text), when it opens a second
`<think>` after closing the first (`one_think`, the poster's guard against the repeated-think reward
hack), or at `max_new_tokens`. The device decodes with fixed shapes (`DecodeStep`) and the host reads the
new tokens every few steps (`Ends`): a row is cut where it stopped, however far the device ran past it.

The log-prob of each sampled token is recorded under the distribution the policy defines at this
temperature, softmax(logits / T), before top-p truncation: that is the π_old of the PPO ratio, and
`grpo.logprobs.token_logprobs(..., temperature=T)` of the same tokens gives the same numbers.
Top-p is a sampling device, not part of the policy whose ratio is clipped (as in TRL and verl).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from tqdm.auto import tqdm

from grpo.decode import DecodeStep, cache_argument, make_rollout_cache, returned_cache
from grpo.logprobs import left_pad, position_ids_from_mask
from grpo.tags import ANSWER_CLOSE, ASSISTANT_PREFILL, THINK_CLOSE, THINK_OPEN

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from transformers.cache_utils import Cache

    from grpo.models import CausalLM


@dataclass
class Rollout:
    input_ids: torch.Tensor  # (N, P + C) the prompts left-padded, then the completions; N = n_prompts × G
    attention_mask: torch.Tensor  # (N, P + C) 1 for real prompt tokens and generated tokens
    prompt_length: int  # P: the completions' first column
    completion_ids: torch.Tensor  # (N, C) input_ids[:, P:], right-padded with the pad id
    completion_mask: torch.Tensor  # (N, C) attention_mask[:, P:]: 1 for generated tokens, end-of-turn too
    # (N, C) log-prob of each sampled token under the distribution it was drawn from (0 where masked). The
    # update does not read it (its π_old comes from teacher forcing); the tests check the sampler against it
    sample_logp: torch.Tensor
    texts: list[str]  # decoded completions, end-of-turn tokens left out
    finish_reasons: list[str]  # "eos" | "stop" (a stop string) | "second_think" | "length"


def build_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Chat template with the assistant turn opened and prefilled up to `<think>`, as token ids."""
    # typed as any of its outputs (ids, batches, …); with tokenize=False one conversation renders as one str
    text = cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return tokenizer.encode(text + ASSISTANT_PREFILL, add_special_tokens=False)


def nucleus(probs: torch.Tensor, top_p: float, candidates: int = 1024) -> torch.Tensor:
    """Zero every token outside the smallest set of most likely tokens whose mass reaches top_p.

    Sorting a 50k–150k vocabulary every step is slow on a CPU; the nucleus almost always lies within
    the `candidates` most likely tokens, so there those are sorted (topk) and the full sort is kept for
    rows whose top candidates do not reach top_p. That choice is a host sync, free on a CPU; on a GPU the
    whole vocabulary is sorted, which is cheap there and keeps the step free of syncs. The first token
    always stays.
    """
    if probs.device.type == "cpu":
        top_probs, order = probs.topk(min(candidates, probs.shape[-1]), dim=-1)  # (N, k), sorted descending
        if bool((top_probs.sum(-1) < top_p).any()):
            top_probs, order = probs.sort(dim=-1, descending=True)  # (N, V)
    else:
        top_probs, order = probs.sort(dim=-1, descending=True)  # (N, V)
    mass_before = top_probs.cumsum(dim=-1) - top_probs  # (N, k)
    top_probs = top_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, top_probs)  # (N, V), unnormalised


def sample_tokens(
    logits: torch.Tensor,  # (N, V)
    temperature: float,
    top_p: float,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,  # (N, 1) float64 in [0, 1): the draws to use, else drawn here
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row; return (tokens (N,), log softmax(logits / T) at those tokens (N,))."""
    logits = logits.float()
    if temperature == 0:  # greedy: the policy's own (T = 1) log-probs are recorded
        logp_all = torch.log_softmax(logits, dim=-1)  # (N, V)
        tokens = logits.argmax(dim=-1)  # (N,)
        return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1)
    logp_all = torch.log_softmax(logits / temperature, dim=-1)  # (N, V)
    probs = logp_all.exp()  # (N, V)
    if top_p < 1.0:
        probs = nucleus(probs, top_p)
    # inverse-CDF sampling, one uniform number per row: the distribution torch.multinomial draws from,
    # at a tenth of its cost on a CPU for a 50k vocabulary. float64 keeps the CDF exact enough.
    cdf = probs.double().cumsum(dim=-1)  # (N, V)
    u = uniforms
    if u is None:
        u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    tokens = (
        torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    )  # (N,)
    return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1)


class NonFiniteLogits(RuntimeError):
    """The policy's next-token logits are NaN or infinite in a row that holds a real sequence."""

    def __init__(self, model: CausalLM, rows: list[int], step: int) -> None:
        attention = getattr(getattr(model, "config", None), "_attn_implementation", "?")
        dtype = next(model.parameters()).dtype
        super().__init__(
            f"the policy's logits are NaN or infinite in {len(rows)} row(s) (first: {rows[:5]}) at new token "
            f"{step} (attention {attention!r}, weights {dtype}"
            f"{', bf16 autocast' if torch.is_autocast_enabled(next(model.parameters()).device.type) else ''}). "
            "Either the weights diverged (see grad_norm and kl in metrics.jsonl), or the attention kernel "
            "mishandles the fully masked query rows of left padding: `python -m tools.gpu_check` tests each "
            "attention implementation on them"
        )


# The host reads the new tokens (stop tokens, stop strings, a second <think>) every this many steps, in one
# transfer; between reads the device runs ahead. A row found finished is cut where it finished, so what it
# sampled after its stop is dropped and nothing changes but when the loop notices.
CHECK_EVERY = 8
# A compiled decode step is compiled once per shape (rows, cache capacity): the capacity is rounded up to a
# multiple of this, so that prompts of other lengths reuse the same compiled step (and CUDA graph)
CAPACITY_BUCKET = 128
# Finished rows leave the batch (and the cache, a copy of every layer's K and V) once the rows still running
# are at most this share of it: a handful of copies per rollout instead of one per finished row
LEAVE_AT = 0.5
# `rollout`'s settings that decode as the sampler this one replaced did (the cache grows a column per step,
# the host reads every token, a finished row leaves at once), with today's random draws, so that both sample
# the same completions: `make bench` and the tests compare the two
PREVIOUS_SAMPLER = dict(static=False, check_every=1, leave_at=1.0)


def prefill(
    model: CausalLM,
    unique_ids: torch.Tensor,
    unique_mask: torch.Tensor,
    group_size: int,
    cache: Cache | None,
) -> tuple[Cache | None, torch.Tensor, torch.Tensor]:
    """One forward pass over each left-padded prompt (`unique_ids`, `unique_mask`: (n_prompts, P)), into `cache`
    (None: the model's own). Returns the cache, repeated for the `group_size` samples of each prompt, the
    logits of each sample's first token (N, V) and the position id of the token after the prompt (N,)."""
    position_ids = position_ids_from_mask(unique_mask)  # (n_prompts, P)
    out = model(
        input_ids=unique_ids,
        attention_mask=unique_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **({cache_argument(model): cache} if cache is not None else {}),
    )
    cache = returned_cache(out)
    if cache is not None:
        cache.batch_repeat_interleave(group_size)
    logits = out["logits"][:, -1].repeat_interleave(group_size, dim=0)  # (N, V)
    positions = (position_ids[:, -1] + 1).repeat_interleave(group_size)  # (N,) the next token's position id
    return cache, logits, positions


@torch.no_grad()  # no graph: the update's log-probs come from teacher forcing (grpo.logprobs)
def rollout(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    stop_strings: Sequence[str] = (ANSWER_CLOSE,),
    one_think: bool = True,
    generator: torch.Generator | None = None,
    progress: bool = False,
    preallocate: bool = True,
    compile: bool = False,
    static: bool = True,
    check_every: int = CHECK_EVERY,
    leave_at: float = LEAVE_AT,
) -> Rollout:
    """Sample `group_size` completions for each prompt (token ids, chat template already applied).

    What is sampled does not depend on these savings (a row's random draws are its own, whatever the batch
    holds; tested against `PREVIOUS_SAMPLER`): each prompt is prefilled once and its KV cache
    shared by its G samples; decoding then runs with static shapes (`DecodeStep`): every row stays in the
    batch, the cache is written at a position tensor and attended over its whole capacity under a mask,
    and the host looks at the tokens only every `check_every` steps (no sync in between). When half of the
    rows have finished they leave the batch and the cache together, so a few long completions do not keep
    the whole batch running (at most log2(N) such shape changes; `leave_at`: the share of the batch still
    running at which finished rows leave, 1.0 as soon as one finishes). `compile`: run each decode step
    through `torch.compile` (CUDA graphs on a GPU), compiled once per shape. `static=False` lets the cache
    grow a column per step instead, and `preallocate=False` decodes with the model's own growing cache (as do
    models whose layers are not all full attention). `PREVIOUS_SAMPLER`'s settings give the sampler this
    one replaced.
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    G, T = group_size, max_new_tokens
    unique_ids, unique_mask = left_pad(prompts, pad_id, device)  # (n_prompts, P)
    prompt_ids = unique_ids.repeat_interleave(G, dim=0)  # (N, P): G copies of each prompt, contiguous
    prompt_mask = unique_mask.repeat_interleave(G, dim=0)  # (N, P)
    n, P = prompt_ids.shape

    # 1. prefill each prompt once, then give each of its G samples a copy of its cache
    capacity = P + T if not compile else -(-(P + T) // CAPACITY_BUCKET) * CAPACITY_BUCKET
    cache = make_rollout_cache(model, n, capacity, reuse=compile) if preallocate else None
    cache, logits, positions = prefill(model, unique_ids, unique_mask, G, cache)
    step = DecodeStep(model, cache, prompt_mask, T, compile, static)

    # 2. decode: one new token for every row of the batch per step
    completion_ids = torch.full((n, T), pad_id, dtype=torch.long, device=device)
    sample_logp = torch.zeros((n, T), dtype=torch.float32, device=device)
    broken = torch.zeros((n, T), dtype=torch.bool, device=device)  # a NaN logit would sample the last id
    rows = torch.arange(n, device=device)  # (b,) the output row each batch row writes to
    ends = Ends(tokenizer, n, T, stop_token_ids, stop_strings, one_think)
    bar = tqdm(total=T, desc="rollout", unit="step", leave=False, disable=not progress)
    checked = 0  # the host has read every token before this step
    for t in range(T):
        bar.update(1)
        # one uniform number per output row and step, whichever rows are still in the batch: what a row samples
        # does not depend on when the others finish, nor on when they leave
        u = None  # greedy draws nothing
        if temperature > 0:
            u = torch.rand((n, 1), generator=generator, dtype=torch.float64, device=device)[rows]  # (b, 1)
        tokens, logp = sample_tokens(logits, temperature, top_p, uniforms=u)
        completion_ids[rows, t] = tokens
        sample_logp[rows, t] = logp
        broken[rows, t] = ~torch.isfinite(logits).all(dim=-1)
        if t + 1 - checked >= check_every or t == T - 1:
            ends.read(completion_ids[:, checked : t + 1], broken[:, checked : t + 1], checked, model)
            checked = t + 1
            if not ends.running or t == T - 1:
                break
            if len(ends.running) < len(rows) and len(ends.running) <= leave_at * len(rows):  # they leave
                keep = torch.tensor(ends.keep(rows.tolist()), device=device)
                rows, tokens, positions = rows[keep], tokens[keep], positions[keep]
                step.select_rows(keep, written=P + t)
        logits = step(tokens, positions, P + t)  # (b, V)
        positions = positions + 1
    bar.close()

    # 3. cut every row where it finished
    steps = max(ends.ends)
    completion_mask = (
        torch.arange(steps, device=device) < torch.tensor(ends.ends, device=device)[:, None]
    ).long()
    completion_ids = completion_ids[:, :steps].masked_fill(completion_mask == 0, pad_id)
    sample_logp = sample_logp[:, :steps].masked_fill(completion_mask == 0, 0.0)
    texts = decode_completions(tokenizer, completion_ids, completion_mask, stop_token_ids)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (N, P + C)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)  # (N, P + C)
    # the completions as views of the whole rows: one copy of the tokens, two names for them
    return Rollout(input_ids, attention_mask, P, input_ids[:, P:], attention_mask[:, P:], sample_logp, texts,
                   ends.reasons)  # fmt: skip


class Ends:
    """Where each row ends and why, found on the host from the tokens it reads every few steps: an end-of-turn
    token, a stop string, or a second `<think>` in the row's text as it grows (`update`)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        n_rows: int,
        max_new_tokens: int,
        stop_token_ids: Sequence[int],
        stop_strings: Sequence[str],
        one_think: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_token_ids)
        self.stop_strings = [s for s in stop_strings if s]
        self.one_think = one_think
        longest = max([len(s) for s in self.stop_strings] + [len(THINK_CLOSE)])
        self.overlap = longest - 1  # a match ending in the new piece starts at most this far back
        self.texts = [""] * n_rows
        self.think_closed_at = [-1] * n_rows  # char offset just after the first </think>, -1 before
        self.ends = [max_new_tokens] * n_rows  # tokens each row keeps, its stop included
        self.reasons = ["length"] * n_rows  # "eos" | "stop" | "second_think" | "length"
        self.running = list(range(n_rows))  # output rows not finished yet

    def read(self, ids: torch.Tensor, broken: torch.Tensor, first_step: int, model: CausalLM) -> None:
        """Read the tokens of steps first_step.. (ids and broken: (N, w)), one transfer for both."""
        w = ids.shape[1]
        both = torch.cat([ids, broken.long()], dim=1).tolist()  # (N, 2w)
        ids_rows, broken_rows = [row[:w] for row in both], [row[w:] for row in both]
        rows = self.running
        pieces = iter(
            self.tokenizer.batch_decode([[i] for r in rows for i in ids_rows[r]], skip_special_tokens=False)
        )
        still = []
        for r in rows:
            reason = None
            for j, (token, piece) in enumerate(zip(ids_rows[r], pieces, strict=False)):  # pieces: all rows
                if reason is not None:
                    continue  # the row ended earlier in this window; its other pieces are skipped
                if broken_rows[r][j]:
                    bad = [q for q in rows if any(broken_rows[q])]
                    raise NonFiniteLogits(model, bad, first_step + j)
                reason = "eos" if token in self.stop_ids else self.update(r, piece)
                if reason is not None:
                    self.ends[r], self.reasons[r] = first_step + j + 1, reason
            if reason is None:
                still.append(r)
        self.running = still

    def update(self, row: int, piece: str) -> str | None:
        """Append a decoded token to `row`'s text; return why the row must stop there, or None. Only the tail
        that the new piece can complete is searched, so the cost per token is constant."""
        search_from = max(0, len(self.texts[row]) - self.overlap)
        text = self.texts[row] = self.texts[row] + piece
        if self.one_think:
            if self.think_closed_at[row] < 0:
                found = text.find(THINK_CLOSE, search_from)
                if found >= 0:
                    self.think_closed_at[row] = found + len(THINK_CLOSE)
            if (
                self.think_closed_at[row] >= 0
                and text.find(THINK_OPEN, max(search_from, self.think_closed_at[row])) >= 0
            ):
                return "second_think"
        if any(text.find(s, search_from) >= 0 for s in self.stop_strings):
            return "stop"
        return None

    def keep(self, rows: list[int]) -> list[int]:
        """The batch rows (indices into `rows`, the output row of each) that are still running."""
        running = set(self.running)
        return [i for i, r in enumerate(rows) if r in running]


def decode_completions(
    tokenizer: PreTrainedTokenizerBase,
    completion_ids: torch.Tensor,  # (N, C)
    completion_mask: torch.Tensor,  # (N, C)
    stop_token_ids: Sequence[int],
) -> list[str]:
    """Decode each row's generated tokens, leaving out padding and end-of-turn tokens."""
    stop = set(stop_token_ids)
    rows = []
    for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist(), strict=True):
        rows.append([i for i, m in zip(ids, mask, strict=True) if m and i not in stop])
    return tokenizer.batch_decode(rows, skip_special_tokens=False)
