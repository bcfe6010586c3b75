"""`make bench`: where a GRPO step's time goes, and this project's rollout against `model.generate`.

    python -m tools.bench                                  # packaged SmolLM2-135M, offline, ~12 min on 2 cores
    python -m tools.bench --random-init qwen3-1.7b         # Qwen3-1.7B's shape with random weights (no download)
    python -m tools.bench --random-init path/config.json   # any Hugging Face config
    python -m tools.bench --out reports/bench.json         # also write the JSON report

Every comparison runs in one process, on one model, with the same prompts, batch, dtype and sampling
settings, so the ratios hold even on a noisy machine; the seconds do not travel. Sections:

- rollout: Countdown prompts, G samples each, T 1.0 and no top-p/top-k, a row stops at an end-of-turn
  token or `</answer>`, up to --max-new-tokens. Useful tokens are the tokens a row keeps (up to and
  including its stop); `generate` keeps computing rows that have finished, so it does more work than it
  keeps. `rollout_vs_generate` = useful tokens/s of `grpo.rollout` ÷ those of `generate`;
  `rollout_vs_previous` ÷ those of the sampler the static one replaced (`PREVIOUS_SAMPLER`).
- ops: aten ops, dtype casts and host reads per decode step, static and previous, on Qwen3-1.7B's
  structure at a narrow width under bf16 autocast (each op is a kernel launch on a GPU).
- compile: the compiled static decode step against the eager one, its compile time apart.
- fixed_decode: no stops at all, every row runs the full length: raw decode speed, for reference.
- scoring: teacher-forced log-probs of the first rollout's completions, as the trainer computes them
  (`grpo.logprobs.batched_token_logprobs`: micro-batches of rows, the output projection in chunks of
  positions), chunked over the whole batch at once, and by a naive `log_softmax(model(ids).logits)` of the
  whole batch: tokens/s, peak memory above the starting level (CUDA allocator statistics on a GPU; on a
  CPU the resident set, sampled every millisecond) and the largest difference. `memory_vs_naive` is the
  trainer's way over the naive one.
- step: one full GRPO step (logprob reward, fixed-length completions), its seconds split into rollout /
  reward / reference / update, with either sampler, in fp32 and under bf16 autocast where the hardware
  has bf16 arithmetic (GPUs, CPUs with AVX512-BF16 or AMX), after an untimed first step.
- scaling: the same step with G doubled and with the completion length doubled. Linear growth is at most
  2× the time (less, as long as the prompt's share of the work does not double).
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from grpo.config import Config
from grpo.logprobs import batched_token_logprobs, left_pad, position_ids_from_mask, token_logprobs
from grpo.models import DEFAULT_MODEL, load_models, load_tokenizer, pick_device, stop_token_ids
from grpo.precision import autocast as precision_autocast
from grpo.rollout import CHECK_EVERY, PREVIOUS_SAMPLER, Ends, rollout
from grpo.tags import ANSWER_CLOSE
from tools.bench_report import table
from tools.bench_setup import (
    SHAPES,
    PeakMemory,
    bf16_is_fast,
    countdown_prompts,
    machine,
    random_model,
    timed,
)

# ---------------------------------------------------------------- sections


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


def bench_rollout(model, tokenizer, prompts, batch, G, max_new_tokens, stop_ids, stop_strings, seed, device):
    n_prompts = batch // G
    if n_prompts > len(prompts):
        raise ValueError(f"batch {batch} needs {n_prompts} prompts")
    args = (model, tokenizer, prompts[:n_prompts], G, max_new_tokens, stop_ids, stop_strings, seed, device)
    out, ours = run_ours(*args)
    _, previous = run_ours(*args, **PREVIOUS_SAMPLER)
    theirs = run_generate(*args)
    for r in (ours, previous, theirs):
        r["useful_tokens_per_s"] = r["useful_tokens"] / r["seconds"]
        r["computed_tokens_per_s"] = r["computed_tokens"] / r["seconds"]
    return out, {
        "batch": batch,
        "group_size": G,
        "max_new_tokens": max_new_tokens,
        "ours": ours,
        "previous": previous,
        "generate": theirs,
        "rollout_vs_generate": ours["useful_tokens_per_s"] / theirs["useful_tokens_per_s"],
        "rollout_vs_previous": ours["useful_tokens_per_s"] / previous["useful_tokens_per_s"],
    }


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
        return batched_token_logprobs(
            model, input_ids, attention_mask, start, micro_batch_size=micro_batch_size, group_size=group_size
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


# ---------------------------------------------------------------- the command line and the run

SECTIONS = ("rollout", "ops", "compile", "fixed", "scoring", "step", "scaling")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="Benchmark the rollout (vs model.generate), log-prob scoring (vs a naive log_softmax) and a "
        "GRPO step. Prints a table and a JSON report.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model to load (as train.py --model)")
    parser.add_argument(
        "--random-init",
        metavar="SHAPE",
        help=f"a randomly initialised model instead: {', '.join(sorted(SHAPES))}, or a config.json path",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument(
        "--dtype", default="float32", help="weights' dtype for every section but the bf16 step"
    )
    parser.add_argument("--batches", default="16,32,64", help="completions per rollout, comma-separated")
    parser.add_argument("--group-size", type=int, default=4, help="G: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="rollout length limit")
    parser.add_argument(
        "--ops-batch",
        type=int,
        default=64,
        help="rows of the decode steps whose ops are counted (a multiple of 4)",
    )
    parser.add_argument(
        "--compile-shape", default="16,48", help="batch,T of the compiled decode step against the eager one"
    )
    parser.add_argument("--fixed-tokens", type=int, default=64, help="length of the fixed-length decode")
    parser.add_argument(
        "--step-shape",
        default="4,2,32",
        help="prompts,G,T of the GRPO step; scaling doubles G and T in turn",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help="which sections to run, comma-separated",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time the step under bf16 autocast: auto = only where the hardware has bf16 arithmetic",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    return parser.parse_args(argv)


def checked_args(args) -> tuple[set[str], list[int], tuple[int, int, int]]:
    """The sections to run, the rollout batches and the step's (prompts, G, T), or a one-line error."""
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"error: unknown --sections {sorted(unknown)}")
    batches = [int(b) for b in args.batches.split(",") if b]
    n_prompts, G, T = (int(x) for x in args.step_shape.split(","))
    if any(b % args.group_size for b in batches):
        raise SystemExit(f"error: every batch must be a multiple of --group-size {args.group_size}")
    return sections, batches, (n_prompts, G, T)


