"""One-shot GPU check, for the day a GPU is lent: does the Qwen3 path hold where users run it?

    python -m tools.gpu_check --out reports/gpu-check.json     # on a GPU machine (make gpu-check)
    python -m tools.gpu_check --dry-run --out /tmp/check.json  # the same parts on a CPU, at a tiny shape

Every part is timed and wrapped, so one failure is recorded and the rest still run; one JSON report holds
them all, and each prints one line as it ends. The model is a randomly initialised Qwen3-1.7B shape
(`tools.bench_setup.SHAPES`; no weights needed) with the real Qwen3 tokenizer (`tools.qwen3_tokenizer`, from the
`qwen` extra; the packaged SmolLM2 tokenizer where it is missing), under the run's default precision:
float32 weights, bf16 autocast on a GPU with bf16 (`grpo.precision`).

    versions          torch, transformers, CUDA, the GPU
    attention         each attention implementation on left-padded rows: are the fully masked query rows
                      of the padding finite, and does a padded row give the logits of the row alone?
    reward_precision  per-token gold log-prob as the reward scores it (float32) against the same pass under
                      bf16 autocast (what it was before), and the time of each at the poster's batch
    decode            milliseconds of one decode step at batch 8 and 64: grpo.rollout's static step,
                      eager and compiled (CUDA graphs; the first call, compilation included, apart), the
                      previous sampler, model.generate at 64; beside them the floor, the time to read the
                      weights and the KV cache once at the copy bandwidth measured there
    stale_weights     μ = 2: the second update's ratio and clip fraction must move (autocast's weight cache
                      made update 2 compute with update 1's weights)
    poster_step       `--preset poster` (parse_config, Trainer.step: what train.py runs, without writing
                      20 GB of checkpoints): 2 steps of 16 prompts × G 4 × 1,024 tokens; seconds per
                      phase, peak GPU memory, the share of weights that moved, every loss finite
    lora_step         the same step with --lora-rank 16: only the adapters move, the reference is the
                      policy with its adapters off; trainable weights, AdamW bytes and the peak beside it
    nccl              2 ranks, an all-reduce, where there are 2 GPUs

--dry-run runs every part on the CPU at a tiny shape (2 layers, 2 prompts × G 2 × 8 tokens; flex attention
is left out there, its compile alone takes a minute on 2 cores); tests/test_gpu_check.py runs it. Estimated
at under 5 minutes on one H100 (the poster step's rollout, 2 × 1,024 decode steps at batch 64, is most of it).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from grpo.precision import autocast, evaluation_precision, synchronize

TINY_SHAPE = dict(
    model_type="qwen3",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=151936,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)


class Check:
    """The context every part shares: device, precision, tokenizer, the model (built once)."""

    def __init__(self, dry_run: bool, device: str, model_name: str | None = None):
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else device)
        self.mixed = evaluation_precision("auto", None, self.device)[1]  # as training computes
        self._model = None
        self.model_name = model_name
        if model_name is None:
            self.tokenizer, self.tokenizer_name = load_check_tokenizer()
        else:
            from grpo.models import load_tokenizer

            self.tokenizer, self.tokenizer_name = load_tokenizer(model_name), model_name
        # (prompts, new tokens) of the reward-precision part: a real model on a CPU gets the CPU default's 96
        self.sizes = {"reward_precision": (16, 256) if not dry_run else (8, 96) if model_name else (4, 16)}

    def autocast(self):
        return autocast(self.device, self.mixed)

    def shape(self) -> dict:
        from tools.bench_setup import SHAPES

        fields = dict(TINY_SHAPE if self.dry_run else SHAPES["qwen3-1.7b"])
        fields["vocab_size"] = max(fields["vocab_size"], len(self.tokenizer))
        return fields

    def new_model(self, seed: int = 0):
        from transformers import AutoConfig, AutoModelForCausalLM

        if self.model_name is not None:  # a real model, e.g. the packaged one: its own weights
            from grpo.models import load_models

            model = load_models(self.model_name, str(self.device), "auto", with_reference=False)[0]
            return model.eval()

        fields = self.shape()
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        config.eos_token_id = self.tokenizer.eos_token_id
        config.pad_token_id = self.tokenizer.pad_token_id
        config.bos_token_id = None
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(self.device).eval()
        model.generation_config.eos_token_id = self.tokenizer.eos_token_id
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        model.config.use_cache = False
        return model

    @property
    def model(self):
        if self._model is None:
            self._model = self.new_model()
        return self._model

    def release(self) -> None:
        self._model = None
        free(self.device)

    def countdown(self, n: int):
        """n Countdown problems and their prompts (chat template + the <think> prefill), token ids."""
        from grpo.rollout import build_prompt
        from tasks.countdown import CountdownTask

        task = CountdownTask(n_train=max(n, 8), n_test=8)
        examples = task.examples("train")[:n]
        return examples, [build_prompt(self.tokenizer, task.messages(ex)) for ex in examples]

    def prompts(self, n: int) -> list[list[int]]:
        return self.countdown(n)[1]


def load_check_tokenizer():
    try:
        from tools.qwen3_tokenizer import qwen3_tokenizer

        return qwen3_tokenizer(), "qwen3"
    except (ImportError, RuntimeError) as err:
        from grpo.models import DEFAULT_MODEL, load_tokenizer

        print(
            f"note: no Qwen3 tokenizer ({err}); using the packaged {DEFAULT_MODEL} tokenizer", file=sys.stderr
        )
        return load_tokenizer(DEFAULT_MODEL), DEFAULT_MODEL


def free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed(device: torch.device, fn) -> float:
    """Seconds of one call of fn(), the device's queued work included."""
    return timed_result(device, fn)[0]


