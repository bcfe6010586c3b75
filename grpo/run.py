"""The run around the steps: the loop, what it writes, checkpoints, stop signals, the progress line.

    prepare_out_dir                 one run per directory (grpo.run_dir; --overwrite empties it of an old run)
    train(trainer)                  until --steps: step, metrics line, samples, checkpoint every --save-every
        train_step(trainer)         Trainer.step, then its metrics (over every rank) and a few samples
        held_out_evaluation         every --eval-every steps, on the test split (grpo.evaluation)
        checkpoint(trainer)         weights + Trainer.state_dict, written whole or not at all (grpo.checkpoint)
    final/                          the policy in Hugging Face format, hard-linked from the last checkpoint
                                    (LoRA: merged into one plain model, the adapters under final/adapter/)

Only rank 0 writes files; every rank takes part in the collectives of a step and a checkpoint. The algorithm
itself is `grpo.trainer`'s.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sys
import threading
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from grpo.checkpoint import (
    MODEL_DIR,
    checkpoint_bytes,
    disk_full,
    parameter_bytes,
    run_disk_bytes,
    shards_dir,
    write_checkpoint,
)
from grpo.distributed import all_gather, all_sum, barrier, gather_objects
from grpo.evaluation import evaluate_model
from grpo.files import atomic_directory
from grpo.fsdp import full_state_dict, save_sharded
from grpo.lora import ADAPTER_DIR, save_merged
from grpo.run_dir import prepare_out_dir
from grpo.trainer import StepResult, Trainer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

    from peft import PeftModel
    from tqdm.auto import tqdm


class StopRequests:
    """SIGINT / SIGTERM ask the run to stop after the current step (a second SIGINT stops it at once)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: finishing the current step, then saving a checkpoint", file=sys.stderr)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(trainer: Trainer, progress: bool = True, prepare_dir: bool = True) -> list[dict]:
    """Run until `steps`; checkpoint every `save_every` steps, at the end, and on SIGINT / SIGTERM.
    Returns the metrics of the steps run.

    `prepare_dir`: first make the run directory hold only this run (`prepare_out_dir`); a resumed run
    continues the files it finds, so it passes False.
    """
    config = trainer.config
    # a terminal gets bars (steps, the rollout's tokens, the phase running); a file or a pipe gets one
    # plain line per step, without carriage returns
    interactive = progress and trainer.world.is_main and sys.stderr.isatty()
    history, saved_at, stopping = [], None, False
    with StopRequests() as stop, stop_when_the_disk_is_full(trainer):
        start_run_files(trainer, interactive, prepare_dir)
        bar = step_bar(trainer, interactive)
        while trainer.step_index < config.steps and not stopping:
            metrics = step_and_write(trainer)
            history.append(metrics)
            bar.update(1)
            bar.set_postfix_str(progress_line(metrics))
            if progress and trainer.world.is_main and not interactive:
                print(f"step {trainer.step_index}/{config.steps}  {progress_line(metrics)}", file=sys.stderr)
            # every rank stops after the same step, whichever of them the signal reached
            stopping = all_sum(1.0 if stop.signal else 0.0) > 0
            if (config.save_every and trainer.step_index % config.save_every == 0) or stopping:
                checkpoint(trainer)
                saved_at = trainer.step_index
        bar.close()
        if stopping:
            if trainer.world.is_main:
                print(
                    f"stopped by {stop.signal or 'a stop request'} after step {trainer.step_index}; checkpoint "
                    f"saved. Resume with: python train.py --resume {config.out_dir}",
                    file=sys.stderr,
                )
            return history
        # still inside StopRequests: a SIGTERM now is noted, not fatal, and the last checkpoint and final/
        # are written whole (a signal here used to kill the save and leave no complete checkpoint)
        finish_run(trainer, saved_at)
    barrier()
    return history


