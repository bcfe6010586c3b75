"""Rewards that are not a task's rules: the logprob reward and its normalisations.

The logprob reward (the poster's idea) asks how much the model's own reasoning helps it state the gold
answer. For completion i with reasoning r_i (cut right after its first `</think>`), prompt p and gold
answer a of |a| tokens, teacher-forced:

    R_i = log P(a | p, r_i) = Σ_{k=1}^{|a|} log π(a_k | p, r_i, <answer>, a_<k)

The scored sequence is built from token ids, `prompt + reasoning + ids("\n") + ids("<answer>") + ids(a) +
ids("</answer>")`, never by re-tokenising one joined string (a joined string can merge tokens across a
boundary and change which tokens count as the answer), and only the ids of a are summed. The line break
between `</think>` and `<answer>` is what a model following the format writes there (`answer_separator`: what
the chat template writes after `</think>`, Qwen3's "\n\n", else "\n").
The closer is there for the shape of the sequence; causal attention means it cannot change the sum.

`logprob_rewards` is the whole reward a `--reward logprob` step trains on: these scores, normalised, weighted
and added to the format reward.

Normalisations, applied in this order by `normalised_logprob`, each optional (pure torch, no model):

    length:  R_i / |a|                 (mean log-prob per gold token; stops long answers dominating)
    exp:     exp(R_i / |a|) ∈ (0, 1]   (geometric-mean probability of a gold token)
    batch:   (R − mean_B R) / std_B R  (zscore)   or   (R − min_B R) / (max_B R − min_B R)   (minmax)

over the batch B of every completion of the step (64 in the poster: 16 prompts × G 4). The poster found
length + min-max the most stable; it is the default. Then, in `grpo.loss.group_advantages`, A_i = R_i − mean_group R.

Departures from the poster's code, on purpose:
- no abs(): its code took |log P| before min-max, which ranks a *less* likely gold answer higher;
  here a more likely gold answer always gets a higher reward (tests/test_normalisations.py and tests/test_logprob_reward.py pin it);
- a completion that never closes `</think>` is still scored, with its completion up to its first
  `<answer>` or `</answer>` as reasoning and `</think>` appended, so a small model that has not yet learned the tags gets a dense signal
  (`unclosed="score"`); `unclosed="batch_min"` gives such completions the lowest reward of the batch instead,
  and `unclosed="bar_early_answer"` only those that wrote an answer tag without closing `</think>` (their
  reasoning is cut before the answer, so an `<answer>` written at once would otherwise score as no reasoning);
- a completion whose reasoning is shorter than `min_reasoning_tokens` gets the lowest reward of the batch, a
  guard against the collapse to an empty `<think></think>` that a small model's unhelpful reasoning invites
  (the reward then prefers no reasoning to its reasoning; see the README's "Choices");
- optional debiasing (off by default, as in RLPR and VR-CLI): R_i − log P(a | p, empty reasoning), the
  credit for what the reasoning adds over answering straight away; computed in the same batched pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from grpo.config import BATCH_NORMALISATIONS, UNCLOSED, BatchNorm, Unclosed
from grpo.distributed import all_gather
from grpo.logprobs import left_pad, token_logprobs
from grpo.precision import autocast
from grpo.reasoning import ReasoningSpan, reasoning_ids, reasoning_span
from grpo.tags import ANSWER_CLOSE, ANSWER_OPEN, ANSWER_SEPARATOR, THINK_CLOSE, THINK_OPEN

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from grpo.models import CausalLM

# ---------------------------------------------------------------- the batch normalisation (pure torch)


def batch_normalise(rewards: torch.Tensor, method: str) -> torch.Tensor:
    """Rescale over the whole batch. An all-equal batch carries no ranking and maps to zeros, never NaN.

    A non-finite reward (NaN, ±inf: a scoring function that broke on one row) is left out of the batch's
    statistics and stays non-finite, so that one bad row cannot turn every reward into NaN;
    `grpo.loss.group_advantages` then gives it no advantage.
    """
    if method not in BATCH_NORMALISATIONS:
        raise ValueError(f"unknown batch normalisation {method!r}; choose one of {BATCH_NORMALISATIONS}")
    finite = torch.isfinite(rewards)  # (N,)
    if method == "none" or not bool(finite.any()):
        return rewards
    valid = rewards[finite]  # (n_finite,)
    if valid.amax() == valid.amin():  # not `std == 0`: the mean of equal floats can carry a residue
        return torch.where(finite, torch.zeros_like(rewards), rewards)
    if method == "zscore":
        # (R − mean_B R) / std_B R
        return (rewards - valid.mean()) / valid.std(unbiased=False)
    # minmax: (R − min_B R) / (max_B R − min_B R) ∈ [0, 1]
    return (rewards - valid.min()) / (valid.max() - valid.min())


# ---------------------------------------------------------------- the logprob reward


@dataclass
class GoldScores:
    logp_sum: torch.Tensor  # (N,) log P(a | p, r_i), summed over the gold tokens
    gold_tokens: torch.Tensor  # (N,) |a|
    empty_logp_sum: torch.Tensor | None  # (N,) log P(a | p, empty reasoning), when asked for


def answer_separator(tokenizer: PreTrainedTokenizerBase) -> str:
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
    try:  # (typed as in grpo.rollout.build_prompt: one conversation, tokenize=False, renders as one str)
        text = cast(str, tokenizer.apply_chat_template(turn, tokenize=False))
    except Exception:  # no template, or one that refuses this turn: the format's own default
        return ANSWER_SEPARATOR
    end, at = text.rfind(THINK_CLOSE), text.rfind(marker)
    between = text[end + len(THINK_CLOSE) : at] if 0 <= end < at else ""
    return between if between and not between.strip() else ANSWER_SEPARATOR


def _score_rows(
    model: CausalLM,
    prompts: list[list[int]],
    rests: list[list[int]],  # reasoning + <answer> + gold + </answer>
    gold_lengths: list[int],
    tail: int,
    pad_id: int,
    group_size: int,
) -> torch.Tensor:
    """Σ log π over each row's gold span, which ends `tail` tokens before the row's end. One forward.

    Layout: the prompts left-padded in the first P columns, then the rests left-padded in the last R:
    every gold span ends in the same column, and rows with the same prompt hold it in the same columns,
    so a group's prompt runs through the model once (`token_logprobs(shared_prefix=P)`). The padding in
    the middle is masked out and skipped by the position ids.
    """
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = left_pad(prompts, pad_id, device)  # (n, P)
    rest_ids, rest_mask = left_pad(rests, pad_id, device)  # (n, R)
    ids, mask = torch.cat([prompt_ids, rest_ids], dim=1), torch.cat([prompt_mask, rest_mask], dim=1)  # (n, L)
    length = ids.shape[1]
    start = length - tail - max(gold_lengths)
    logp = token_logprobs(
        model, ids, mask, start, group_size=group_size, shared_prefix=prompt_ids.shape[1]
    )  # (n, L − start)
    position = torch.arange(start, length, device=device)  # (L − start,)
    gold_start = torch.tensor([length - tail - g for g in gold_lengths], device=device)  # (n,)
    gold_mask = (position[None, :] >= gold_start[:, None]) & (
        position[None, :] < length - tail
    )  # (n, L − start)
    # torch.where, not a product: a non-finite log-prob outside the gold span must not leak in as inf · 0
    return torch.where(gold_mask, logp, torch.zeros_like(logp)).sum(dim=1)  # (n,)


@torch.no_grad()
def gold_answer_logprobs(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],  # one per completion
    reasoning_ids: Sequence[Sequence[int]],  # one per completion, ending in </think>
    golds: Sequence[str],  # one per completion
    *,
    micro_batch_size: int,
    with_empty_reasoning: bool = False,
    group_size: int = 1,
    full_precision: bool = True,
    separator: str | None = None,
) -> GoldScores:
    """Teacher-forced log P(gold | prompt, reasoning) for every completion, a micro-batch per forward, in
    the weights' own precision (float32 by default) whatever autocast block encloses it
    (`full_precision=False` leaves the caller's autocast on: tools.gpu_check measures what that would cost).

    With `with_empty_reasoning`, each distinct (prompt, gold) is also scored after an empty reasoning
    (`</think>` straight after the prompt's `<think>`), in the same batched passes. Each row is scored
    as `prompt + reasoning + separator + "<answer>" + gold + "</answer>"`, built from ids. With `group_size=G`,
    consecutive rows come in groups of G with the same prompt (a rollout's layout), which then runs once.
    `separator`: what follows `</think>` (None: `answer_separator(tokenizer)`, which a run finds once).
    """
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    # "\n<answer>": what a model following the format writes after </think> (its template's separator)
    opener = encode(answer_separator(tokenizer) if separator is None else separator) + encode(ANSWER_OPEN)
    closer, close_think = encode(ANSWER_CLOSE), encode(THINK_CLOSE)
    gold_ids = {g: encode(g) for g in set(golds)}
    prompts = [list(p) for p in prompt_ids]
    rests = [list(r) + opener + gold_ids[g] + closer for r, g in zip(reasoning_ids, golds, strict=True)]
    gold_lengths = [len(gold_ids[g]) for g in golds]
    if any(n == 0 for n in gold_lengths):
        raise ValueError("an empty gold answer cannot be scored")

    empty_index: dict[tuple, int] = {}
    if with_empty_reasoning:
        for p, g in zip(prompt_ids, golds, strict=True):
            key = (tuple(p), g)
            if key not in empty_index:
                empty_index[key] = len(rests)
                prompts.append(list(p))
                rests.append(close_think + opener + gold_ids[g] + closer)
                gold_lengths.append(len(gold_ids[g]))

    sums = []
    # float32 even inside a bf16 autocast block: bf16 moves these log-probs by as much as the reward's
    # differences within a group (grpo.precision)
    off = autocast(next(model.parameters()).device, enabled=False)  # (a block with autocast off)
    with off if full_precision else contextlib.nullcontext():
        for i in range(0, len(rests), micro_batch_size):
            chunk = slice(i, i + micro_batch_size)
            sums.append(
                _score_rows(
                    model,
                    prompts[chunk],
                    rests[chunk],
                    gold_lengths[chunk],
                    len(closer),
                    tokenizer.pad_token_id,
                    group_size,
                )
            )
    logp_sum = torch.cat(sums)  # (N + n_empty,)
    n = len(golds)
    empty = None
    if with_empty_reasoning:
        empty = torch.stack(
            [logp_sum[empty_index[(tuple(p), g)]] for p, g in zip(prompt_ids, golds, strict=True)]
        )
    gold_tokens = torch.tensor(gold_lengths[:n], device=logp_sum.device, dtype=logp_sum.dtype)
    return GoldScores(logp_sum[:n], gold_tokens, empty)


def normalised_logprob(
    scores: GoldScores,
    closed: torch.Tensor,  # (N,) bool: the completion closed its </think>
    *,
    length_norm: bool = True,
    exp: bool = False,
    batch_norm: BatchNorm = "minmax",
    debias: bool = False,
    unclosed: Unclosed = "score",
    too_short: torch.Tensor | None = None,  # (N,) bool: reasoning shorter than the run's minimum
    answered: torch.Tensor | None = None,  # (N,) bool: unclosed, but wrote an answer tag (bar_early_answer)
) -> torch.Tensor:
    """The normalised logprob reward (N,), in the order length → exp → batch (see the module docstring).

    Completions barred from competing on their score (too short a reasoning; with `unclosed="batch_min"`,
    no `</think>`; with `unclosed="bar_early_answer"`, an answer tag written before any `</think>`) get the
    lowest reward of the completions that may, before the batch normalisation.
    """
    rewards = scores.logp_sum  # (N,) log P(a | p, r_i)
    if debias:
        if scores.empty_logp_sum is None:
            raise ValueError("debias needs the empty-reasoning scores (with_empty_reasoning=True)")
        # log P(a | p, r_i) − log P(a | p, ∅): what the reasoning adds
        rewards = rewards - scores.empty_logp_sum
    if length_norm:  # R_i / |a|: the mean log-prob of a gold token (a length of 0 counts as 1)
        rewards = rewards / scores.gold_tokens.clamp(min=1)  # (N,)
    if exp:  # exp(R_i / |a|) ∈ (0, 1] when R_i is a length-normalised log-prob
        rewards = torch.exp(rewards)  # (N,)
    if unclosed not in UNCLOSED:
        raise ValueError(f"unknown unclosed policy {unclosed!r}; choose one of {UNCLOSED}")
    # barred rows take the lowest reward of the rated ones: R_i ← min_{j rated} R_j, then the batch norm
    barred = torch.zeros_like(closed) if too_short is None else too_short.clone()  # (N,) bool
    if unclosed == "batch_min":
        barred |= ~closed
    if unclosed == "bar_early_answer":
        if answered is None:
            raise ValueError("unclosed='bar_early_answer' needs `answered`")
        barred |= ~closed & answered
    rated = ~barred & torch.isfinite(rewards)
    if bool(barred.any()) and bool(rated.any()):
        rewards = torch.where(barred, rewards[rated].min(), rewards)
    return batch_normalise(rewards, batch_norm)


@dataclass
class CompletionGoldScores:
    scores: GoldScores  # log P(gold | prompt, reasoning) of every completion (and after an empty reasoning)
    closed: torch.Tensor  # (N,) bool: the completion closed its </think>
    answered: torch.Tensor  # (N,) bool: never closed, but wrote an answer tag (its reasoning cut before it)
    reasoning_tokens: torch.Tensor  # (N,) tokens of the scored reasoning, </think> included


def gold_scores_of_completions(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],  # one per completion
    completion_ids: torch.Tensor,  # (N, C) right-padded
    completion_mask: torch.Tensor,  # (N, C)
    golds: Sequence[str],  # one per completion
    *,
    stop_token_ids: Sequence[int],
    micro_batch_size: int,
    with_empty_reasoning: bool = False,
    group_size: int = 1,
    spans: Sequence[ReasoningSpan] | None = None,
    full_precision: bool = True,
    separator: str | None = None,
) -> CompletionGoldScores:
    """log P(gold | prompt, the reasoning of each sampled completion), the context built one way for all.

    The trainer's logprob reward and the held-out evaluation both call this, so what evaluation
    measures is exactly what training optimises: the reasoning cut after its first `</think>` (or, when
    never closed, before its own answer, with `</think>` appended; `grpo.reasoning.reasoning_ids`), then
    the separator + `"<answer>" + gold + "</answer>"`. `spans` (from `grpo.reasoning.reasoning_mask`) saves finding
    each reasoning's end again; `separator` as in `gold_answer_logprobs`.
    """
    lengths = completion_mask.sum(1).tolist()
    rows = [ids[:n] for ids, n in zip(completion_ids.tolist(), lengths, strict=True)]
    if spans is None:
        spans = [reasoning_span(tokenizer, ids, stop_token_ids) for ids in rows]
    reasonings = [reasoning_ids(tokenizer, ids, span) for ids, span in zip(rows, spans, strict=True)]
    scores = gold_answer_logprobs(
        model,
        tokenizer,
        prompt_ids,
        reasonings,
        golds,
        micro_batch_size=micro_batch_size,
        with_empty_reasoning=with_empty_reasoning,
        group_size=group_size,
        full_precision=full_precision,
        separator=separator,
    )
    device = scores.logp_sum.device
    return CompletionGoldScores(
        scores,
        torch.tensor([span.end is not None for span in spans], device=device),
        torch.tensor([span.answer_at is not None for span in spans], device=device),
        torch.tensor([float(len(r)) for r in reasonings], device=device),
    )


# what a logprob step logs beside the reward's parts (metrics.jsonl: <name>_mean, <name>_std), not parts of it:
# the score before its normalisation, per gold token, the gold's length, the scored reasoning's length, whether
# it closed </think>, answered early or fell under the length guard, and (debias) the score after no reasoning
LOGPROB_SIGNALS = ("logprob_raw", "logprob_per_token", "gold_tokens", "reasoning_tokens", "think_closed",
                   "early_answer", "reasoning_too_short", "logprob_empty_reasoning")  # fmt: skip


@dataclass(frozen=True)
class LogprobRewardOptions:
    """What `logprob_rewards` reads besides the batch: the run's options of the same names (grpo.config.Config)
    and the tokenizer's answer separator."""

    length_norm: bool
    exp_norm: bool
    batch_norm: BatchNorm
    debias: bool
    unclosed: Unclosed
    min_reasoning_tokens: int
    logprob_weight: float
    format_weight: float
    separator: str  # what the model's chat template writes after </think> (`answer_separator`)

    @classmethod
    def of(cls, config: Any, tokenizer: PreTrainedTokenizerBase) -> LogprobRewardOptions:
        """The run's options, and the separator its tokenizer's template writes (rendered once, here)."""
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.name != "separator"}
        return cls(**fields, separator=answer_separator(tokenizer))


def logprob_rewards(
    scorer: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],  # (N,) the prompt of each completion
    completion_ids: torch.Tensor,  # (N, C) right-padded
    completion_mask: torch.Tensor,  # (N, C)
    golds: Sequence[str],  # (N,) the gold answer of each completion
    formats: torch.Tensor,  # (N,) the format reward of each completion
    options: LogprobRewardOptions,
    *,
    stop_token_ids: Sequence[int],
    spans: Sequence[ReasoningSpan],  # (N,) each completion's reasoning (grpo.reasoning.reasoning_mask)
    micro_batch_size: int,  # rows per scoring pass
    group_size: int = 1,  # completions per prompt, consecutive: each group's prompt is run once
    rank: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The reward `--reward logprob` trains on, (N,) on the CPU, with its parts (format, logprob) and the
    signals logged beside them (LOGPROB_SIGNALS), each name → (N,):

        R_i = w_lp · norm(log P(a | p, r_i)) + w_fmt · format_i          (the poster: w_lp 0.9, w_fmt 0.1)

    log P(a | p, r_i) is scored by `scorer` (the frozen reference by default, so the target stays fixed);
    norm is `normalised_logprob`'s length → exp → batch normalisation, with the length guard. The batch statistics
    are over every completion of the step on every rank (`all_gather`); this rank's rows come back.
    """
    c = options
    scorer.eval()
    # log P(gold | prompt, reasoning_i), the context built as evaluation builds it
    gold = gold_scores_of_completions(
        scorer,
        tokenizer,
        prompt_ids,
        completion_ids,
        completion_mask,
        golds,
        stop_token_ids=stop_token_ids,
        micro_batch_size=micro_batch_size,
        with_empty_reasoning=c.debias,
        group_size=group_size,
        spans=spans,
        separator=c.separator,
    )
    scores = gold.scores
    too_short = gold.reasoning_tokens < c.min_reasoning_tokens  # (N,) bool: the length guard's rows
    n = len(golds)
    everyone = GoldScores(
        all_gather(scores.logp_sum),
        all_gather(scores.gold_tokens),
        None if scores.empty_logp_sum is None else all_gather(scores.empty_logp_sum),
    )
    normalised = normalised_logprob(
        everyone,
        all_gather(gold.closed),
        length_norm=c.length_norm,
        exp=c.exp_norm,
        batch_norm=c.batch_norm,
        debias=c.debias,
        unclosed=c.unclosed,
        too_short=all_gather(too_short),
        answered=all_gather(gold.answered),
    )[rank * n : (rank + 1) * n].cpu()
    rewards = c.logprob_weight * normalised + c.format_weight * formats
    parts = {"format": formats, "logprob": normalised}  # what R_i is made of
    signals = {  # what the metrics read the reward by (LOGPROB_SIGNALS)
        "logprob_raw": scores.logp_sum.cpu(),
        "logprob_per_token": (scores.logp_sum / scores.gold_tokens).cpu(),
        "gold_tokens": scores.gold_tokens.cpu(),
        "reasoning_tokens": gold.reasoning_tokens.cpu(),
        "think_closed": gold.closed.float().cpu(),
        "early_answer": gold.answered.float().cpu(),
        "reasoning_too_short": too_short.float().cpu(),
    }
    if scores.empty_logp_sum is not None:
        signals["logprob_empty_reasoning"] = scores.empty_logp_sum.cpu()
    return rewards, parts, signals
