"""`make bench`'s measurements, one function each: this project's rollout against `model.generate` and the
sampler it replaced, the ops of a decode step, the compiled step, the log-prob scoring's memory and a whole
GRPO step's phases. `tools.bench` runs them, section by section, and reports (its docstring says what each
figure means).
"""

from __future__ import annotations

import copy
import functools
import gc
import tempfile

import torch

from grpo.config import Config
from grpo.logprobs import left_pad, position_ids_from_mask, token_logprobs
from grpo.precision import autocast as precision_autocast
from grpo.rollout import CHECK_EVERY, PREVIOUS_SAMPLER, Ends, rollout
from tools.bench_setup import PeakMemory, countdown_prompts, random_model, timed


def useful_lengths(tokenizer, new_tokens: torch.Tensor, stop_ids, stop_strings) -> list[int]:
    """Tokens each row of `generate`'s output keeps: up to and including its stop, by the rollout's rule."""
    stop_ids = set(stop_ids)
    watcher = Ends(
        tokenizer, new_tokens.shape[0], new_tokens.shape[1], stop_ids, stop_strings, one_think=False
    )
    lengths = []
    for row, ids in enumerate(new_tokens.tolist()):
        n = len(ids)
        for t, token in enumerate(ids):
            if token in stop_ids or watcher.update(row, tokenizer.decode([token])) is not None:
                n = t + 1
                break
        lengths.append(n)
    return lengths


