"""Train a policy with GRPO on Countdown, poetry or your own prompts and answers, with rule-based or
logprob-based rewards.

    python train.py --task math --reward rule --steps 3
    python train.py --task poetry --reward logprob
    python train.py --task jsonl --data examples/riddles.jsonl --reward logprob
    python train.py --preset poster --task math --reward logprob      # Qwen3-1.7B, needs the hub and a GPU

Every option, with its default, is in `python train.py --help` (generated from grpo/config.py).
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
import uuid
from pathlib import Path

import torch

from grpo.config import EXIT_USAGE, Config, SharedOptions, UsageError, parse_config
from grpo.task import Task
from tasks import TASKS

# the numbers broke (NaN/inf logits, or non-finite updates in a row): the run stopped, its checkpoints stay
EXIT_DIVERGED = 3
# the disk filled up: the run stopped, and what it wrote before stays whole (--resume continues it)
EXIT_DISK_FULL = 4


def main(argv: list[str] | None = None) -> int:
    """Train; every usage or input error is one line `error: …` and exit code 2, a traceback only for a bug."""
    from grpo.checkpoint import DamagedCheckpoint, DiskFull
    from grpo.rollout import NonFiniteLogits
    from grpo.run_dir import release_out_dirs
    from grpo.trainer import NonFiniteUpdates

    try:
        run(argv)
    except (UsageError, DamagedCheckpoint) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (NonFiniteLogits, NonFiniteUpdates) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except DiskFull as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DISK_FULL
    finally:
        release_out_dirs()  # the run directory is free again (the process may start another run)
    return 0


def check_device(device: str) -> None:
    """A device that does not exist here is a usage error, found before anything loads."""
    try:
        dev = torch.device(device) if device != "auto" else None
    except RuntimeError as err:
        raise UsageError(f"--device {device}: not a torch device ({err})") from None
    if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device {device}: this machine has no CUDA GPU that torch can use (try --device cpu)"
        )
    if dev is not None and dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available here (try --device cpu)")


def check_installed(config: Config) -> None:
    """What the options need that an install may lack, said in one line before anything loads."""
    if config.lora_rank:
        from grpo.lora import peft

        try:
            peft()  # an optional extra
        except ImportError as err:
            raise UsageError(str(err)) from None
    if config.fsdp:
        try:  # FSDP2, public since torch 2.6 (before it, torch.distributed.fsdp has FSDP1 alone)
            from torch.distributed.fsdp import fully_shard  # noqa: F401
        except ImportError:
            raise UsageError(
                f"--fsdp needs torch 2.6 or newer (torch.distributed.fsdp.fully_shard); this is torch {torch.__version__}"
            ) from None


def run(argv: list[str] | None = None) -> Config:
    """Everything train.py does: the options, the run directory, the data, the models, the steps."""
    config = parse_config(argv, TASKS, description=__doc__.split("\n\n")[0])
    check_device(config.device)
    check_installed(config)
    torch.manual_seed(config.seed)

    from grpo.distributed import setup
    from grpo.models import enable_activation_checkpointing, pick_device
    from grpo.run import quiet_transformers, train
    from grpo.trainer import Trainer

    world, device = setup(config.device)  # torchrun: join the process group; one process: a world of 1
    if config.fsdp and world.size < 2:
        raise UsageError(
            "--fsdp shards the model over torchrun's processes: start it as torchrun --nproc-per-node N train.py "
            "--fsdp … with N ≥ 2"
        )
    say = (lambda text: print(text, file=sys.stderr)) if world.is_main else (lambda text: None)
    if config.micro_batch_size % config.group_size:
        say(
            f"note: --micro-batch-size {config.micro_batch_size} is not a multiple of --group-size "
            f"{config.group_size}: a group split between micro-batches runs its prompt once per row (same result, slower)"
        )
    resume_from, state = take_out_dir(config, world)
    if not sys.stderr.isatty():
        quiet_transformers()  # no "Loading weights" bar redrawn with carriage returns in a log file
    task = load_task(config, str(pick_device(device)), say)  # the data is read and checked before any model
    policy, reference, tokenizer = load_policy(config, device, resume_from, world, say)
    if config.gradient_checkpointing:
        enable_activation_checkpointing(policy)
    if reference is not None and config.reference_device:
        reference.to(config.reference_device)
    trainer = Trainer(config, policy, reference, tokenizer, task, world)
    if resume_from is not None:
        resume(trainer, resume_from, state, world, say)
    # a fresh run empties the directory of an old one now (--overwrite); prints where the model is, or how to resume
    train(trainer, prepare_dir=resume_from is None)
    if (Path(config.out_dir) / "final").is_dir():
        say(next_steps(config))
    return config


def take_out_dir(config: Config, world) -> tuple[Path | None, dict | None]:
    """Hold the run directory for this process (rank 0), checked before the slow part; for --resume, the
    newest checkpoint of this run that reads whole and its state. A fresh run gets its run id."""
    from grpo.checkpoint import resumable_checkpoint
    from grpo.distributed import barrier
    from grpo.run_dir import hold_out_dir, prepare_out_dir

    out_dir = Path(config.out_dir)
    resume_from, state = None, None
    if world.is_main:
        if not config.resume:
            # fail before the slow part; an old run is removed (--overwrite) only once this one has loaded
            prepare_out_dir(out_dir, config.overwrite, remove=False)
        hold_out_dir(out_dir)  # one run at a time in a directory, from now until this process ends
    if config.resume:
        # the newest checkpoint that reads whole (an older one if the newest is damaged), of this run only
        resume_from, state = resumable_checkpoint(out_dir, config.run_id)
    else:
        config.run_id = config.run_id or uuid.uuid4().hex[:12]
    barrier()
    return resume_from, state


def load_task(config: Config, device: str, say) -> Task:
    """The task's data, read and checked (a UsageError names what is wrong); a domain that reads the user's
    answers drops those longer than --max-answer-tokens."""
    from tasks import task_for

    try:
        task = task_for(config, device=device)
        if not task.examples("train"):
            source = task.data_path
            if source is not None and task.examples("test"):
                raise ValueError(f"{source}: every example is in the test split, none is left to train on")
            raise ValueError(
                f"no example of {source} makes a training example" if source else "no training examples"
            )
    except (OSError, ValueError) as err:
        raise UsageError(f"--task {config.task}: {err}") from None
    if "max_answer_tokens" in task.options:  # a domain whose answers come from a user's file
        skip_long_answers(task, config, say)
    return task


def load_policy(config: Config, device, resume_from: Path | None, world, say):
    """(policy, reference or None, tokenizer), in the precision of grpo.precision.training_precision, the
    policy from the checkpoint it resumes; one line says what loaded where."""
    from grpo.checkpoint import MODEL_DIR
    from grpo.lora import LoraOptions
    from grpo.models import load_models, pick_device
    from grpo.precision import training_precision

    lora = LoraOptions.of(config)
    # a LoRA policy is its own reference (its adapters off): no copy to load
    needs_reference = lora is None and (
        config.beta > 0 or (config.reward == "logprob" and config.scorer == "reference")
    )
    # float32 weights unless --dtype asks for bf16; bf16 autocast on a GPU (grpo.precision)
    weights, mixed_precision = training_precision(config.dtype, config.autocast, pick_device(device))
    try:
        policy, reference, tokenizer = load_models(
            config.model,
            device,
            weights,
            with_reference=needs_reference,
            policy_path=None if resume_from is None else str(resume_from / MODEL_DIR),
            lora=lora,
        )
    except (RuntimeError, ValueError) as err:  # a model that cannot be found or is damaged, a LoRA target
        raise UsageError(str(err)) from None  # that is not in it: its message says which
    if lora is not None:
        trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        total = sum(p.numel() for p in policy.parameters())
        kind = f"LoRA r {lora.rank}, α {lora.alpha:g}: {trained:,} of {total:,} weights train"
        kind += "; reference: the policy with its adapters off"
    else:
        kind = f"reference: {'frozen copy' if reference is not None else 'none (β = 0)'}"
    say(
        f"policy {config.model} on {policy.device} in {policy.dtype}{' with bf16 autocast' if mixed_precision else ''} "
        f"× {world.size} process(es){', sharded (FSDP2)' if config.fsdp else ''}; {kind}; writing to {config.out_dir}"
    )
    return policy, reference, tokenizer


def resume(trainer, resume_from: Path, state: dict, world, say) -> None:
    """The trainer's state from the checkpoint (FSDP: its shards); metrics.jsonl and samples.jsonl cut back to
    its step, so that the resumed run appends where the checkpoint was taken."""
    from grpo.checkpoint import SHARDED_DIR, truncate_jsonl

    config = trainer.config
    shards = resume_from / SHARDED_DIR
    if config.fsdp and not (shards / ".metadata").is_file():  # torch.distributed.checkpoint's index
        raise UsageError(
            f"{resume_from} has no complete {SHARDED_DIR}/ (the FSDP shards of its weights and AdamW state)"
        )
    trainer.load_state_dict(state, sharded=shards if config.fsdp else None)
    if world.is_main:
        for name in ("metrics.jsonl", "samples.jsonl"):
            truncate_jsonl(Path(config.out_dir) / name, trainer.step_index)
    say(f"resuming from {resume_from} (step {trainer.step_index} of {config.steps})")


def skip_long_answers(task, config: Config, say) -> None:
    """Drop the training examples whose answer is longer than --max-answer-tokens and say how many. The
    answers are counted in the policy's tokens: its tokenizer loads first, so that a file with no answer
    short enough is refused before the models load."""
    from grpo.models import load_tokenizer

    try:
        tokenizer = load_tokenizer(config.model)
    except RuntimeError as err:  # as for the models: a tokenizer that cannot be found or is damaged
        raise UsageError(str(err)) from None
    total = len(task.examples("train"))
    skipped = task.skip_long_answers(tokenizer, config.max_answer_tokens)
    if skipped == total:
        raise UsageError(
            f"--task {config.task}: the answer of every training example of {config.data} is longer than "
            f"--max-answer-tokens {config.max_answer_tokens}"
        )
    if skipped:
        say(
            f"skipped {skipped} of {total} training examples whose answer is longer than --max-answer-tokens "
            f"{config.max_answer_tokens} (skipped_long_answers in metrics.jsonl)"
        )


def next_steps(config: Config) -> str:
    """The commands that tell whether this run helped: the start and the result on the same held-out
    examples and seeds, then their paired difference."""
    # the task's own options that evaluate.py takes too: it must read, split and prompt the examples as training did
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    shared = {f.name for f in dataclasses.fields(SharedOptions)}
    given = [name for name in TASKS[config.task].options
             if name in shared and getattr(config, name) != defaults[name]]  # fmt: skip
    data = "".join(f" --{name.replace('_', '-')} {shlex.quote(str(getattr(config, name)))}" for name in given)
    # evaluated at the completion length it was trained at: a longer one is mostly reasoning it never practised
    common = (
        f"python evaluate.py --task {config.task}{data} --limit 50 --max-new-tokens {config.max_new_tokens}"
    )
    out = config.out_dir
    return (
        "did it help? evaluate the start and the result on the same held-out examples, then compare them:\n"
        f"  {common} --model {config.model} --name start --out {out}/eval-start.json\n"
        f"  {common} --model {out}/final --name trained --out {out}/eval-final.json\n"
        f"  python evaluate.py --compare {out}/eval-start.json {out}/eval-final.json"
    )


if __name__ == "__main__":
    from grpo.cli import one_line_warnings

    one_line_warnings()
    sys.exit(main())
