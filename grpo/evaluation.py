"""Held-out evaluation: one completion per test example, scored by the task's own rules and by the gold
answer's likelihood, with 95% CIs.

    for each batch of test examples:
        prompt = chat template + the "<think>" prefill        (grpo.rollout.build_prompt, as in training)
        one completion per prompt, group_size 1                (grpo.rollout)
        response = "<think>" + completion, scored by the task  (task.score_batch: parts and total)
        log P(gold | prompt, reasoning), teacher-forced        (grpo.rewards.gold_scores_of_completions)
    report = mean and 95% CI of each part, the total, each likelihood figure; the task score; every record

The task score is the number in the poster's table, each task's own (`Task.report_score`): Countdown's is
mean(format, equation), poetry's the weighted total. Both equal the mean of the per-example totals (Countdown's total is (format + equation) / 2),
so `total`'s interval is also the score's.

The likelihood figures measure what `--reward logprob` optimises, with the context built by the same function
as in training (the reasoning r cut after its first `</think>`, then the separator the chat template writes
there (one line break for SmolLM2, two for Qwen3: `grpo.rewards.answer_separator`), `<answer>`, the gold
answer and `</answer>`), for the gold answer a of |a| tokens and the prompt p, in nats:

    gold_logprob                 = log P(a | p, r) = Σ_k log π(a_k | p, r, <answer>, a_<k)
    gold_logprob_per_token       = gold_logprob / |a|
    gold_logprob_empty           = log P(a | p, ∅)   (∅: `</think>` right after the prompt's `<think>`)
    gold_logprob_empty_per_token = gold_logprob_empty / |a|
    reasoning_gain_per_token     = gold_logprob_per_token − gold_logprob_empty_per_token   (what r adds)

and, to read them by, gold_tokens |a|, think_closed (1 if the completion closed its `</think>`) and
reasoning_tokens (the scored reasoning, `</think>` included). A small model's rule scores can stay at 0
while its likelihood of the gold answer moves; these figures show whether logprob training changed what it
optimises. They cost one more forward pass (two rows per example: after r and after ∅); `likelihood=False`
skips it. By default the evaluated model scores its own completions; `scorer` (evaluate.py --scorer) scores
them with another model instead, e.g. the untrained one: then two reports judged by the same fixed model
differ only by what the reasonings say, which is what a run trained with `--scorer reference` optimises.

Where this departs from, or adds to, the poster:
- The poster does not say how it sampled at evaluation. The defaults (temperature 0.6, top-p 0.95) are
  Qwen3's recommended thinking-mode settings; `greedy=True` gives a number that does not depend on the seed.
- The poster gives no intervals. Here every mean of n ≥ 2 values has a 95% interval with Student's t
  (`grpo.statistics.mean_ci`; none below n = 2): for a 0/1 part it is the Wald interval, too narrow near 0 and 1 (zero width
  at exactly 0 or 1) and not clipped to [0, 1]; at small sizes read it as a rough error bar.
- The test split must not overlap the train split: `evaluate_model` refuses to score when an example id or
  a gold answer (whitespace and case ignored; the jsonl task: a prompt) is in both, since the score would
  then measure memorisation.
- Two runs are compared example by example (`grpo.reports.compare_reports`): the interval of the paired difference
  mean(B − A) leaves out how hard each example is, which the two reports' own intervals both carry.

`evaluate.py` is the command line over this module. Responses files written by any other system are read
in `tasks/responses.py` (`score_responses_file`, no policy model loaded); the summaries, the poster's table,
the layout of a comparison and the report files in `grpo/reports.py`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from grpo.models import stop_token_ids
from grpo.precision import autocast as autocast_block
from grpo.reasoning import answer_start
from grpo.rewards import gold_scores_of_completions
from grpo.rollout import Rollout, build_prompt, rollout
from grpo.statistics import mean_ci
from grpo.tags import THINK_CLOSE, THINK_OPEN
from grpo.task import Example, Task, text_key

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from grpo.models import CausalLM

# ----------------------------------------------------------------------------------------------------
# Records and reports

# keys every record has; an example's own data fields (nums, target, poem_start, …) sit between them
RECORD_KEYS = ("index", "id", "gold", "response", "total", "parts", "likelihood")
# a record's `likelihood` (evaluate_model, see the module docstring): log-probs in nats, then counts
LIKELIHOOD_FIGURES = (
    "gold_logprob",
    "gold_logprob_per_token",
    "gold_logprob_empty",
    "gold_logprob_empty_per_token",
    "reasoning_gain_per_token",
    "gold_tokens",
    "think_closed",
    "reasoning_tokens",
    "reasoning_short",
    "early_answer",
    "reasoning_distinct_trigrams",
    "reasoning_repetitive",
)
# a scored reasoning shorter than this (</think> included) counts as short: the length guard's default, under
# which a reasoning barely says anything (a prompt's `<think>` then `</think>` alone is 4 tokens for SmolLM2)
SHORT_REASONING_TOKENS = 16
# a scored reasoning whose word trigrams are under this share distinct says little at length ("I'm thinking of
# the words and the words because I'm thinking of the words…"): a likelihood gain that comes with more of these
# is the reasoning emptied of what it said, which a length figure alone does not show (the untrained model's
# Countdown reasonings: 0.92 distinct on average, 2 % under 0.5; trained to filler, 87 %)
REPETITIVE_TRIGRAMS = 0.5


def distinct_trigrams(text: str) -> float:
    """The share of distinct word trigrams (whitespace-split words) among all of `text`'s; 1.0 under 3 words.

    "a b c a b c": trigrams abc, bca, cab, abc, 3 distinct of 4 → 0.75.
    """
    words = text.split()
    trigrams = list(zip(words, words[1:], words[2:], strict=False))  # len(words) − 2 of them
    return len(set(trigrams)) / len(trigrams) if trigrams else 1.0


def repetition_figures(response: str) -> dict[str, float | int]:
    """How repetitive a response's scored reasoning is: its text up to its first `</think>`, or, unclosed, up
    to its first answer tag (what the reward scores, `grpo.reasoning.reasoning_span`)."""
    closed = response.find(THINK_CLOSE)
    cut = closed if closed >= 0 else answer_start(response)
    share = distinct_trigrams(response if cut is None else response[:cut])
    return {"reasoning_distinct_trigrams": share, "reasoning_repetitive": int(share < REPETITIVE_TRIGRAMS)}


def score_records(
    task: Task, examples: Sequence[Example], responses: Sequence[str], start: int = 0
) -> list[dict[str, Any]]:
    """Score each response (the text from `<think>` on) with the task; one record per example.

    A record holds the example's index (counted from `start`), id, data fields and gold answer, the
    response, the total and the parts. It is itself a valid line of a responses file,
    so a report's records can be scored again by `evaluate.py --responses`.
    """
    if not examples:
        return []
    rewards = task.score_batch(examples, responses)
    records = []
    for i, (example, response, reward) in enumerate(zip(examples, responses, rewards, strict=True)):
        record: dict[str, Any] = {"index": start + i, "id": example.id}
        record.update((key, value) for key, value in example.data.items() if key not in RECORD_KEYS)
        record.update(
            gold=example.gold,
            response=response,
            total=float(reward.total),
            parts={name: float(value) for name, value in reward.parts.items()},
        )
        records.append(record)
    return records


def build_report(
    task: Task,
    records: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    errors: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Summarise scored records: every part's mean with its CI, the total with its CI, the task score, and
    each likelihood figure's mean with its CI when records carry them (over those records).

    `errors` are the inputs that could not be scored ({"line": …, "message": …}); they count in n_errors,
    not in the means.
    """
    part_names = list(dict.fromkeys(name for record in records for name in record["parts"]))
    parts = {
        name: mean_ci(record["parts"][name] for record in records if name in record["parts"])
        for name in part_names
    }
    total = mean_ci(record["total"] for record in records)
    score = task.report_score({name: ci["mean"] for name, ci in parts.items()}, total["mean"])  # Task's own
    scored = [record["likelihood"] for record in records if record.get("likelihood")]
    likelihood = {name: mean_ci(f[name] for f in scored if name in f) for name in LIKELIHOOD_FIGURES}
    return {
        "task": task.name,
        "name": settings.get("name"),
        "score": score,
        "total": total,
        "parts": parts,
        **({"likelihood": likelihood} if scored else {}),  # only where the records were scored for it
        "n": len(records),
        "n_errors": len(errors),
        "settings": dict(settings),
        "errors": [dict(error) for error in errors],
        "records": [dict(record) for record in records],
    }