@contextlib.contextmanager
def stop_when_the_disk_is_full(trainer: Trainer) -> Iterator[None]:
    """A write that finds the disk full (a checkpoint, final/, a metrics line) stops the run with DiskFull,
    which names what it kept and how to go on, instead of a traceback."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        assert trainer.config.out_dir is not None  # (parse_config names one)
        raise disk_full(Path(trainer.config.out_dir), trainer.step_index) from err


def warn_if_the_disk_is_short(trainer: Trainer, out_dir: Path) -> None:
    """Warn, before the first step, when the disk of `out_dir` has less space free than the run's checkpoints
    will take at once (an estimate: `grpo.checkpoint.run_disk_bytes`)."""
    c = trainer.config
    per_checkpoint = checkpoint_bytes(trainer.policy, lora=trainer.lora, sharded=trainer.fsdp)
    saves = (c.steps - trainer.step_index) // c.save_every + 1 if c.save_every else 1  # (at most)
    merged = parameter_bytes(trainer.policy) if trainer.lora else 0  # a LoRA run's final model: every weight
    need = run_disk_bytes(per_checkpoint, saves, c.keep_checkpoints, merged)
    free = shutil.disk_usage(out_dir).free
    if free < need:
        print(
            f"warning: the disk of {out_dir} has {free / 1e9:.2f} GB free, and this run's checkpoints take about "
            f"{need / 1e9:.2f} GB at once ({per_checkpoint / 1e9:.2f} GB each, --keep-checkpoints "
            f"{c.keep_checkpoints}): free space, or keep fewer. A save that finds the disk full stops the run, "
            "and the checkpoints written before it stay",
            file=sys.stderr,
        )


def start_run_files(trainer: Trainer, interactive: bool, prepare_dir: bool) -> None:
    """Before the first step: the run directory holds this run only (`prepare_dir`), with its config.json."""
    trainer.progress = interactive
    if not interactive:
        quiet_transformers()  # its own bars (e.g. "Writing model shards") would redraw with \r
    if trainer.world.is_main:
        assert trainer.config.out_dir is not None  # (parse_config names one)
        out_dir = Path(trainer.config.out_dir)
        if prepare_dir:
            prepare_out_dir(out_dir, trainer.config.overwrite)
        (out_dir / "config.json").write_text(json.dumps(asdict(trainer.config), indent=2) + "\n")
        warn_if_the_disk_is_short(trainer, out_dir)
    barrier()


def step_bar(trainer: Trainer, interactive: bool) -> tqdm:
    """The steps' progress bar (off unless `interactive`), which also shows the phase a step is in."""
    from tqdm.auto import tqdm

    config = trainer.config
    bar = tqdm(total=config.steps, initial=trainer.step_index, desc=f"{trainer.task.name}/{config.reward}",
               disable=not interactive)  # fmt: skip
    if interactive:
        trainer.show_phase = lambda name: bar.set_postfix_str(f"{name}…")
    return bar


def step_and_write(trainer: Trainer) -> dict:
    """One step (and the held-out evaluation every --eval-every steps); rank 0 appends its line to
    metrics.jsonl and its samples to samples.jsonl. Returns the step's metrics."""
    assert trainer.config.out_dir is not None  # (parse_config names one)
    config, out_dir = trainer.config, Path(trainer.config.out_dir)
    metrics, samples = train_step(trainer)
    if not trainer.world.is_main:
        return metrics
    if config.eval_every and trainer.step_index % config.eval_every == 0:
        trainer.show_phase("held-out evaluation")
        metrics.update(held_out_evaluation(trainer))
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(metrics) + "\n")
    with open(out_dir / "samples.jsonl", "a") as f:
        for s in samples:
            f.write(json.dumps(s) + "\n")
    return metrics


def finish_run(trainer: Trainer, saved_at: int | None) -> None:
    """After the last step: its checkpoint (unless the last step wrote one) and final/, the model."""
    if saved_at != trainer.step_index:
        checkpoint(trainer)
    if trainer.world.is_main:
        assert trainer.config.out_dir is not None  # (parse_config names one)
        out_dir = Path(trainer.config.out_dir)
        last = out_dir / "checkpoints" / f"step-{trainer.step_index:08d}"
        save_model(trainer, out_dir / "final", same_as=last)
        print(f"done: metrics in {out_dir}/metrics.jsonl, model in {out_dir}/final", file=sys.stderr)


def train_step(trainer: Trainer) -> tuple[dict, list[dict]]:
    """One step: its line of metrics.jsonl, over the global batch (every rank's completions), and the first
    --samples-per-step completions of this rank, for samples.jsonl."""
    result = trainer.step()
    return step_metrics(trainer, result), step_samples(trainer, result)