def timed_result(device: torch.device, fn):
    """(seconds of one call of fn(), the device's queued work included; what it returned)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------- the parts


def part_versions(check: Check) -> dict:
    import transformers

    info = {
        "ok": True,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(check.device),
        "bf16_autocast": check.mixed,
        "tokenizer": check.tokenizer_name,
        "model_shape": {k: v for k, v in check.shape().items() if k != "model_type"},
    }
    if torch.cuda.is_available():
        info.update(
            cuda=torch.version.cuda,
            gpu=torch.cuda.get_device_name(),
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def attention_implementations(check: Check) -> list[str]:
    names = ["eager", "sdpa"]
    if not check.dry_run:
        from transformers.utils import is_flash_attn_2_available, is_torch_flex_attn_available

        if is_flash_attn_2_available():
            names.append("flash_attention_2")
        if is_torch_flex_attn_available():
            names.append("flex_attention")
    return names


def part_attention(check: Check) -> dict:
    """Each implementation on two rows, one left-padded by 5: finite everywhere? equal to the row alone?"""
    from grpo.logprobs import position_ids_from_mask

    model = check.model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (2, 16), generator=g).to(check.device)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # five pad positions: queries that attend to no key at all
    positions = position_ids_from_mask(mask)
    results, ok = {}, True
    for name in attention_implementations(check):
        try:
            model.set_attn_implementation(name)
            with torch.no_grad(), check.autocast():
                batch = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
                alone = model(input_ids=ids[1:, 5:], position_ids=positions[1:, 5:]).logits.float()
            difference = float((batch[1, 5:] - alone[0]).abs().max() / alone.abs().max())
            real_finite = bool(torch.isfinite(batch[0]).all() and torch.isfinite(batch[1, 5:]).all())
            results[name] = {
                "pad_rows_finite": bool(torch.isfinite(batch[1, :5]).all()),
                "real_rows_finite": real_finite,
                "padded_vs_alone_max_rel": difference,
            }
            # bf16 rounding of another batch shape is ~1e-2 of the largest logit; a mask bug is O(1)
            ok &= real_finite and difference < (5e-2 if check.mixed else 1e-3)
        except Exception as err:  # an implementation that is not installed or not supported here
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
    model.set_attn_implementation("sdpa")
    return {"ok": ok, "implementations": results}


def part_reward_precision(check: Check) -> dict:
    """The gold's per-token log-prob in float32 (the reward now) against the same pass under bf16 autocast
    (the reward before), after the model's own sampled reasonings; and the time of each pass."""
    from grpo.models import stop_token_ids
    from grpo.rewards import gold_scores_of_completions
    from grpo.rollout import rollout

    model, G = check.model, 4
    n, length = check.sizes["reward_precision"]
    examples, prompts = check.countdown(n)
    stops = stop_token_ids(model, check.tokenizer)
    with check.autocast():
        out = rollout(model, check.tokenizer, prompts, group_size=G, max_new_tokens=length, stop_token_ids=stops,
                      generator=torch.Generator(device=check.device).manual_seed(0))  # fmt: skip
    rows = [p for p in prompts for _ in range(G)]
    golds = [ex.gold for ex in examples for _ in range(G)]

    def score(under_autocast: bool):
        # before: the scoring pass inside the step's autocast block; now: float32 whatever encloses it
        with torch.autocast(check.device.type, dtype=torch.bfloat16):
            return gold_scores_of_completions(
                model, check.tokenizer, rows, out.completion_ids, out.completion_mask, golds, stop_token_ids=stops,
                micro_batch_size=8, group_size=G, full_precision=not under_autocast,
            ).scores  # fmt: skip

    per_token = lambda s: (s.logp_sum / s.gold_tokens).double().cpu()  # noqa: E731
    seconds_fp32, fp32 = timed_result(check.device, lambda: per_token(score(False)))
    seconds_bf16, bf16 = timed_result(check.device, lambda: per_token(score(True)))
    difference = (bf16 - fp32).abs()
    within_group = fp32.view(n, G).std(dim=1).mean()  # the reward's signal: its spread inside a group
    return {
        "ok": bool(torch.isfinite(fp32).all()),
        "completions": n * G,
        "max_new_tokens": length,
        "per_token_abs_diff_mean": float(difference.mean()),
        "per_token_abs_diff_max": float(difference.max()),
        "within_group_std_float32": float(within_group),
        "seconds_float32": seconds_fp32,
        "seconds_bf16_autocast": seconds_bf16,
    }


