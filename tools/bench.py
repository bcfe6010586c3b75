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
  `rollout_vs_previous` ÷ those of the sampler the static one replaced (`PREVIOUS_SAMPLER`). Where bf16
  is timed (--bf16), ours runs once more under bf16 autocast, as training runs it there: `bf16_vs_previous`
  is its useful tokens/s ÷ the previous sampler's in the model's dtype.
- ops: aten ops, dtype casts and host reads per decode step, static and previous, on Qwen3-1.7B's
  structure at a narrow width under bf16 autocast (each op is a kernel launch on a GPU).
- compile: the compiled static decode step against the eager one, its compile time apart.
- fixed_decode: no stops at all, every row runs the full length: raw decode speed, for reference.
- scoring: teacher-forced log-probs of the first rollout's completions, as the trainer computes them
  (`grpo.logprobs.token_logprobs` with `micro_batch_size`: micro-batches of rows, the output projection in chunks of
  positions), chunked over the whole batch at once, and by a naive `log_softmax(model(ids).logits)` of the
  whole batch: tokens/s, peak memory above the starting level (CUDA allocator statistics on a GPU; on a
  CPU the resident set, sampled every millisecond) and the largest difference. `memory_vs_naive` is the
  trainer's way over the naive one.
- step: one full GRPO step (logprob reward, fixed-length completions), its seconds split into rollout /
  reward / reference / update, with either sampler, in fp32 and under bf16 autocast where the hardware
  has bf16 arithmetic (GPUs, CPUs with AVX512-BF16 or AMX), after an untimed first step. `bf16_speedup`:
  the fp32 step ÷ the bf16 one, the same sampler; `bf16_vs_previous`: the previous sampler's fp32 step (the
  default before the static sampler and `--autocast auto`) ÷ the bf16 one.
- scaling: the same step with G doubled and with the completion length doubled. Linear growth is at most
  2× the time (less, as long as the prompt's share of the work does not double).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from grpo.config import Config
from grpo.models import DEFAULT_MODEL, load_models, load_tokenizer, pick_device, stop_token_ids
from grpo.tags import ANSWER_CLOSE
from tools.bench_measure import (
    bench_compile,
    bench_ops,
    bench_rollout,
    bench_scoring,
    bench_step,
    run_generate,
    run_ours,
)
from tools.bench_report import table
from tools.bench_setup import (
    SHAPES,
    bf16_is_fast,
    countdown_prompts,
    machine,
    random_model,
)

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
        help="also time the rollout and the step under bf16 autocast: auto = only where the hardware has bf16 "
        "arithmetic",
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
    bf16: bool  # the rollout and the step are also timed under bf16 autocast (use_bf16)


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


def use_bf16(args: argparse.Namespace, device: torch.device, report: dict) -> bool:
    """Whether the rollout and the step are also timed under bf16 autocast: --bf16 on, or auto where the
    hardware has bf16 arithmetic (a note in the report says when auto skips it)."""
    if args.bf16 == "on":
        return True
    if args.bf16 == "auto" and bf16_is_fast(device):
        return True
    if args.bf16 == "auto":
        report["notes"].append(
            f"bf16 autocast rollout and step skipped: no bf16 arithmetic on this {device.type} "
            f"({report['machine']['cpu_capability']}); --bf16 on times them anyway"
        )
    return False


def rollout_section(setup: Setup, batches: list[int], report: dict):
    """Ours against generate at each batch, into report["rollout"]; returns the first batch's rollout."""
    first = None
    bf16 = setup.bf16
    for batch in batches:
        say(f"rollout: batch {batch}, ours, previous, generate{', ours under bf16' if bf16 else ''} ...")
        out, r = bench_rollout(
            setup.model, setup.tokenizer, setup.prompts, batch, setup.args.group_size,
            setup.args.max_new_tokens, setup.stop_ids, [ANSWER_CLOSE], setup.args.seed, setup.device, bf16,
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
    bf16 = setup.bf16
    # warm-up, not reported: the first step timed in a process came out with an update 1.4-2× the next's
    timed_step(setup, n_prompts, G, T)
    base = timed_step(setup, n_prompts, G, T)  # the step breakdown and the scaling's starting point
    report["step"] = [base, timed_step(setup, n_prompts, G, T, sampler="previous")] + (
        [timed_step(setup, n_prompts, G, T, bf16=True)] if bf16 else []
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
    if bf16:  # against the same sampler in fp32, and against the fp32 default before the static sampler
        report["bf16_speedup"] = base["total_seconds"] / report["step"][-1]["total_seconds"]
        report["bf16_vs_previous"] = report["step"][1]["total_seconds"] / report["step"][-1]["total_seconds"]


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
    setup = Setup(args, model, tokenizer, device, prompts, stop_ids, use_bf16(args, device, report))

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