def step_metrics(trainer: Trainer, result: StepResult) -> dict:
    world = trainer.world.size
    lengths = all_gather(result.completion_tokens)  # (N_global,)
    loss_tokens = all_gather(result.loss_tokens)  # (N_global,)
    formats = all_gather(result.formats)  # (N_global,)
    metrics: dict[str, Any] = {"step": trainer.step_index}
    all_rewards = all_gather(result.rewards)  # (N_global,)
    # a non-finite reward is left out of the normalisation and the baselines (advantage 0); count it
    metrics["nonfinite_rewards"] = int((~torch.isfinite(all_rewards)).sum())
    if metrics["nonfinite_rewards"] and trainer.world.is_main:
        print(
            f"warning: step {trainer.step_index}: {metrics['nonfinite_rewards']} of {all_rewards.numel()} "
            "rewards are NaN or infinite; they get no advantage (see nonfinite_rewards in metrics.jsonl)",
            file=sys.stderr,
        )
    metrics["reward_mean"], metrics["reward_std"] = mean_std(all_rewards)
    for name, values in {**result.parts, **result.signals}.items():
        metrics[f"{name}_mean"], metrics[f"{name}_std"] = mean_std(all_gather(values.float()))
    finish_reasons = sum((Counter(r) for r in gather_objects(result.finish_reasons)), Counter())

    def over_ranks(values: list[float]) -> float:  # the mean over this rank's values, then over the ranks
        return all_sum(sum(values) / len(values)) / world

    stats = result.loss_stats
    t = result.seconds
    metrics.update(
        format_rate=float(formats.mean()),
        loss=sum(result.losses) / len(result.losses),
        kl=over_ranks([s.kl for s in stats]),
        clip_fraction=over_ranks([s.clip_fraction for s in stats]),
        ratio_mean=over_ranks([s.ratio_mean for s in stats]),
        grad_norm=sum(result.grad_norms) / len(result.grad_norms) if result.grad_norms else None,
        lr=trainer.scheduler.get_last_lr()[0],
        zero_std_fraction=all_sum(result.zero_std_fraction) / world,
        skipped_long_prompts=trainer.skipped_long_prompts,
        skipped_updates=trainer.skipped_updates,
        skipped_long_answers=trainer.task.skipped_long_answers,  # Task.skip_long_answers
        completion_length_mean=float(lengths.mean()),
        completion_length_max=float(lengths.max()),
        loss_tokens_mean=float(loss_tokens.mean()),
        finish_reasons=dict(finish_reasons),
        time_rollout=t["rollout"],
        time_reference=t["reference"],
        time_reward=t["reward"],
        time_update=t["update"],
        rollout_tokens_per_s=float(lengths.sum()) / max(t["rollout"], 1e-9),  # all ranks' useful tokens
    )
    return metrics


def step_samples(trainer: Trainer, result: StepResult) -> list[dict]:
    return [
        {
            "step": trainer.step_index,
            "example": result.examples[i].id,
            "gold": result.examples[i].gold,
            "response": result.responses[i],
            "reward": float(result.rewards[i]),
            "advantage": float(result.advantages[i]),
            "parts": {k: float(v[i]) for k, v in result.parts.items()},  # the reward's
            "signals": {k: float(v[i]) for k, v in result.signals.items()},  # logged beside it (grpo.rewards)
        }
        for i in range(min(trainer.config.samples_per_step, len(result.responses)))
    ]