def part_decode(check: Check) -> dict:
    """ms per decode step of the project's sampler at batch 8 and 64: the static step eager and compiled
    (CUDA graphs), the previous sampler, model.generate at 64; and the floor, the time to read the weights and
    the KV cache once at the device's copy bandwidth (measured here), which the compiled step should be
    within 2× of."""
    from grpo.logprobs import left_pad
    from grpo.rollout import PREVIOUS_SAMPLER, rollout

    model = check.model
    steps = 4 if check.dry_run else 64
    figures: dict = {
        "bandwidth_gb_per_s": copy_bandwidth(check.device, mib=64 if check.dry_run else 512) / 1e9
    }
    samplers = {"static": {}, "previous": PREVIOUS_SAMPLER, "compiled": {"compile": True}}
    for batch in (8, 64) if not check.dry_run else (2, 4):
        prompts = check.prompts(batch)
        kwargs = dict(group_size=1, temperature=1.0, stop_token_ids=[], stop_strings=())
        for name, options in samplers.items():
            run = functools.partial(rollout, model, check.tokenizer, prompts, **kwargs, **options)

            with check.autocast():
                # warm-up: kernels, and for the compiled step its compilation at this (rows, capacity) bucket
                figures[f"{name}_first_call_s_batch_{batch}"] = timed(
                    check.device, lambda r=run: r(max_new_tokens=steps)
                )
                prefill = timed(check.device, lambda r=run: r(max_new_tokens=1))
                whole = timed(check.device, lambda r=run: r(max_new_tokens=steps))
            figures[f"{name}_ms_per_step_batch_{batch}"] = 1000 * (whole - prefill) / (steps - 1)
        width = len(max(prompts, key=len)) + steps
        floor = read_bytes(model, batch, width, check.mixed) / (figures["bandwidth_gb_per_s"] * 1e9)
        figures[f"floor_ms_batch_{batch}"] = 1000 * floor
        figures[f"compiled_vs_floor_batch_{batch}"] = figures[f"compiled_ms_per_step_batch_{batch}"] / (
            1000 * floor
        )
    batch = 64 if not check.dry_run else 4
    ids, mask = left_pad(check.prompts(batch), check.tokenizer.pad_token_id, check.device)

    def generate(n):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                       use_cache=True, pad_token_id=check.tokenizer.pad_token_id)  # fmt: skip

    with torch.no_grad(), check.autocast():
        generate(2)
        prefill = timed(check.device, lambda: generate(1))
        whole = timed(check.device, lambda: generate(steps))
    figures[f"generate_ms_per_step_batch_{batch}"] = 1000 * (whole - prefill) / (steps - 1)
    # a dry run's few CPU steps are too few to time (the difference can come out negative); it checks the path
    figures["ok"] = all(math.isfinite(v) and (check.dry_run or v > 0) for v in figures.values())
    return figures


def copy_bandwidth(device: torch.device, mib: int = 512) -> float:
    """Bytes per second a device-to-device copy moves (read + write), best of 5."""
    x = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    best = min(timed(device, lambda: y.copy_(x)) for _ in range(5))
    return 2 * x.numel() / best