# ----------------------------------------------------------------------------------------------------
# Generating and scoring with a model


class SplitOverlapError(ValueError):
    """The test split shares examples with the train split."""


def check_disjoint(
    test_examples: Sequence[Example],
    train_examples: Sequence[Example],
    train_ids: Iterable[str] = (),
    key: Callable[[Example], str] = lambda example: example.gold,
    field: str = "gold answer",
) -> None:
    """Raise SplitOverlapError if a test example's id, or its `key` (the task's `overlap_key`: by default
    the gold answer), is also in the train split.

    Keys are compared with case and whitespace ignored; empty ones are not compared. For Countdown a gold
    expression fixes the numbers and the target, so equal golds mean the same problem; for poetry it is the
    ending of the poem; the jsonl task's short answers repeat across examples, so it keys on the prompt.
    """
    ids = {ex.id for ex in train_examples} | set(train_ids)
    golds = {text_key(key(ex)) for ex in train_examples} - {""}
    shared_ids = [ex.id for ex in test_examples if ex.id in ids]
    shared_golds = [ex.id for ex in test_examples if text_key(key(ex)) in golds]
    if shared_ids or shared_golds:
        found = []
        if shared_ids:
            found.append(f"{len(shared_ids)} example id(s) ({', '.join(map(repr, shared_ids[:3]))})")
        if shared_golds:
            found.append(
                f"the {field} of {len(shared_golds)} test example(s) ({', '.join(map(repr, shared_golds[:3]))})"
            )
        raise SplitOverlapError(
            f"the test split overlaps the train split: {' and '.join(found)} are in both; "
            "a score on them would measure memorisation"
        )


