"""One GRPO step, written out: rollout → rewards → advantages → reference → μ policy updates.

    for each step:
        sample prompts_per_step prompts, G completions each            (grpo.rollout)
        score them: the task's rules, or the logprob reward + format   (tasks/*, grpo.rewards)
        A_i = R_i − mean over the group of i                           (grpo.advantages)
        log π_ref of the sampled tokens, when β > 0                    (grpo.logprobs)
        μ times: the clipped surrogate − β·KL on the kept tokens,      (grpo.loss)
                 accumulated over micro-batches, one AdamW step

Nothing here knows about Countdown or poems: a task gives examples, messages and a scorer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

from grpo.advantages import group_advantages
from grpo.checkpoint import MODEL_DIR, atomic_directory, write_checkpoint
from grpo.config import Config, UsageError, use_reasoning_mask
from grpo.distributed import World, all_gather, all_sum, barrier, gather_objects
from grpo.evaluation import evaluate_model
from grpo.logprobs import TokenLogprobs, batched_token_logprobs
from grpo.loss import grpo_loss, microbatch_weight
from grpo.models import lost_update_fraction, stop_token_ids, training_precision
from grpo.reasoning import reasoning_mask
from grpo.rewards import GoldScores, gold_scores_of_completions, logprob_reward
from grpo.rollout import Rollout, build_prompt, rollout
from grpo.tags import THINK_OPEN, format_reward
from tasks.base import Example, Task


class StopRequests:
    """SIGINT / SIGTERM ask the run to stop after the current step (a second SIGINT stops it at once)."""

    def __init__(self):
        self.signal: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: finishing the current step, then saving a checkpoint", file=sys.stderr)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# everything the trainer writes into a run directory; --overwrite removes exactly these
RUN_FILES = ("config.json", "metrics.jsonl", "samples.jsonl")
RUN_DIRS = ("checkpoints", "final")


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Make `out_dir` hold one run: refuse a directory that holds another run, or with `overwrite` empty
    it of everything a run writes (files, checkpoints, the final model) so nothing of the old run is left
    for --resume to continue or for a reader to mistake for the new one."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} is a file, not a directory")
    found = [out_dir / name for name in RUN_FILES + RUN_DIRS if (out_dir / name).exists()]
    found += list(out_dir.glob(".final-*")) if out_dir.is_dir() else []  # a save interrupted mid-write
    if found:
        if not overwrite:
            raise UsageError(f"{out_dir} already holds a run; choose another --out-dir or pass --overwrite")
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"--overwrite: removed the previous run's {', '.join(p.name for p in found)} from {out_dir}",
              file=sys.stderr)  # fmt: skip
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out-dir {out_dir} cannot be written ({err.strerror})") from None


def lr_lambda(config: Config, total_updates: int):
    warmup = int(config.warmup_ratio * total_updates)

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / (warmup + 1)
        if config.lr_schedule == "cosine":
            progress = (update - warmup) / max(1, total_updates - warmup)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def mean_std(values: torch.Tensor) -> tuple[float | None, float | None]:
    """Mean and std of the finite values (NaN and ±inf are counted apart); None when there are none."""
    values = values.double()
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return None, None
    return float(values.mean()), float(values.std(unbiased=False)) if values.numel() > 1 else 0.0


class Trainer:
    def __init__(self, config: Config, policy, reference, tokenizer, task: Task, world: World | None = None):
        world = world or World()
        self.config, self.task, self.tokenizer, self.world = config, task, tokenizer, world
        self.policy, self.reference = policy, reference
        if config.prompts_per_step % world.size:
            raise ValueError(
                f"--prompts-per-step {config.prompts_per_step} must be a multiple of the {world.size} processes"
            )
        # DDP averages gradients of what runs inside its wrapped module's forward: the policy's log-probs
        self.logprobs = TokenLogprobs(policy)
        if world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.logprobs = DistributedDataParallel(self.logprobs)
        if config.beta > 0 and reference is None:
            raise ValueError("β > 0 needs a reference model")
        self.device = next(policy.parameters()).device
        # mixed precision (the GPU default): float32 weights and AdamW state, forward passes in bf16
        self.mixed_precision = training_precision(config.dtype, config.autocast, self.device)[1]
        lost = lost_update_fraction(policy.parameters(), config.lr)
        if lost > 0.5:
            warnings.warn(
                f"at --lr {config.lr:g}, an AdamW step (about lr per weight) rounds away for {lost:.0%} of "
                f"the {next(policy.parameters()).dtype} weights: most updates will be lost. Use float32 "
                "weights (--dtype auto, with bf16 autocast on a GPU) or a larger learning rate",
                stacklevel=2,
            )
        self.stop_ids = stop_token_ids(policy, tokenizer)
        self.train_examples = list(task.examples("train"))
        if not self.train_examples:
            raise ValueError(f"task {task.name!r} has no training examples")
        self.optimizer = torch.optim.AdamW(
            policy.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        total_updates = config.steps * config.mu
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, total_updates))
        # each rank samples differently, reproducibly; rank 0 of N uses the seed itself, as one process does
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 1_000_003 * world.rank)
        self.data_rng = random.Random(config.seed)
        self.order: list[int] = []
        self.step_index = 0
        self.skipped_long_prompts = 0
        self._prompt_cache: dict[str, list[int]] = {}
        self.progress = False  # a bar per rollout, under the bar of steps
        self.show_phase = lambda name: None  # tells the terminal which phase of a step is running
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------ data

    def next_examples(self) -> list[Example]:
        """The next prompts_per_step examples of a reshuffled-every-epoch pass over the train split.

        An example whose prompt is longer than max_prompt_tokens is skipped, not cut (a cut prompt loses
        its instructions); the count is logged as `skipped_long_prompts`.
        """
        batch: list[Example] = []
        skipped_in_a_row = 0
        while len(batch) < self.config.prompts_per_step:
            if not self.order:
                self.order = list(range(len(self.train_examples)))
                self.data_rng.shuffle(self.order)
            example = self.train_examples[self.order.pop()]
            if len(self.prompt_ids(example)) > self.config.max_prompt_tokens:
                self.skipped_long_prompts += 1
                skipped_in_a_row += 1
                if skipped_in_a_row > 2 * len(self.train_examples):  # two whole passes: none fits
                    raise ValueError(
                        f"every prompt is longer than --max-prompt-tokens {self.config.max_prompt_tokens}"
                    )
                continue
            skipped_in_a_row = 0
            batch.append(example)
        return batch

    def prompt_ids(self, example: Example) -> list[int]:
        if example.id not in self._prompt_cache:
            self._prompt_cache[example.id] = build_prompt(self.tokenizer, self.task.messages(example))
        return self._prompt_cache[example.id]

    # ------------------------------------------------------------ rewards

    def rule_rewards(self, examples: list[Example], responses: list[str]) -> tuple[torch.Tensor, dict]:
        scored = self.task.score_batch(examples, responses)
        rewards = torch.tensor([r.total for r in scored], dtype=torch.float32)
        parts = {name: torch.tensor([r.parts[name] for r in scored]) for name in scored[0].parts}
        return rewards, parts

    def logprob_rewards(
        self,
        examples: list[Example],
        prompts: list[list[int]],
        out: Rollout,
        think_ends: list[int | None],
        fmt: torch.Tensor,  # (N,) format reward of each response
    ) -> tuple[torch.Tensor, dict]:
        c = self.config
        scorer = self.reference if c.scorer == "reference" else self.policy
        if scorer is None:
            raise ValueError("--scorer reference needs a reference model (β > 0)")
        scorer.eval()
        # log P(gold | prompt, reasoning_i), the context built as evaluation builds it
        gold = gold_scores_of_completions(
            scorer,
            self.tokenizer,
            prompts,
            out.completion_ids,
            out.completion_mask,
            [ex.gold for ex in examples],
            stop_token_ids=self.stop_ids,
            micro_batch_size=c.micro_batch_size,
            with_empty_reasoning=c.debias,
            group_size=c.group_size,
            think_ends=think_ends,
        )
        scores, closed_t = gold.scores, gold.closed
        # the length guard: a reasoning shorter than this cannot win on its gold log-prob
        too_short = gold.reasoning_tokens < c.min_reasoning_tokens  # (n,) bool
        # the batch-level normalisation sees every completion of the step, on every rank
        n, rank = len(examples), self.world.rank
        everyone = GoldScores(
            all_gather(scores.logp_sum),
            all_gather(scores.gold_tokens),
            None if scores.empty_logp_sum is None else all_gather(scores.empty_logp_sum),
        )
        logprob = logprob_reward(
            everyone,
            all_gather(closed_t),
            length_norm=c.length_norm,
            exp=c.exp_norm,
            batch_norm=c.batch_norm,
            debias=c.debias,
            unclosed=c.unclosed,
            too_short=all_gather(too_short),
        )[rank * n : (rank + 1) * n].cpu()
        # total reward = w_lp · normalised logprob reward + w_fmt · format reward (the poster: 0.9 / 0.1)
        rewards = c.logprob_weight * logprob + c.format_weight * fmt
        parts = {
            "format": fmt,
            "logprob": logprob,
            "logprob_raw": scores.logp_sum.cpu(),
            "logprob_per_token": (scores.logp_sum / scores.gold_tokens).cpu(),
            "gold_tokens": scores.gold_tokens.cpu(),
            "reasoning_tokens": gold.reasoning_tokens.cpu(),
            "think_closed": closed_t.float().cpu(),
            "reasoning_too_short": too_short.float().cpu(),
        }
        if scores.empty_logp_sum is not None:
            parts["logprob_empty_reasoning"] = scores.empty_logp_sum.cpu()
        return rewards, parts

    # ------------------------------------------------------------ the update

    def policy_update(self, input_ids, attention_mask, start, advantages, loss_mask, ref_logp, old_logp):
        """μ AdamW steps on this rank's rows; with DDP the gradient is that of the global batch's loss."""
        c = self.config
        temperature = c.temperature or 1.0
        self.policy.train()
        advantages = advantages.to(self.device)
        n = input_ids.shape[0]
        # DDP averages the ranks' gradients. For "sequence" and "constant" every rank holds as many rows, so
        # the mean of the ranks' means is the global mean. For "token" each rank's loss is rescaled from
        # its own token count to the global one: × world size × local kept tokens / global kept tokens.
        rescale = 1.0
        if c.loss_aggregation == "token" and self.world.size > 1:
            local = float(loss_mask.sum())
            rescale = self.world.size * local / max(all_sum(local), 1.0)
        starts = list(range(0, n, c.micro_batch_size))
        stats_log, losses, grad_norms = [], [], []
        for _ in range(c.mu):
            self.optimizer.zero_grad(set_to_none=True)
            total_loss = 0.0
            for i in starts:
                rows = slice(i, i + c.micro_batch_size)
                # gradients are exchanged once, on the last micro-batch
                sync = i == starts[-1] or self.world.size == 1
                with contextlib.nullcontext() if sync else self.logprobs.no_sync():
                    logp = self.logprobs(
                        input_ids[rows], attention_mask[rows], start, temperature, group_size=c.group_size
                    )  # (mb, C): each group's prompt runs once
                    # μ = 1: π_old is the current policy, so the ratio is exactly 1 and carries logp's gradient
                    old = logp.detach() if old_logp is None else old_logp[rows]
                    loss, stats = grpo_loss(
                        logp,
                        old,
                        None if ref_logp is None else ref_logp[rows],
                        advantages[rows],
                        loss_mask[rows],
                        clip_eps=c.clip_eps,
                        beta=c.beta,
                        aggregation=c.loss_aggregation,
                        max_tokens=c.max_new_tokens,
                    )
                    weight = microbatch_weight(loss_mask[rows], loss_mask, c.loss_aggregation) * rescale
                    # outside autocast: the backward follows the dtypes of the forward it retraces
                    with torch.autocast(self.device.type, enabled=False):
                        (loss * weight).backward()
                total_loss += float(loss.detach()) * weight
                stats_log.append(stats)
            if c.max_grad_norm > 0:
                grad_norms.append(
                    float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm))
                )
            self.optimizer.step()
            self.scheduler.step()
            losses.append(all_sum(total_loss) / self.world.size)
        return losses, stats_log, grad_norms

    # ------------------------------------------------------------ one step

    def autocast(self):
        """bf16 autocast for the forward passes under mixed precision; a no-op otherwise."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision)

    def step(self) -> tuple[dict, list[dict]]:
        """One GRPO step, under bf16 autocast when training in mixed precision: (metrics, a few samples)."""
        with self.autocast():
            return self._step()

    def _step(self) -> tuple[dict, list[dict]]:
        c = self.config
        G = c.group_size
        # every rank draws the same global batch, then takes its share
        share = c.prompts_per_step // self.world.size
        examples = self.next_examples()[self.world.rank * share : (self.world.rank + 1) * share]
        prompts = [self.prompt_ids(ex) for ex in examples]
        row_examples = [ex for ex in examples for _ in range(G)]  # (N,) completion i answers row_examples[i]
        row_prompts = [p for p in prompts for _ in range(G)]

        self.show_phase("rollout")
        # 1. rollout: G completions per prompt
        t0 = time.perf_counter()
        self.policy.eval()
        out = rollout(
            self.policy,
            self.tokenizer,
            prompts,
            group_size=G,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            stop_token_ids=self.stop_ids,
            one_think=c.one_think,
            generator=self.generator,
            progress=self.progress,
        )
        t_rollout = time.perf_counter() - t0
        # what the model wrote from the prefilled <think> on: what the scorers read
        responses = [THINK_OPEN + text for text in out.texts]

        self.show_phase("rewards")
        # 2. rewards (N,), with their parts; the reasoning span for the mask and the logprob reward
        t0 = time.perf_counter()
        span_mask, think_ends = reasoning_mask(self.tokenizer, out.completion_ids, out.completion_mask)
        formats = torch.tensor([format_reward(r) for r in responses])  # (N,)
        rule_rewards, rule_parts = self.rule_rewards(row_examples, responses)
        if c.reward == "logprob":
            rewards, parts = self.logprob_rewards(row_examples, row_prompts, out, think_ends, formats)
            parts.update({f"rule_{k}": v for k, v in rule_parts.items()})  # watched, not trained on
        else:
            rewards, parts = rule_rewards, rule_parts
        advantages, zero_std_fraction = group_advantages(rewards, G, scale=c.scale_advantages)  # (N,)
        t_reward = time.perf_counter() - t0

        self.show_phase("reference")
        # 3. log π_ref (and log π_old when μ > 1) of the sampled tokens, without gradient
        t0 = time.perf_counter()
        input_ids, attention_mask, start = out.input_ids, out.attention_mask, out.prompt_length
        loss_mask = span_mask if use_reasoning_mask(c) else out.completion_mask  # (N, C)
        temperature = c.temperature or 1.0  # greedy rollouts are scored as the policy's T = 1 distribution

        def sampled_token_logprobs(model):  # (N, C) log π of the sampled tokens, without gradient
            # the reference may live on another device (--reference-device)
            on = next(model.parameters()).device
            return batched_token_logprobs(
                model,
                input_ids.to(on),
                attention_mask.to(on),
                start,
                micro_batch_size=c.micro_batch_size,
                temperature=temperature,
                group_size=c.group_size,
            ).to(self.device)

        ref_logp = sampled_token_logprobs(self.reference) if c.beta > 0 else None
        old_logp = sampled_token_logprobs(self.policy) if c.mu > 1 else None
        t_reference = time.perf_counter() - t0

        self.show_phase("update")
        # 4. μ updates, each one AdamW step over the whole batch, accumulated over micro-batches
        t0 = time.perf_counter()
        losses, stats_log, grad_norms = self.policy_update(
            input_ids, attention_mask, start, advantages, loss_mask, ref_logp, old_logp
        )
        t_update = time.perf_counter() - t0
        self.step_index += 1

        # 5. metrics: one line of metrics.jsonl, over the global batch (every rank's completions)
        world = self.world.size
        lengths = all_gather(out.completion_mask.sum(1).float().cpu())  # (N_global,)
        kept = all_gather(loss_mask.sum(1).float().cpu())  # (N_global,)
        formats = all_gather(formats)  # (N_global,)
        metrics = {"step": self.step_index}
        all_rewards = all_gather(rewards)  # (N_global,)
        # a non-finite reward is left out of the normalisation and the baselines (advantage 0); count it
        metrics["nonfinite_rewards"] = int((~torch.isfinite(all_rewards)).sum())
        if metrics["nonfinite_rewards"] and self.world.is_main:
            print(
                f"warning: step {self.step_index}: {metrics['nonfinite_rewards']} of {all_rewards.numel()} "
                "rewards are NaN or infinite; they get no advantage (see nonfinite_rewards in metrics.jsonl)",
                file=sys.stderr,
            )
        metrics["reward_mean"], metrics["reward_std"] = mean_std(all_rewards)
        for name, values in parts.items():
            metrics[f"{name}_mean"], metrics[f"{name}_std"] = mean_std(all_gather(values.float()))
        finish_reasons = sum((Counter(r) for r in gather_objects(out.finish_reasons)), Counter())
        metrics.update(
            format_rate=float(formats.mean()),
            loss=sum(losses) / len(losses),
            kl=all_sum(sum(s.kl for s in stats_log) / len(stats_log)) / world,
            clip_fraction=all_sum(sum(s.clip_fraction for s in stats_log) / len(stats_log)) / world,
            ratio_mean=all_sum(sum(s.ratio_mean for s in stats_log) / len(stats_log)) / world,
            grad_norm=sum(grad_norms) / len(grad_norms) if grad_norms else None,
            lr=self.scheduler.get_last_lr()[0],
            zero_std_fraction=all_sum(zero_std_fraction) / world,
            skipped_long_prompts=self.skipped_long_prompts,
            skipped_long_answers=getattr(self.task, "skipped_long_answers", 0),  # tasks.jsonl drops them
            completion_length_mean=float(lengths.mean()),
            completion_length_max=float(lengths.max()),
            loss_tokens_mean=float(kept.mean()),
            finish_reasons=dict(finish_reasons),
            time_rollout=t_rollout,
            time_reference=t_reference,
            time_reward=t_reward,
            time_update=t_update,
            rollout_tokens_per_s=float(lengths.sum()) / max(t_rollout, 1e-9),  # all ranks' useful tokens
        )
        n = len(responses)
        samples = [
            {
                "step": self.step_index,
                "example": row_examples[i].id,
                "gold": row_examples[i].gold,
                "response": responses[i],
                "reward": float(rewards[i]),
                "advantage": float(advantages[i]),
                "parts": {k: float(v[i]) for k, v in parts.items()},
            }
            for i in range(min(c.samples_per_step, n))
        ]
        return metrics, samples

    # ------------------------------------------------------------ the run

    def evaluate(self) -> dict:
        """A small held-out evaluation: the poster's sampling (T 0.6, top-p 0.95) on the test split.

        It samples with its own seeded generator, so it changes nothing of the training run's randomness
        (a run with --eval-every and one without train identically). Besides the task's score and parts it
        logs what --reward logprob optimises, scored by the policy: the gold answer's mean log-prob per
        token after the sampled reasoning (with its 95% CI), after an empty reasoning, and their
        difference, the reasoning gain (grpo.evaluation's module docstring defines them).
        """
        c = self.config
        report = evaluate_model(
            self.policy,
            self.tokenizer,
            self.task,
            limit=c.eval_limit,
            max_new_tokens=c.max_new_tokens,
            batch_size=c.micro_batch_size,
            seed=c.seed,
            progress=False,
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

    def state_dict(self) -> dict:
        """Everything besides the weights that a resumed run needs to continue exactly."""
        return {
            "run_id": self.config.run_id,
            "step": self.step_index,
            "order": list(self.order),
            "data_rng": self.data_rng.getstate(),
            "skipped_long_prompts": self.skipped_long_prompts,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # one entry per rank: each samples with its own generator
            "rank_rng": gather_objects(
                {
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
                    "generator": self.generator.get_state(),
                }
            ),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_index = state["step"]
        self.order = list(state["order"])
        self.data_rng.setstate(state["data_rng"])
        self.skipped_long_prompts = state["skipped_long_prompts"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if len(state["rank_rng"]) != self.world.size:
            raise ValueError(
                f"the checkpoint was written by {len(state['rank_rng'])} processes; resume it with as many, "
                f"not {self.world.size} (each rank's sampler state is restored exactly)"
            )
        mine = state["rank_rng"][self.world.rank]
        torch.set_rng_state(mine["torch_rng"])
        if mine["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
        self.generator.set_state(mine["generator"])

    def checkpoint(self) -> None:
        state = self.state_dict()  # every rank takes part: the RNG states are gathered
        if self.world.is_main:
            write_checkpoint(
                self.out_dir,
                self.step_index,
                self.policy,
                self.tokenizer,
                state,
                self.config.keep_checkpoints,
            )
        barrier()

    def train(self, progress: bool = True, resumed: bool = False) -> list[dict]:
        """Run until `steps`; checkpoint every `save_every` steps, at the end, and on SIGINT / SIGTERM.

        Only rank 0 writes files; every rank takes part in the collectives of a step and a checkpoint.
        """
        from tqdm.auto import tqdm

        main = self.world.is_main
        # a terminal gets bars (steps, the rollout's tokens, the phase running); a file or a pipe gets one
        # plain line per step, without carriage returns
        interactive = progress and main and sys.stderr.isatty()
        self.progress = interactive
        if not interactive:
            quiet_transformers()  # its own bars (e.g. "Writing model shards") would redraw with \r
        if main:
            if not resumed:
                prepare_out_dir(self.out_dir, self.config.overwrite)
            (self.out_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        barrier()
        history = []
        bar = tqdm(
            total=self.config.steps,
            initial=self.step_index,
            desc=f"{self.task.name}/{self.config.reward}",
            disable=not interactive,
        )
        if interactive:
            self.show_phase = lambda name: bar.set_postfix_str(f"{name}…")
        saved_at, stopping = None, False
        with StopRequests() as stop:
            while self.step_index < self.config.steps and not stopping:
                metrics, samples = self.step()
                if main and self.config.eval_every and self.step_index % self.config.eval_every == 0:
                    self.show_phase("held-out evaluation")
                    metrics.update(self.evaluate())
                history.append(metrics)
                if main:
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(metrics) + "\n")
                    with open(self.out_dir / "samples.jsonl", "a") as f:
                        for s in samples:
                            f.write(json.dumps(s) + "\n")
                bar.update(1)
                bar.set_postfix_str(progress_line(metrics))
                if progress and main and not interactive:
                    print(
                        f"step {self.step_index}/{self.config.steps}  {progress_line(metrics)}",
                        file=sys.stderr,
                    )
                # every rank stops after the same step, whichever of them the signal reached
                stopping = all_sum(1.0 if stop.signal else 0.0) > 0
                every = self.config.save_every
                if (every and self.step_index % every == 0) or stopping:
                    self.checkpoint()
                    saved_at = self.step_index
            bar.close()
        if stopping:
            if main:
                print(
                    f"stopped by {stop.signal or 'a stop request'} after step {self.step_index}; checkpoint saved. "
                    f"Resume with: python train.py --resume {self.out_dir}",
                    file=sys.stderr,
                )
            return history
        if saved_at != self.step_index:
            self.checkpoint()
        if main:
            self.save(
                self.out_dir / "final", same_as=self.out_dir / "checkpoints" / f"step-{self.step_index:08d}"
            )
            print(
                f"done: metrics in {self.out_dir}/metrics.jsonl, model in {self.out_dir}/final",
                file=sys.stderr,
            )
        barrier()
        return history

    def save(self, path: Path, same_as: Path | None = None) -> None:
        """The policy in Hugging Face format (safetensors), written to a temporary directory, then renamed.

        `same_as`: a checkpoint of these very weights; its model files are hard-linked instead of written
        again (the weights then take their space once on disk; a copy where the filesystem cannot link).
        """
        source = None if same_as is None else same_as / MODEL_DIR
        with atomic_directory(path) as tmp:
            if source is not None and source.is_dir():
                for file in source.iterdir():
                    try:
                        os.link(file, tmp / file.name)
                    except OSError:
                        shutil.copy2(file, tmp / file.name)
            else:
                self.policy.save_pretrained(tmp, safe_serialization=True)
                self.tokenizer.save_pretrained(tmp)


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