def read_bytes(model, batch: int, width: int, mixed: bool) -> int:
    """What one decode step must read at least: every weight once (in bf16 under autocast) and the K and V of
    `width` positions for `batch` rows in every layer."""
    config = model.config
    weight_bytes = sum(p.numel() for p in model.parameters()) * (2 if mixed else 4)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    cache = 2 * config.num_hidden_layers * batch * config.num_key_value_heads * width * head_dim
    return weight_bytes + cache * (2 if mixed else 4)


def tiny_config(check: Check, **overrides):
    from grpo.config import Config

    base = dict(task="math", reward="logprob", steps=1, prompts_per_step=2, group_size=4, micro_batch_size=8,
                max_new_tokens=8 if check.dry_run else 32, lr=1e-3, beta=0.0, seed=0, out_dir=tempfile.mkdtemp())  # fmt: skip
    return Config(**{**base, **overrides})


def part_stale_weights(check: Check) -> dict:
    """μ = 2 at lr 1e-3: the second update's ratio must leave 1 (with update 1's weights it stayed at 1)."""
    from grpo.trainer import Trainer
    from tasks import task_for

    config = tiny_config(check, mu=2, autocast=check.mixed or None, scorer="policy")
    policy = check.new_model(seed=0)
    trainer = Trainer(config, policy, None, check.tokenizer, task_for(config, device=str(check.device)))
    stats = trainer.step().loss_stats
    second = stats[len(stats) // 2 :]
    clip = max(s.clip_fraction for s in second)
    ratio = max(abs(s.ratio_mean - 1) for s in second)
    del trainer, policy
    free(check.device)
    return {
        "ok": clip > 0 and ratio > 1e-3,
        "second_update_clip_fraction": clip,
        "second_update_ratio_minus_1": ratio,
    }


# the options that size a recorded step
STEP_SHAPE = ("prompts_per_step", "group_size", "max_new_tokens", "lr", "mu", "micro_batch_size",
              "loss_aggregation", "scorer")  # fmt: skip


def part_poster_step(check: Check) -> dict:
    """--preset poster at its scale (tiny in a dry run): 2 steps, as train.py runs them."""
    from grpo.config import parse_config
    from grpo.trainer import Trainer
    from tasks import TASKS, task_for

    argv = ["--preset", "poster", "--task", "math", "--reward", "logprob", "--steps", "2",
            "--device", str(check.device), "--out-dir", tempfile.mkdtemp()]  # fmt: skip
    if check.dry_run:
        # lr 1e-3: so that a 2-step tiny run moves visibly
        argv += ["--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8",
                 "--micro-batch-size", "4", "--lr", "1e-3"]  # fmt: skip
    config = parse_config(argv, TASKS)
    check.release()
    free(check.device)
    policy = check.new_model(seed=0)
    reference = copy.deepcopy(policy).requires_grad_(False)
    trainer = Trainer(config, policy, reference, check.tokenizer, task_for(config, device=str(check.device)))
    steps = []
    for _ in range(2):
        result = trainer.step()
        steps.append(
            {
                "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
                "completion_tokens_mean": float(result.completion_tokens.mean()),
                "losses": result.losses,
                "grad_norms": result.grad_norms,
                "reward_mean": float(result.rewards.mean()),
            }
        )
    moved = total = 0
    with torch.no_grad():
        for p, r in zip(policy.parameters(), reference.parameters(), strict=True):
            moved += int((p != r).sum())
            total += p.numel()
    finite = all(math.isfinite(x) for s in steps for x in s["losses"] + s["grad_norms"])
    peak = peak_gib(check.device)
    del trainer, policy, reference
    free(check.device)
    return {
        "ok": finite and moved > 0,
        "config": {k: getattr(config, k) for k in STEP_SHAPE},
        "steps": steps,
        "weights_moved_share": moved / total,
        "peak_memory_gib": peak,
        "every_loss_finite": finite,
    }


def part_lora_step(check: Check) -> dict:
    """One --preset poster step with --lora-rank 16 (tiny in a dry run): the reference is the policy with
    its adapters off, so there is no second copy; only the adapters move; the peak memory beside the full
    fine-tuning step's (poster_step)."""
    from grpo.config import parse_config
    from grpo.lora import LoraOptions, add_adapters
    from grpo.trainer import Trainer
    from tasks import TASKS, task_for
    from tools.bench_memory import tensor_bytes

    argv = ["--preset", "poster", "--task", "math", "--reward", "logprob", "--steps", "1", "--lora-rank", "16",
            "--lr", "1e-5", "--device", str(check.device), "--out-dir", tempfile.mkdtemp()]  # fmt: skip
    if check.dry_run:
        argv += ["--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "8", "--lr", "1e-3"]
    config = parse_config(argv, TASKS)
    check.release()
    free(check.device)
    policy = add_adapters(check.new_model(seed=0), LoraOptions.of(config))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    trainer = Trainer(config, policy, None, check.tokenizer, task_for(config, device=str(check.device)))
    result = trainer.step()
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n, p in policy.named_parameters() if p.requires_grad}
    finite = all(math.isfinite(x) for x in result.losses + result.grad_norms)
    optimizer_bytes = tensor_bytes(v for st in trainer.optimizer.state.values() for v in st.values())
    out = {
        "ok": finite and bool(changed) and changed <= adapters,
        "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
        "trainable": sum(p.numel() for p in trainer.trainable),
        "parameters": sum(p.numel() for p in policy.parameters()),
        "only_adapters_moved": changed <= adapters,
        "optimizer_bytes": optimizer_bytes,
        "peak_memory_gib": peak_gib(check.device),
        "every_loss_finite": finite,
    }
    del trainer, policy, before
    free(check.device)
    return out


def _nccl_rank(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    x = torch.full((1024,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    if rank == 0:
        Path(out).write_text(json.dumps({"sum": float(x[0])}))
    dist.destroy_process_group()


def part_nccl(check: Check) -> dict:
    if check.device.type != "cuda" or torch.cuda.device_count() < 2:
        return {"ok": True, "skipped": "fewer than 2 GPUs"}
    import random

    import torch.multiprocessing as mp

    out = Path(tempfile.mkdtemp()) / "nccl.json"
    mp.spawn(_nccl_rank, args=(2, random.randint(20000, 40000), str(out)), nprocs=2, join=True)
    total = json.loads(out.read_text())["sum"]
    return {"ok": total == 3.0, "all_reduce_sum": total}


PARTS = {
    "versions": part_versions,
    "attention": part_attention,
    "reward_precision": part_reward_precision,
    "decode": part_decode,
    "stale_weights": part_stale_weights,
    "poster_step": part_poster_step,
    "lora_step": part_lora_step,
    "nccl": part_nccl,
}


def run(dry_run: bool, device: str = "cuda", only: list[str] | None = None, model: str | None = None) -> dict:
    check = Check(dry_run, device, model)
    report: dict = {"dry_run": dry_run, "model": model or "random Qwen3 shape", "parts": {}}
    for name, part in PARTS.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            result = part(check)
        except Exception as err:  # one part's failure is a finding, not the end of the check
            result = {
                "ok": False,
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-2000:],
            }
        result["seconds"] = round(time.perf_counter() - start, 2)
        if check.device.type == "cuda":
            result.setdefault("peak_memory_gib", peak_gib(check.device))
        report["parts"][name] = result
        status = "ok" if result.get("ok", True) else "FAILED"
        print(
            f"{name:>16}: {status} in {result['seconds']:.1f} s  {brief(result)}", file=sys.stderr, flush=True
        )
    report["ok"] = all(p.get("ok", True) for p in report["parts"].values())
    return report


def brief(result: dict) -> str:
    shown = {
        k: v
        for k, v in result.items()
        if isinstance(v, int | float | str) and k not in ("ok", "seconds", "traceback")
    }
    return json.dumps(shown)[:300]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/gpu-check.json", help="the JSON report")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU at a tiny shape")
    parser.add_argument("--device", default="cuda", help="the GPU to check")
    parser.add_argument("--only", nargs="+", choices=sorted(PARTS), help="run these parts only")
    parser.add_argument(
        "--model",
        help="a real model (with its tokenizer) instead of the random Qwen3 shape, e.g. smollm2-135m: "
        "`--dry-run --only reward_precision --model smollm2-135m` is the README's CPU measurement",
    )
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU here; --dry-run runs the same parts on the CPU at a tiny shape",
            file=sys.stderr,
        )
        return 2
    report = run(args.dry_run, args.device, args.only, args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'all parts passed' if report['ok'] else 'some parts FAILED'}; report in {out}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