@torch.no_grad()
def likelihood_figures(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],  # one per completion
    out: Rollout,  # a group-size-1 rollout of `prompts`
    golds: Sequence[str],  # one per completion
    *,
    stop_ids: Sequence[int],
    micro_batch_size: int,
) -> list[dict[str, float | int] | None]:
    """Each completion's likelihood figures (LIKELIHOOD_FIGURES), scored as the trainer scores its logprob
    reward; None for an example whose gold answer is empty (it has no token to score)."""
    scored = [i for i, gold in enumerate(golds) if gold]
    figures: list[dict[str, float | int] | None] = [None] * len(golds)
    if not scored:
        return figures
    gold = gold_scores_of_completions(
        model,
        tokenizer,
        [prompts[i] for i in scored],
        out.completion_ids[scored],  # (n, C)
        out.completion_mask[scored],  # (n, C)
        [golds[i] for i in scored],
        stop_token_ids=stop_ids,
        micro_batch_size=micro_batch_size,
        with_empty_reasoning=True,
        group_size=1,
    )
    assert gold.scores.empty_logp_sum is not None  # (with_empty_reasoning=True)
    columns = zip(
        scored,
        gold.scores.logp_sum.tolist(),  # log P(a | p, r)
        gold.scores.empty_logp_sum.tolist(),  # log P(a | p, ∅)
        gold.scores.gold_tokens.tolist(),  # |a|
        gold.closed.tolist(),
        gold.answered.tolist(),
        gold.reasoning_tokens.tolist(),
        strict=True,
    )
    for i, logp, empty_logp, n_gold, closed, answered, n_reasoning in columns:
        figures[i] = {
            "gold_logprob": logp,
            "gold_logprob_per_token": logp / n_gold,  # log P(a | p, r) / |a|
            "gold_logprob_empty": empty_logp,
            "gold_logprob_empty_per_token": empty_logp / n_gold,  # log P(a | p, ∅) / |a|
            "reasoning_gain_per_token": logp / n_gold - empty_logp / n_gold,  # what the reasoning adds
            "gold_tokens": int(n_gold),
            "think_closed": int(closed),
            "reasoning_tokens": int(n_reasoning),
            # a reasoning that says (almost) nothing, and the format broken by answering inside <think>: a
            # likelihood gain that comes with more of these is the reasoning getting out of the way
            "reasoning_short": int(n_reasoning < SHORT_REASONING_TOKENS),
            "early_answer": int(answered),
        }
    return figures