def load_bench_model(args, device: torch.device):
    """(model, tokenizer, the model's name in the report): --random-init's model with the packaged tokenizer,
    or --model loaded as train.py loads it, without a reference."""
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    if args.random_init:
        tokenizer = load_tokenizer(DEFAULT_MODEL)
        model = random_model(args.random_init, tokenizer, device, dtype)
        return model, tokenizer, f"random-init {args.random_init}"
    model, _, tokenizer = load_models(args.model, str(device), args.dtype, with_reference=False)
    model.eval()
    return model, tokenizer, args.model


@dataclass
class Setup:
    """What every section runs on: one model, its tokenizer and prompts, and the command line's settings."""

    args: argparse.Namespace
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    prompts: list[list[int]]  # Countdown prompts, enough for the largest batch (and at least 64 rows)
    stop_ids: list[int]  # the model's end-of-turn tokens


def say(message: str) -> None:
    print(message, flush=True)


def save(report: dict, out: Path | None) -> None:
    """Write the report to --out, if given. Called after every section, so that a failure late in the run
    keeps what was measured."""
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")


def warm_up(setup: Setup) -> None:
    """First calls allocate, pick kernels and fill caches; neither side should pay for that."""
    model, tokenizer, prompt, seed = setup.model, setup.tokenizer, setup.prompts[:1], setup.args.seed
    run_ours(model, tokenizer, prompt, 2, 2, setup.stop_ids, [ANSWER_CLOSE], seed, setup.device)
    run_generate(model, tokenizer, prompt, 2, 2, setup.stop_ids, [ANSWER_CLOSE], seed, setup.device)


def rollout_section(setup: Setup, batches: list[int], report: dict):
    """Ours against generate at each batch, into report["rollout"]; returns the first batch's rollout."""
    first = None
    for batch in batches:
        say(f"rollout: batch {batch}, ours then generate ...")
        out, r = bench_rollout(
            setup.model, setup.tokenizer, setup.prompts, batch, setup.args.group_size,
            setup.args.max_new_tokens, setup.stop_ids, [ANSWER_CLOSE], setup.args.seed, setup.device,
        )  # fmt: skip
        report["rollout"].append(r)
        first = out if first is None else first
        say(f"  ratio {r['rollout_vs_generate']:.2f}")
    return first


def ops_section(setup: Setup, report: dict) -> None:
    say(
        f"ops per decode step: Qwen3-1.7B's structure, batch {setup.args.ops_batch}, bf16 autocast, ours then previous ..."
    )
    report["ops"] = bench_ops(setup.tokenizer, batch=setup.args.ops_batch, steps=4, autocast=True)


