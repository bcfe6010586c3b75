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

    from grpo.checkpoint import MODEL_DIR, latest_checkpoint, read_state, truncate_jsonl
    from grpo.distributed import barrier, setup
    from grpo.models import enable_activation_checkpointing, load_models, pick_device, training_precision
    from grpo.trainer import Trainer, prepare_out_dir
    from tasks import get_task

    world, device = setup(config.device)  # torchrun: join the process group; one process: a world of 1
    say = (lambda text: print(text, file=sys.stderr)) if world.is_main else (lambda text: None)
    if config.micro_batch_size % config.group_size:
        say(
            f"note: --micro-batch-size {config.micro_batch_size} is not a multiple of --group-size "
            f"{config.group_size}: a group split between micro-batches runs its prompt once per row (same result, slower)"
        )
    out_dir = Path(config.out_dir)
    resume_from = None
    if config.resume:
        found = latest_checkpoint(out_dir)
        if found is None:
            raise SystemExit(
                f"error: --resume {out_dir}: no complete checkpoint under {out_dir / 'checkpoints'}"
            )
        resume_from = found[1]
    elif world.is_main:
        prepare_out_dir(out_dir, config.overwrite)  # fail before the slow part
    barrier()

    options = {"data": config.data, "device": str(pick_device(device))} if config.task == "poetry" else {}
    task = get_task(config.task, **options)
    needs_reference = config.beta > 0 or (config.reward == "logprob" and config.scorer == "reference")
    # float32 weights unless --dtype asks for half precision; bf16 autocast on a GPU (grpo.models)
    weights, mixed_precision = training_precision(config.dtype, config.autocast, pick_device(device))
    try:
        policy, reference, tokenizer = load_models(
            config.model,
            device,
            weights,
            with_reference=needs_reference,
            policy_path=None if resume_from is None else str(resume_from / MODEL_DIR),
        )
    except RuntimeError as err:  # a model or tokenizer that cannot be found: its message says what to do
        raise SystemExit(f"error: {err}") from None
    say(
        f"policy {config.model} on {policy.device} in {policy.dtype}{' with bf16 autocast' if mixed_precision else ''} "
        f"× {world.size} process(es); reference: "
        f"{'frozen copy' if reference is not None else 'none (β = 0)'}; writing to {out_dir}"
    )
    if config.gradient_checkpointing:
        enable_activation_checkpointing(policy)
    if reference is not None and config.reference_device:
        reference.to(config.reference_device)
    trainer = Trainer(config, policy, reference, tokenizer, task, world)
    if resume_from is not None:
        trainer.load_state_dict(read_state(resume_from))
        if world.is_main:
            for name in ("metrics.jsonl", "samples.jsonl"):
                truncate_jsonl(out_dir / name, trainer.step_index)
        say(f"resuming from {resume_from} (step {trainer.step_index} of {config.steps})")
    trainer.train(resumed=resume_from is not None)
    say(f"done: metrics in {out_dir}/metrics.jsonl, model in {out_dir}/final")
    return config


if __name__ == "__main__":
    main()