def run_ours(model, tokenizer, prompts, G, max_new_tokens, stop_ids, stop_strings, seed, device, **options):
    """`grpo.rollout` with its defaults, or with `options` (PREVIOUS_SAMPLER, compile=True)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out, seconds = timed(
        lambda: rollout(
            model,
            tokenizer,
            prompts,
            group_size=G,
            max_new_tokens=max_new_tokens,
            stop_token_ids=stop_ids,
            stop_strings=stop_strings,
            one_think=False,  # generate has no such rule; the two must stop alike
            generator=generator,
            **options,
        ),
        device,
    )
    useful = int(out.completion_mask.sum())
    return out, {"seconds": seconds, "useful_tokens": useful, "computed_tokens": useful}


def run_generate(model, tokenizer, prompts, G, max_new_tokens, stop_ids, stop_strings, seed, device):
    rows = [p for p in prompts for _ in range(G)]
    ids, mask = left_pad(rows, tokenizer.pad_token_id, device)
    kwargs = dict(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    if stop_ids:
        kwargs["eos_token_id"] = list(stop_ids)
    else:  # fixed length: no row may stop
        kwargs["min_new_tokens"] = max_new_tokens
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    torch.manual_seed(seed)
    out, seconds = timed(lambda: model.generate(input_ids=ids, attention_mask=mask, **kwargs), device)
    new = out[:, ids.shape[1] :]  # (N, steps)
    useful = sum(useful_lengths(tokenizer, new, stop_ids, stop_strings))
    return {"seconds": seconds, "useful_tokens": useful, "computed_tokens": new.numel()}


def bench_rollout(
    model, tokenizer, prompts, batch, G, max_new_tokens, stop_ids, stop_strings, seed, device, bf16=False
):
    """Ours, the previous sampler and `generate` on the same prompts and seed, in the model's dtype; with `bf16`,
    ours once more under bf16 autocast (`ours_bf16`: the rollout as training runs it where bf16 pays)."""
    n_prompts = batch // G
    if n_prompts > len(prompts):
        raise ValueError(f"batch {batch} needs {n_prompts} prompts")
    args = (model, tokenizer, prompts[:n_prompts], G, max_new_tokens, stop_ids, stop_strings, seed, device)
    out, ours = run_ours(*args)
    _, previous = run_ours(*args, **PREVIOUS_SAMPLER)
    theirs = run_generate(*args)
    runs = {"ours": ours, "previous": previous, "generate": theirs}
    if bf16:  # (bf16 logits sample other completions: useful tokens/s is what compares)
        with precision_autocast(device, True):
            _, runs["ours_bf16"] = run_ours(*args)
    for r in runs.values():
        r["useful_tokens_per_s"] = r["useful_tokens"] / r["seconds"]
        r["computed_tokens_per_s"] = r["computed_tokens"] / r["seconds"]
    report = {"batch": batch, "group_size": G, "max_new_tokens": max_new_tokens, **runs}
    report["rollout_vs_generate"] = ours["useful_tokens_per_s"] / theirs["useful_tokens_per_s"]
    report["rollout_vs_previous"] = ours["useful_tokens_per_s"] / previous["useful_tokens_per_s"]
    if bf16:  # the rollout training runs where bf16 pays, against the fp32 sampler the static one replaced
        report["bf16_vs_previous"] = (
            runs["ours_bf16"]["useful_tokens_per_s"] / previous["useful_tokens_per_s"]
        )
    return out, report


def count_decode_ops(model, tokenizer, prompts, batch, steps, autocast, **options) -> dict:
    """aten ops, dtype casts and host reads (`_local_scalar_dense`: .item(), bool() of a tensor) per decode step
    of `grpo.rollout` with `options`, under the profiler: a rollout of 1 + steps tokens minus one of 1 token (its
    prefill), over `steps`. Each op is a kernel launch on a GPU, each host read a sync. The rollout's own
    reads of the new tokens (`.tolist()`, not an aten op) are given apart, from its settings: one every
    `check_every` steps (`host_reads_of_tokens`)."""
    from torch.profiler import ProfilerActivity, profile

    def counts(n):
        with (
            profile(activities=[ProfilerActivity.CPU]) as prof,
            precision_autocast(torch.device("cpu"), autocast),
        ):
            rollout(model, tokenizer, prompts[: batch // 4], group_size=4, max_new_tokens=n, stop_token_ids=[],
                    stop_strings=(), generator=torch.Generator().manual_seed(0), **options)  # fmt: skip
        events = [e for e in prof.events() if e.name.startswith("aten::")]
        return (
            len(events),
            sum(e.name == "aten::_to_copy" for e in events),
            sum(e.name == "aten::_local_scalar_dense" for e in events),
        )

    counts(2)  # warm-up
    (ops, casts, reads), (ops0, casts0, reads0) = counts(1 + steps), counts(1)
    check_every = options.get("check_every", CHECK_EVERY)
    return {
        "aten_ops_per_step": (ops - ops0) / steps,
        "casts_per_step": (casts - casts0) / steps,
        "item_reads_per_step": (reads - reads0) / steps,
        "host_reads_of_tokens": 1 / check_every,
    }


def bench_ops(tokenizer, batch, steps, autocast) -> dict:
    """`count_decode_ops` of the static sampler and the previous one on Qwen3-1.7B's structure."""
    model = random_model("qwen3-1.7b-narrow", tokenizer, torch.device("cpu"), torch.float32)
    prompts = countdown_prompts(tokenizer, batch // 4)
    return {
        "model": "qwen3-1.7b-narrow",
        "batch": batch,
        "autocast_bf16": autocast,
        "ours": count_decode_ops(model, tokenizer, prompts, batch, steps, autocast),
        "previous": count_decode_ops(model, tokenizer, prompts, batch, steps, autocast, **PREVIOUS_SAMPLER),
    }


def bench_compile(model, tokenizer, prompts, batch, G, max_new_tokens, seed, device):
    """The compiled static decode step against the eager one, fixed-length rows (one shape throughout): the
    first compiled rollout pays the compilation, the second is the steady state."""
    args = (model, tokenizer, prompts[: batch // G], G, max_new_tokens, [], [], seed, device)
    _, eager = run_ours(*args)
    _, first = run_ours(*args, compile=True)
    _, steady = run_ours(*args, compile=True)
    tokens = batch * max_new_tokens
    return {
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "eager_tokens_per_s": tokens / eager["seconds"],
        "compiled_tokens_per_s": tokens / steady["seconds"],
        "compile_seconds": first["seconds"] - steady["seconds"],
        "compiled_vs_eager": eager["seconds"] / steady["seconds"],
    }


@torch.no_grad()
def bench_scoring(model, input_ids, attention_mask, start, device, micro_batch_size, group_size):
    """Teacher-forced log-probs of the batch's completions: as the trainer computes them (micro-batches of
    rows, the output projection in chunks of positions), chunked over the whole batch at once, and naive."""
    n_scored = input_ids.shape[0] * (input_ids.shape[1] - start)

    def naive():
        logits = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).logits.float()  # (N, L, V)
        logp = torch.log_softmax(logits, dim=-1)[:, start - 1 : -1]  # (N, T, V)
        return logp.gather(-1, input_ids[:, start:].unsqueeze(-1)).squeeze(-1)  # (N, T)

    def ours():
        with torch.no_grad():
            return token_logprobs(
                model,
                input_ids,
                attention_mask,
                start,
                micro_batch_size=micro_batch_size,
                group_size=group_size,
            )

    def whole_batch():
        return token_logprobs(model, input_ids, attention_mask, start)

    report = {
        "rows": input_ids.shape[0],
        "positions": input_ids.shape[1],
        "scored_tokens": n_scored,
        "micro_batch_size": micro_batch_size,
        "group_size": group_size,
    }
    results = {}
    for name, fn in (("ours", ours), ("ours_whole_batch", whole_batch), ("naive", naive)):
        with PeakMemory(device) as memory:
            results[name], seconds = timed(fn, device)
        report[name] = {"seconds": seconds, "tokens_per_s": n_scored / seconds, "peak_bytes": memory.peak}
    report["max_abs_difference"] = max(
        float((results[name] - results["naive"]).abs().max()) for name in ("ours", "ours_whole_batch")
    )
    naive_peak = report["naive"]["peak_bytes"]
    for key, name in (("memory_vs_naive", "ours"), ("memory_whole_batch_vs_naive", "ours_whole_batch")):
        peak = report[name]["peak_bytes"]
        report[key] = None if peak is None or not naive_peak else peak / naive_peak
    report["speed_vs_naive"] = report["ours"]["tokens_per_s"] / report["naive"]["tokens_per_s"]
    return report


def bench_step(
    policy, tokenizer, *, prompts_per_step, group_size, max_new_tokens, autocast, seed, sampler="ours"
):
    """One GRPO step (logprob reward) on a fresh copy of the policy; seconds of each phase.

    Completions run the full max_new_tokens (no end-of-turn stop), so that steps of different shapes
    differ by exactly the tokens they were given. `sampler="previous"`: the rollout with PREVIOUS_SAMPLER.
    """
    from unittest import mock

    import grpo.trainer
    from grpo.trainer import Trainer
    from tasks import get_task

    config = Config(
        task="math",
        reward="logprob",
        prompts_per_step=prompts_per_step,
        group_size=group_size,
        max_new_tokens=max_new_tokens,
        autocast=autocast,
        seed=seed,
        out_dir=tempfile.mkdtemp(prefix="grpo-bench-"),
    )
    model = copy.deepcopy(policy)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    trainer = Trainer(config, model, reference, tokenizer, get_task("math"))
    trainer.stop_ids = []  # no end-of-turn stop: every completion runs max_new_tokens
    trainer.config.one_think = False
    options = PREVIOUS_SAMPLER if sampler == "previous" else {}
    with mock.patch.object(grpo.trainer, "rollout", functools.partial(rollout, **options)):
        result = trainer.step()
    del trainer, model, reference
    gc.collect()
    phases = {k: result.seconds[k] for k in ("rollout", "reward", "reference", "update")}
    return {
        "prompts": prompts_per_step,
        "group_size": group_size,
        "max_new_tokens": max_new_tokens,
        "autocast_bf16": autocast,
        "sampler": sampler,
        "completion_tokens": int(result.completion_tokens.sum()),
        "seconds": phases,
        "total_seconds": sum(phases.values()),
    }