def compile_section(setup: Setup, report: dict) -> None:
    batch, t = (int(x) for x in setup.args.compile_shape.split(","))
    say(f"compiled decode step: batch {batch} × {t}, eager then compiled twice ...")
    try:
        report["compile"] = bench_compile(
            setup.model, setup.tokenizer, setup.prompts, batch, setup.args.group_size, t, setup.args.seed,
            setup.device,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 (the report says what failed; the other sections go on)
        report["notes"].append(f"compile section failed: {type(error).__name__}: {error}"[:500])


def fixed_section(setup: Setup, batches: list[int], report: dict):
    """The first batch without stops, into report["fixed_decode"]; returns its rollout."""
    say(f"fixed-length decode: batch {batches[0]} × {setup.args.fixed_tokens} ...")
    out, report["fixed_decode"] = bench_rollout(
        setup.model, setup.tokenizer, setup.prompts, batches[0], setup.args.group_size,
        setup.args.fixed_tokens, [], [], setup.args.seed, setup.device,
    )  # fmt: skip
    return out


def scoring_section(setup: Setup, batches: list[int], report: dict, scoring_batch) -> None:
    """Score `scoring_batch` (a rollout), or, when no section made one, a rollout of the first batch."""
    if scoring_batch is None:
        scoring_batch, _ = run_ours(
            setup.model, setup.tokenizer, setup.prompts[: batches[0] // setup.args.group_size],
            setup.args.group_size, setup.args.max_new_tokens, setup.stop_ids, [ANSWER_CLOSE], setup.args.seed,
            setup.device,
        )  # fmt: skip
    say("log-prob scoring: ours then naive ...")
    report["scoring"] = bench_scoring(
        setup.model,
        scoring_batch.input_ids,
        scoring_batch.attention_mask,
        scoring_batch.prompt_length,
        setup.device,
        micro_batch_size=Config.micro_batch_size,
        group_size=setup.args.group_size,
    )


def timed_step(
    setup: Setup, n_prompts: int, g: int, t: int, bf16: bool = False, sampler: str = "ours"
) -> dict:
    say(
        f"GRPO step: {n_prompts} prompts × G {g} × {t} tokens, {sampler} sampler{', bf16' if bf16 else ''} ..."
    )
    return bench_step(
        setup.model, setup.tokenizer, prompts_per_step=n_prompts, group_size=g, max_new_tokens=t,
        autocast=bf16, seed=setup.args.seed, sampler=sampler,
    )  # fmt: skip


def step_sections(setup: Setup, step_shape: tuple[int, int, int], with_scaling: bool, report: dict) -> None:
    """The GRPO step with either sampler (and under bf16 autocast where it pays, or with --bf16 on), into
    report["step"]; with `with_scaling`, the same step with G doubled and with T doubled, into
    report["scaling"]."""
    n_prompts, G, T = step_shape
    setup.model.float()  # the update keeps float32 master weights (a no-op for a float32 model)
    use_bf16 = setup.args.bf16 == "on" or (setup.args.bf16 == "auto" and bf16_is_fast(setup.device))
    if setup.args.bf16 == "auto" and not use_bf16:
        report["notes"].append(
            f"bf16 autocast step skipped: no bf16 arithmetic on this {setup.device.type} "
            f"({report['machine']['cpu_capability']}); --bf16 on times it anyway"
        )
    # warm-up, not reported: the first step timed in a process came out with an update 1.4-2× the next's
    timed_step(setup, n_prompts, G, T)
    base = timed_step(setup, n_prompts, G, T)  # the step breakdown and the scaling's starting point
    report["step"] = [base, timed_step(setup, n_prompts, G, T, sampler="previous")] + (
        [timed_step(setup, n_prompts, G, T, bf16=True)] if use_bf16 else []
    )
    report["step_vs_previous"] = report["step"][1]["total_seconds"] / base["total_seconds"]
    report["scaling"] = []
    if with_scaling:
        report["scaling"] = [
            base,
            timed_step(setup, n_prompts, 2 * G, T),
            timed_step(setup, n_prompts, G, 2 * T),
        ]
        single, double_g, double_t = (r["total_seconds"] for r in report["scaling"])
        report["scaling_ratios"] = {"double_group": double_g / single, "double_length": double_t / single}
    if use_bf16:
        report["bf16_speedup"] = base["total_seconds"] / report["step"][-1]["total_seconds"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    sections, batches, step_shape = checked_args(args)
    device = pick_device(args.device)
    model, tokenizer, name = load_bench_model(args, device)
    stop_ids = stop_token_ids(model, tokenizer)
    report = {
        "machine": machine(),
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "dtype": args.dtype,
        "rollout": [],
        "notes": [],
    }
    prompts = countdown_prompts(tokenizer, max(batches + [64]) // args.group_size)
    setup = Setup(args, model, tokenizer, device, prompts, stop_ids)

    warm_up(setup)
    scoring_batch = None  # a realistic batch to score: the first rollout's
    if "rollout" in sections:
        scoring_batch = rollout_section(setup, batches, report)
    save(report, args.out)
    if "ops" in sections:
        ops_section(setup, report)
    save(report, args.out)
    if "compile" in sections:
        compile_section(setup, report)
    save(report, args.out)
    if "fixed" in sections:
        out = fixed_section(setup, batches, report)
        scoring_batch = out if scoring_batch is None else scoring_batch
    save(report, args.out)
    if "scoring" in sections:
        scoring_section(setup, batches, report, scoring_batch)
    save(report, args.out)
    if "step" in sections or "scaling" in sections:  # scaling starts from the step's base
        step_sections(setup, step_shape, "scaling" in sections, report)
    save(report, args.out)

    say("")
    say(table(report))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
