"""A hand-written batched sampler: G completions per prompt, one forward pass per new token, KV cache.

No `model.generate`: the loop below is the whole of it. Prompts are left-padded so that every row's
next token sits in the last column; position ids count real tokens only, so a padded row sees exactly
what it would see alone. Each row stops on its own at an end-of-turn token, after a stop string such as
`</answer>` (which can span several tokens, so it is found in the decoded text, one new token per row
per step), when it opens a second `<think>` after closing the first (`one_think`, the poster's guard
against the repeated-think reward hack), or at `max_new_tokens`.

The log-prob of each sampled token is recorded under the distribution the policy defines at this
temperature, softmax(logits / T), before top-p truncation: that is the π_old of the PPO ratio, and
`grpo.logprobs.token_logprobs(..., temperature=T)` of the same tokens gives the same numbers.
Top-p is a sampling device, not part of the policy whose ratio is clipped (as in TRL and verl).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from grpo.kv_cache import cache_argument, make_rollout_cache, returned_cache
from grpo.tags import ANSWER_CLOSE, ANSWER_SEPARATOR, ASSISTANT_PREFILL, THINK_CLOSE, THINK_OPEN


@dataclass
class Rollout:
    prompt_ids: torch.Tensor  # (N, P) left-padded, N = n_prompts × G
    prompt_mask: torch.Tensor  # (N, P) 1 for real prompt tokens
    completion_ids: torch.Tensor  # (N, C) right-padded with the pad id
    completion_mask: torch.Tensor  # (N, C) 1 for generated tokens, the final end-of-turn token included
    # (N, C) log-prob of each sampled token under the distribution it was drawn from (0 where masked). The
    # update does not read it (its π_old comes from teacher forcing); the tests check the sampler against it
    sample_logp: torch.Tensor
    texts: list[str]  # decoded completions, end-of-turn tokens left out
    finish_reasons: list[str]  # "eos" | "stop" (a stop string) | "second_think" | "length"

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # (N, P + C)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # (N, P + C)

    @property
    def prompt_length(self) -> int:
        return self.prompt_ids.shape[1]


def build_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Chat template with the assistant turn opened and prefilled up to `<think>`, as token ids."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text + ASSISTANT_PREFILL, add_special_tokens=False)


def answer_separator(tokenizer) -> str:
    """What the model's chat template writes between `</think>` and the answer that follows it.

    Qwen3's template renders an assistant turn as `<think>\n…\n</think>\n\n` + answer, so that model was
    trained to write "\n\n" there; a template that renders the turn as given (SmolLM2's) says nothing,
    and then the separator is `ANSWER_SEPARATOR`, one line break. Found by rendering a turn and reading
    what lies between the tag and the answer.
    """
    marker = "ANSWER-MARKER"
    turn = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": f"{THINK_OPEN}r{THINK_CLOSE}{marker}"},
    ]
    try:
        text = tokenizer.apply_chat_template(turn, tokenize=False)
    except Exception:  # no template, or one that refuses this turn: the format's own default
        return ANSWER_SEPARATOR
    end, at = text.rfind(THINK_CLOSE), text.rfind(marker)
    between = text[end + len(THINK_CLOSE) : at] if 0 <= end < at else ""
    return between if between and not between.strip() else ANSWER_SEPARATOR


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long, device=device)
            mask[i, width - len(r) :] = 1
    return ids, mask


def nucleus(probs: torch.Tensor, top_p: float, candidates: int = 1024) -> torch.Tensor:
    """Zero every token outside the smallest set of most likely tokens whose mass reaches top_p.

    Sorting a 50k–150k vocabulary every step is slow on a CPU; the nucleus almost always lies within
    the `candidates` most likely tokens, so those are sorted (topk) and the full sort is kept for rows
    whose top candidates do not reach top_p. The first token always stays.
    """
    k = min(candidates, probs.shape[-1])
    top_probs, order = probs.topk(k, dim=-1)  # (N, k), sorted descending
    if bool((top_probs.sum(-1) < top_p).any()):
        top_probs, order = probs.sort(dim=-1, descending=True)  # (N, V)
    mass_before = top_probs.cumsum(dim=-1) - top_probs  # (N, k)
    top_probs = top_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, top_probs)  # (N, V), unnormalised


def sample_tokens(
    logits: torch.Tensor,  # (N, V)
    temperature: float,
    top_p: float,
    generator: torch.Generator | None = None,
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
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device)
    tokens = (
        torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    )  # (N,)
    return tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1)


class StopWatcher:
    """Finds stop strings and a second `<think>` in each row's text as it grows, one token at a time.

    Only the tail that a new token can complete is searched, so the cost per step is constant.
    """

    def __init__(self, n_rows: int, stop_strings: Sequence[str], one_think: bool):
        self.stop_strings = [s for s in stop_strings if s]
        self.one_think = one_think
        longest = max([len(s) for s in self.stop_strings] + [len(THINK_CLOSE)])
        self.overlap = longest - 1  # a match ending in the new piece starts at most this far back
        self.texts = [""] * n_rows
        self.think_closed_at = [-1] * n_rows  # char offset just after the first </think>, -1 before

    def update(self, row: int, piece: str) -> str | None:
        """Append a decoded token to `row`; return why the row must stop, or None."""
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


class NonFiniteLogits(RuntimeError):
    """The policy's next-token logits are NaN or infinite in a row that holds a real sequence."""

    def __init__(self, model, rows: list[int], step: int):
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


@torch.no_grad()
def rollout(
    model,
    tokenizer,
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
) -> Rollout:
    """Sample `group_size` completions for each prompt (token ids, chat template already applied).

    Three savings that do not change what is sampled: each prompt is prefilled once and its KV cache
    shared by its G samples; a row that has finished leaves the batch (and the cache) at once, so no
    step is spent on padding; the KV cache is allocated once (`grpo.kv_cache`, `preallocate=False`
    falls back to the model's own growing cache).
    """
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    G = group_size
    unique_ids, unique_mask = left_pad(prompts, pad_id, device)  # (n_prompts, P)
    prompt_ids = unique_ids.repeat_interleave(G, dim=0)  # (N, P): G copies of each prompt, contiguous
    prompt_mask = unique_mask.repeat_interleave(G, dim=0)  # (N, P)
    n = prompt_ids.shape[0]
    stop_ids = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)

    # prefill each prompt once, then give each of its G samples a copy of its cache
    cache_kw = cache_argument(model)
    cache = make_rollout_cache(model, n, unique_ids.shape[1] + max_new_tokens) if preallocate else None
    position_ids = (unique_mask.cumsum(-1) - 1).clamp(min=0)  # (n_prompts, P)
    out = model(
        input_ids=unique_ids,
        attention_mask=unique_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **({cache_kw: cache} if cache is not None else {}),
    )
    cache = returned_cache(out)
    if cache is not None:
        cache.batch_repeat_interleave(G)
    logits = out["logits"][:, -1].repeat_interleave(G, dim=0)  # (N, V)
    next_position = (position_ids[:, -1] + 1).repeat_interleave(G)  # (N,)
    # the attention mask of every step, allocated once: prompt mask, then ones; step t reads P + t + 1 columns
    full_mask = torch.cat([prompt_mask, prompt_mask.new_ones((n, max_new_tokens))], dim=1)  # (N, P + T)
    P = prompt_mask.shape[1]

    completion_ids = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=device)
    completion_mask = torch.zeros((n, max_new_tokens), dtype=torch.long, device=device)
    sample_logp = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=device)
    finish_reasons = ["length"] * n
    watcher = StopWatcher(n, stop_strings, one_think)
    alive = torch.arange(n, device=device)  # (n_alive,) the row of the output each batch row writes to

    # one step = one new token for every row still running
    bar = tqdm(total=max_new_tokens, desc="rollout", unit="step", leave=False, disable=not progress)
    steps = 0
    for t in range(max_new_tokens):
        bar.update(1)
        broken = ~torch.isfinite(logits).all(dim=-1)  # (n_alive,) a NaN logit would sample the last id
        tokens, logp = sample_tokens(logits, temperature, top_p, generator)  # (n_alive,), (n_alive,)
        completion_ids[alive, t] = tokens
        completion_mask[alive, t] = 1
        sample_logp[alive, t] = logp
        steps = t + 1

        # which rows end with this token: an end-of-turn id, else a stop string in the decoded text
        # (one transfer to the host for both checks)
        is_eos, is_broken = torch.stack([torch.isin(tokens, stop_ids), broken]).tolist()
        if any(is_broken):
            raise NonFiniteLogits(model, [alive[i].item() for i, b in enumerate(is_broken) if b], t)
        pieces = tokenizer.batch_decode(tokens.unsqueeze(-1).tolist(), skip_special_tokens=False)
        keep = []
        for i, (row, piece) in enumerate(zip(alive.tolist(), pieces, strict=True)):
            reason = "eos" if is_eos[i] else watcher.update(row, piece)
            if reason is None:
                keep.append(i)
            else:
                finish_reasons[row] = reason
        if not keep or t == max_new_tokens - 1:
            break
        if len(keep) < len(alive):  # finished rows leave the batch and the cache
            keep_t = torch.tensor(keep, device=device)
            alive, tokens, full_mask, next_position = (
                alive[keep_t],
                tokens[keep_t],
                full_mask[keep_t],
                next_position[keep_t],
            )
            if cache is not None:
                cache.batch_select_indices(keep_t)

        out = model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=full_mask[:, : P + t + 1],
            position_ids=next_position.unsqueeze(-1),
            use_cache=True,
            **{cache_kw: cache},
        )
        cache, logits = returned_cache(out), out["logits"][:, -1]
        next_position = next_position + 1

    bar.close()
    completion_ids = completion_ids[:, :steps]
    completion_mask = completion_mask[:, :steps]
    sample_logp = sample_logp[:, :steps]
    texts = decode_completions(tokenizer, completion_ids, completion_mask, stop_token_ids)
    return Rollout(
        prompt_ids,
        prompt_mask,
        completion_ids,
        completion_mask,
        sample_logp,
        texts,
        finish_reasons,
    )


def decode_completions(tokenizer, completion_ids, completion_mask, stop_token_ids) -> list[str]:
    """Decode each row's generated tokens, leaving out padding and end-of-turn tokens."""
    stop = set(stop_token_ids)
    rows = []
    for ids, mask in zip(completion_ids.tolist(), completion_mask.tolist(), strict=True):
        rows.append([i for i, m in zip(ids, mask, strict=True) if m and i not in stop])
    return tokenizer.batch_decode(rows, skip_special_tokens=False)