def mean_std(values: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean and std of the finite values (NaN and ±inf are counted apart); None when there are none."""
    values = values.double()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return None, None
    return float(values.mean()), float(values.std(unbiased=False)) if values.numel() > 1 else 0.0


def held_out_evaluation(trainer: Trainer) -> dict:
    """A small held-out evaluation: the poster's sampling (T 0.6, top-p 0.95) on the test split.

    It samples with its own seeded generator, so it changes nothing of the training run's randomness
    (a run with --eval-every and one without train identically). Besides the task's score and parts it
    logs what --reward logprob optimises, scored by the policy: the gold answer's mean log-prob per
    token after the sampled reasoning (with its 95% CI), after an empty reasoning, and their
    difference, the reasoning gain (grpo.evaluation's module docstring defines them).
    """
    c = trainer.config
    report = evaluate_model(
        trainer.policy,
        trainer.tokenizer,
        trainer.task,
        limit=c.eval_limit,
        max_new_tokens=c.max_new_tokens,
        batch_size=c.micro_batch_size,
        seed=c.seed,
        progress=False,
        autocast=trainer.mixed_precision,  # as the rollout samples, and as evaluate.py --dtype auto does
        compile=trainer.compile,
    )
    logged = {
        "eval_score": report["score"],
        "eval_score_low": report["total"]["low"],
        "eval_score_high": report["total"]["high"],
    }
    logged.update({f"eval_{name}": ci["mean"] for name, ci in report["parts"].items()})
    likelihood = report.get("likelihood")  # absent when no test example has a gold answer to score
    if likelihood:
        per_token = likelihood["gold_logprob_per_token"]  # log P(a | p, r) / |a|
        logged.update(
            eval_gold_logprob_per_token=per_token["mean"],
            eval_gold_logprob_per_token_low=per_token["low"],
            eval_gold_logprob_per_token_high=per_token["high"],
            eval_gold_logprob_empty_per_token=likelihood["gold_logprob_empty_per_token"]["mean"],
            eval_reasoning_gain_per_token=likelihood["reasoning_gain_per_token"]["mean"],
        )
    return logged


def checkpoint(trainer: Trainer) -> None:
    state = trainer.state_dict()  # every rank takes part: the RNG states are gathered
    assert trainer.config.out_dir is not None  # (parse_config names one)
    run_dir, weights = Path(trainer.config.out_dir), None
    if trainer.fsdp:  # every rank writes its shards, then the policy is gathered whole on rank 0
        save_sharded(shards_dir(run_dir, trainer.step_index), trainer.policy_logprobs, trainer.optimizer)
        weights = full_state_dict(trainer.policy_logprobs, prefix="model.")
        barrier()
    failed: OSError | None = None
    if trainer.world.is_main:
        try:
            write_checkpoint(
                run_dir,
                trainer.step_index,
                trainer.policy,
                trainer.tokenizer,
                state,
                trainer.config.keep_checkpoints,
                weights=weights,
            )
        except OSError as err:  # a full disk, most often: every rank stops, not only the one that wrote
            failed = err
    if all_sum(float(failed is not None)) > 0:
        if failed is not None:
            raise failed
        raise RuntimeError(f"rank 0 could not write the checkpoint of step {trainer.step_index}")


def save_model(trainer: Trainer, path: Path, same_as: Path | None = None) -> None:
    """The policy in Hugging Face format (safetensors), written to a temporary directory, then renamed.

    `same_as`: a checkpoint of these very weights; its model files are hard-linked instead of written
    again (the weights then take their space once on disk; a copy where the filesystem cannot link).
    A LoRA policy is saved merged (W + (α / r)·BA, one plain model), its adapters under `adapter/`.
    """
    source = None if same_as is None else same_as / MODEL_DIR
    with atomic_directory(path) as tmp:
        if trainer.lora:
            # (trainer.lora is is_adapted(policy): the policy is PEFT's wrapper)
            save_merged(cast("PeftModel", trainer.policy), trainer.tokenizer, tmp)
            tmp = tmp / ADAPTER_DIR
            tmp.mkdir()
        if source is not None and source.is_dir():
            for file in source.iterdir():
                try:
                    os.link(file, tmp / file.name)
                except OSError:
                    shutil.copy2(file, tmp / file.name)
        else:
            # PEFT types the directory as a str; it takes any path, as transformers does
            trainer.policy.save_pretrained(tmp, safe_serialization=True)  # type: ignore[arg-type]
            trainer.tokenizer.save_pretrained(tmp)


def quiet_transformers() -> None:
    """No transformers progress bars: output that is not a terminal gets plain lines only."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def progress_line(metrics: dict) -> str:
    """One step in one line: the reward, the format rate, KL, and the signals that warn of a collapse
    (reasoning shrinking, every completion closing </think> at once, reasonings under --min-reasoning-tokens,
    groups without reward spread)."""

    def number(key: str, digits: int) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}"

    line = f"reward {number('reward_mean', 3)}  format {number('format_rate', 2)}  kl {number('kl', 4)}"
    if "reasoning_tokens_mean" in metrics:
        line += (
            f"  reasoning {number('reasoning_tokens_mean', 0)} tok  closed {number('think_closed_mean', 2)}"
            f"  short {number('reasoning_too_short_mean', 2)}"
        )
    line += f"  zero-std {number('zero_std_fraction', 2)}"
    seconds = sum(metrics.get(f"time_{phase}", 0.0) for phase in ("rollout", "reward", "reference", "update"))
    return line + f"  ({seconds:.0f} s)"
