"""`make bench-memory`: what one default GRPO step holds in memory, full fine-tuning against LoRA.

    python -m tools.bench_memory                              # packaged SmolLM2-135M, the CPU defaults
    python -m tools.bench_memory --lora-rank 16 --out reports/memory.json
    python -m tools.bench_memory --model Qwen/Qwen3-1.7B      # on a GPU, where the hub is reachable

Each setup runs in a process of its own, so that each peak is its own: the models load as train.py loads
them, one GRPO step of train.py's defaults runs (--task math --reward logprob: 4 prompts × G 4, 96 new
tokens, β 0.02, on a CPU), and the process reports, counted from the tensors:

    weights     bytes of the policy's parameters and of the reference copy's (a LoRA run has no copy)
    trainable   the parameters AdamW updates; gradients: the bytes of their .grad after the step
    optimizer   the bytes of AdamW's state (two float32 moments per trainable parameter, and a step count)
    peak        the memory held when the step starts (the models loaded) plus the step's own peak above it
                (gradients, AdamW's state, created in the first step, and activations): on a CPU the
                resident set (`tools.bench_setup.PeakMemory`, sampled every millisecond; the Python runtime and
                the libraries are in it, so it differs less than the tensors do), the CUDA allocator on a GPU

The seconds of the step are printed too, for scale; they are not the point (`make bench` times steps).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from tools.bench_setup import PeakMemory

SETUPS = ("full", "lora")


def tensor_bytes(tensors) -> int:
    """Bytes this process holds of `tensors` (None and non-tensors skipped; a sharded DTensor: its local shard)."""
    from grpo.fsdp import local

    return sum(local(t).numel() * local(t).element_size() for t in tensors if isinstance(t, torch.Tensor))


def measure(setup: str, model: str, lora_rank: int, device: str) -> dict:
    """One setup, in this process: load, one default step, the bytes and the peak."""
    from grpo.config import parse_config
    from grpo.lora import LoraOptions
    from grpo.models import load_models
    from grpo.trainer import Trainer
    from tasks import TASKS, task_for

    argv = ["--task", "math", "--reward", "logprob", "--model", model, "--device", device, "--seed", "0"]
    argv += ["--out-dir", "/nonexistent/bench-memory"]  # nothing is written
    if setup == "lora":
        argv += ["--lora-rank", str(lora_rank)]
    config = parse_config(argv, TASKS)
    torch.manual_seed(0)
    lora = LoraOptions.of(config)
    policy, reference, tokenizer = load_models(
        config.model, config.device, config.dtype, with_reference=lora is None, lora=lora
    )
    trainer = Trainer(config, policy, reference, tokenizer, task_for(config))
    on_gpu = trainer.device.type == "cuda"
    before = torch.cuda.memory_allocated(trainer.device) if on_gpu else PeakMemory._rss()
    start = time.perf_counter()
    with PeakMemory(trainer.device) as peak:  # the step's own peak, above the level it started from
        trainer.step()
    seconds = time.perf_counter() - start
    optimizer_state = [v for state in trainer.optimizer.state.values() for v in state.values()]
    return {
        "setup": setup,
        "lora_rank": lora_rank if setup == "lora" else 0,
        "parameters": sum(p.numel() for p in policy.parameters()),
        "trainable": sum(p.numel() for p in trainer.trainable),
        "weights_bytes": tensor_bytes(policy.parameters())
        + (tensor_bytes(reference.parameters()) if reference is not None else 0),
        "gradient_bytes": tensor_bytes(p.grad for p in trainer.trainable),
        "optimizer_bytes": tensor_bytes(optimizer_state),
        "before_step_bytes": before,
        "step_peak_above_bytes": peak.peak,
        "peak_bytes": before + (peak.peak or 0),
        "peak_kind": "cuda allocator" if on_gpu else "resident set",
        "step_seconds": seconds,
        "device": str(trainer.device),
    }


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def table(rows: list[dict]) -> str:
    full = next((r for r in rows if r["setup"] == "full"), None)
    head = ("trainable", "weights", "gradients", "optimizer", "at start", "step peak", "peak")
    lines = [f"{'':<6}" + "".join(f"{h:>14}" for h in head) + f"{'step':>8}"]
    for r in rows:
        name = r["setup"] if r["setup"] == "full" else f"r {r['lora_rank']}"
        lines.append(
            f"{name:<6}{r['trainable']:>14,}{mib(r['weights_bytes']):>14}{mib(r['gradient_bytes']):>14}"
            f"{mib(r['optimizer_bytes']):>14}{mib(r['before_step_bytes']):>14}"
            f"{mib(r['step_peak_above_bytes'] or 0):>14}{mib(r['peak_bytes']):>14}{r['step_seconds']:>7.0f}s"
        )
    for r in rows:
        if full is not None and r is not full:
            lines.append(
                f"LoRA r {r['lora_rank']} / full: trainable {r['trainable'] / full['trainable']:.4f}, optimizer "
                f"{r['optimizer_bytes'] / full['optimizer_bytes']:.4f}, weights "
                f"{r['weights_bytes'] / full['weights_bytes']:.2f}, peak {r['peak_bytes'] / full['peak_bytes']:.2f} "
                f"({r['peak_kind']})"
            )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="as train.py --model")
    parser.add_argument("--lora-rank", type=int, default=16, help="the LoRA run's rank")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--setups", default=",".join(SETUPS), help="comma-separated: full, lora")
    parser.add_argument("--one", choices=SETUPS, help=argparse.SUPPRESS)  # a child process: one setup
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one, args.model, args.lora_rank, args.device)))
        return []
    rows = []
    for setup in args.setups.split(","):
        command = [sys.executable, "-m", "tools.bench_memory", "--one", setup, "--model", args.model,
                   "--lora-rank", str(args.lora_rank), "--device", args.device]  # fmt: skip
        print(f"{setup}: one default step in a process of its own …", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{setup} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
