"""Train a policy with GRPO on Countdown or poetry, with rule-based or logprob-based rewards.

    python train.py --task math --reward rule --steps 3
    python train.py --task poetry --reward logprob
    python train.py --preset poster --task math --reward logprob      # Qwen3-1.7B, needs the hub and a GPU

Every option, with its default, is in `python train.py --help` (generated from grpo/config.py).
"""

from __future__ import annotations

import sys

import torch

from grpo.config import Config, parse_config


def main(argv: list[str] | None = None) -> Config:
    config = parse_config(argv, description=__doc__.split("\n\n")[0])
    torch.manual_seed(config.seed)

    from pathlib import Path

    from grpo.models import load_models, pick_device
    from grpo.trainer import Trainer, prepare_out_dir
    from tasks import get_task

    prepare_out_dir(Path(config.out_dir), config.overwrite)  # fail before the slow part
    options = (
        {"data": config.data, "device": str(pick_device(config.device))} if config.task == "poetry" else {}
    )
    task = get_task(config.task, **options)
    needs_reference = config.beta > 0 or (config.reward == "logprob" and config.scorer == "reference")
    policy, reference, tokenizer = load_models(
        config.model, config.device, config.dtype, with_reference=needs_reference
    )
    print(
        f"policy {config.model} on {policy.device} in {policy.dtype}; reference: "
        f"{'frozen copy' if reference is not None else 'none (β = 0)'}; writing to {config.out_dir}",
        file=sys.stderr,
    )
    Trainer(config, policy, reference, tokenizer, task).train()
    print(
        f"done: metrics in {config.out_dir}/metrics.jsonl, model in {config.out_dir}/final", file=sys.stderr
    )
    return config


if __name__ == "__main__":
    main()