@torch.no_grad()
def batch_records_of(
    task: Task,
    batch: Sequence[Example],
    prompts: Sequence[Sequence[int]],
    out: Rollout,
    *,
    start: int,
    scorer: CausalLM | None,
    tokenizer: PreTrainedTokenizerBase,
    stop_ids: Sequence[int],
    micro_batch_size: int,
) -> list[dict[str, Any]]:
    """The records of one batch's completions (`out`, one per example and its prompt), numbered from `start`:
    the task's scores; with a `scorer`, the likelihood figures and the response's repetition; then the
    lengths and how each completion ended."""
    # the response is what the model wrote from the prefilled <think> on, as in training
    responses = [THINK_OPEN + text for text in out.texts]
    records = score_records(task, batch, responses, start=start)
    if scorer is not None:
        golds = [ex.gold for ex in batch]
        figures = likelihood_figures(
            scorer, tokenizer, prompts, out, golds, stop_ids=stop_ids, micro_batch_size=micro_batch_size
        )
        for record, example_figures, response in zip(records, figures, responses, strict=True):
            if example_figures is not None:
                record["likelihood"] = {**example_figures, **repetition_figures(response)}
    lengths = out.completion_mask.sum(1).tolist()  # (n,) generated tokens, end-of-turn included
    for record, prompt, length, reason in zip(records, prompts, lengths, out.finish_reasons, strict=True):
        record.update(prompt_tokens=len(prompt), completion_tokens=int(length), finish_reason=reason)
    return records


def evaluate_model(
    model: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    *,
    split: str = "test",
    limit: int | None = None,
    temperature: float = 0.6,
    top_p: float = 0.95,
    greedy: bool = False,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    train_ids: Iterable[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    likelihood: bool = True,
    scorer: CausalLM | None = None,
    autocast: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Generate one completion per example of `split` (the first `limit`), score them, return the report.

    Each completion is scored by the task's rules and, with `likelihood`, by the gold answer's
    teacher-forced log-probability after its reasoning and after an empty one (`likelihood_figures`: one
    more forward pass; it draws nothing from the sampler, so the completions do not depend on it), by
    `scorer` if given (a model with the same tokenizer), else by the model itself.

    Sampling uses its own generator seeded with `seed`, so the result does not depend on, or disturb, the
    caller's random state; greedy = temperature 0. The split is first checked against the train split
    (`check_disjoint`; `train_ids` adds ids seen in training, e.g. from another data source). `settings`
    are recorded in the report beside the evaluation's own (name, model, device, …). The model is put in
    eval mode and given back in the mode it came in. `autocast`: generate under bf16 autocast (the
    likelihood figures are scored with autocast off, in the weights' own dtype, as the reward is:
    `grpo.precision`). `compile`: the rollout's compiled decode step (`grpo.decode.compile_decoding`).
    """
    split_examples = list(task.examples(split))
    if split != "train":
        train = task.examples("train")
        check_disjoint(split_examples, train, train_ids or (), key=task.overlap_key, field=task.overlap_field)
    examples = split_examples if limit is None else split_examples[:limit]

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    stop_ids = stop_token_ids(model, tokenizer)
    effective_temperature = 0.0 if greedy else temperature  # rollout's greedy is temperature 0
    records: list[dict[str, Any]] = []
    scorer = model if scorer is None else scorer
    was_training, scorer_was_training = model.training, scorer.training
    model.eval()
    scorer.eval()
    started = time.perf_counter()
    bar = tqdm(total=len(examples), desc=f"eval {task.name}", unit="ex", disable=not progress)
    try:
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            prompts = [build_prompt(tokenizer, task.messages(ex)) for ex in batch]
            with autocast_block(device, autocast):  # generation only: the likelihood figures never are
                out = rollout(model, tokenizer, prompts, group_size=1, max_new_tokens=max_new_tokens,
                              temperature=effective_temperature, top_p=top_p, stop_token_ids=stop_ids,
                              generator=generator, compile=compile)  # fmt: skip
            batch_records = batch_records_of(
                task, batch, prompts, out, start=start, scorer=scorer if likelihood else None,
                tokenizer=tokenizer, stop_ids=stop_ids, micro_batch_size=batch_size,
            )  # fmt: skip
            records += batch_records
            bar.update(len(batch))
            bar.set_postfix(total=f"{sum(r['total'] for r in records) / len(records):.3f}")
    finally:
        bar.close()
        model.train(was_training)
        scorer.train(scorer_was_training)
    seconds = time.perf_counter() - started

    recorded = {"task": task.name, "split": split, "split_size": len(split_examples), "limit": limit,
                "greedy": greedy, "temperature": effective_temperature, "top_p": top_p,
                "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed, "group_size": 1,
                "likelihood": likelihood, "autocast": autocast, **(settings or {})}  # fmt: skip
    report = build_report(task, records, recorded)
    report["finish_reasons"] = dict(Counter(r["finish_reason"] for r in records))
    report["completion_tokens"] = mean_ci(r["completion_tokens"] for r in records)
    report["seconds"] = seconds
    return report
