"""One GRPO step, written out: rollout → rewards → advantages → reference → μ policy updates.

    for each step:
        sample prompts_per_step prompts, G completions each            (grpo.rollout)
        score them: the task's rules, or the logprob reward + format   (tasks/*, grpo.rewards)
        A_i = R_i − mean over the group of i                           (grpo.loss)
        log π_ref of the sampled tokens, when β > 0                    (grpo.logprobs)
        μ times: the clipped surrogate − β·KL on the kept tokens,      (grpo.loss)
                 accumulated over micro-batches, one AdamW step

`Trainer.step` is that loop's body and `Trainer.policy_update` its last line; the rest of this file is the
state they share (models, optimizer, sampler, the position in the data). The run around the steps (output
files, metrics, checkpoints, signals) is `grpo.run`'s. Nothing here knows about Countdown or poems: a task
gives examples, messages and a scorer (`grpo.task`).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from grpo.config import Config, UsageError, use_reasoning_mask
from grpo.decode import compile_decoding
from grpo.distributed import World, all_sum, gather_objects
from grpo.fsdp import gathered, load_sharded, local, shard
from grpo.logprobs import TokenLogprobs, token_logprobs
from grpo.lora import adapters_off, is_adapted
from grpo.loss import LossStats, group_advantages, grpo_loss, microbatch_weight
from grpo.models import stop_token_ids
from grpo.precision import autocast, lost_update_fraction, synchronize, training_precision
from grpo.reasoning import reasoning_mask
from grpo.rewards import LogprobRewardOptions, logprob_rewards
from grpo.rollout import Rollout, build_prompt, rollout
from grpo.tags import THINK_OPEN, format_reward
from grpo.task import Example, Task

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from grpo.models import CausalLM

MAX_SKIPPED_IN_A_ROW = 3  # non-finite updates in a row that stop the run


class NonFiniteUpdates(RuntimeError):
    """Several updates in a row had a non-finite loss or gradient: the run stops, its weights finite."""


@dataclass
class Experience:
    """What a step's μ updates train on: this rank's N sampled rows, and what the loss needs of each
    (`grpo.loss.grpo_loss`). Built once per step, after the rollout, the rewards and the reference pass."""

    input_ids: torch.Tensor  # (N, P + C) the prompts (left-padded) and the completions (right-padded)
    attention_mask: torch.Tensor  # (N, P + C)
    start: int  # P: the completions' first column
    advantages: torch.Tensor  # (N,) A_i
    loss_mask: torch.Tensor  # (N, C) the tokens that get gradient
    ref_logp: torch.Tensor | None  # (N, C) log π_ref of the sampled tokens; None when β = 0
    old_logp: torch.Tensor | None  # (N, C) log π_old; None when μ = 1 (π_old is the policy itself)


@dataclass
class StepResult:
    """What one step did on this rank, row by row (N = this rank's completions), for the run's metrics."""

    examples: list[Example]  # (N,) the example completion i answers
    responses: list[str]  # (N,) what the model wrote, from the prefilled <think> on
    rewards: torch.Tensor  # (N,) R_i
    parts: dict[str, torch.Tensor]  # name → (N,): the reward's parts (a rule reward's: the task's)
    signals: dict[
        str, torch.Tensor
    ]  # name → (N,): logged beside them, not parts of R (grpo.rewards.LOGPROB_SIGNALS)
    advantages: torch.Tensor  # (N,) A_i
    zero_std_fraction: float  # the share of groups whose rewards are all equal: no gradient from them
    formats: torch.Tensor  # (N,) the format reward
    completion_tokens: torch.Tensor  # (N,) tokens generated
    loss_tokens: torch.Tensor  # (N,) tokens the loss kept
    finish_reasons: list[str]  # (N,) why each completion stopped
    losses: list[float]  # one per update
    loss_stats: list[LossStats]  # one per micro-batch and update
    grad_norms: list[float]  # one per update, before clipping (none with --max-grad-norm 0)
    seconds: dict[str, float]  # the step's phases: rollout, reward, reference, update


def lr_lambda(config: Config, total_updates: int) -> Callable[[int], float]:
    warmup = int(config.warmup_ratio * total_updates)

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / (warmup + 1)
        if config.lr_schedule == "cosine":
            progress = (update - warmup) / max(1, total_updates - warmup)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return factor


def warn_if_updates_round_away(trainable: Sequence[torch.Tensor], lr: float) -> None:
    """Warn when an AdamW step of about `lr` rounds back to the weight for most of the `trainable` ones (bf16)."""
    lost = lost_update_fraction([local(p) for p in trainable], lr)
    if lost > 0.5:
        warnings.warn(
            f"at --lr {lr:g}, an AdamW step (about lr per weight) rounds away for {lost:.0%} of the "
            f"{trainable[0].dtype} weights: most updates will be lost. Use float32 weights (--dtype auto, "
            "with bf16 autocast on a GPU) or a larger learning rate",
            stacklevel=3,
        )


class Trainer:
    def __init__(
        self,
        config: Config,
        policy: CausalLM,
        reference: PreTrainedModel | None,
        tokenizer: PreTrainedTokenizerBase,
        task: Task,
        world: World | None = None,
    ) -> None:
        """`reference`: the frozen copy of the start, or None (β = 0 and --scorer policy need none, and a LoRA
        policy is its own reference: itself with its adapters off, `grpo.lora`)."""
        world = world or World()
        self.config, self.task, self.tokenizer, self.world = config, task, tokenizer, world
        self.policy, self.reference = policy, reference
        self.lora = is_adapted(policy)
        if self.lora and reference is not None:
            raise ValueError("a LoRA policy is its own reference (its adapters off): pass reference=None")
        if config.prompts_per_step % world.size:
            raise ValueError(
                f"--prompts-per-step {config.prompts_per_step} must be a multiple of the {world.size} processes"
            )
        self.fsdp = config.fsdp
        self.place_on_ranks(policy, reference, world)
        if config.beta > 0 and reference is None and not self.lora:
            raise ValueError("β > 0 needs a reference model")
        self.device = next(policy.parameters()).device
        # mixed precision (the GPU default): float32 weights and AdamW state, forward passes in bf16
        self.mixed_precision = training_precision(config.dtype, config.autocast, self.device)[1]
        self.compile = compile_decoding(config.compile, self.device)  # the rollout's decode step
        warn_if_updates_round_away(self.trainable, config.lr)
        self.stop_ids = stop_token_ids(policy, tokenizer)
        # what the step reads of the options, resolved once: the logprob reward's, and what the loss keeps
        self.reward_options = LogprobRewardOptions.of(config, tokenizer)
        self.loss_on_reasoning = use_reasoning_mask(config)
        self.train_examples = list(task.examples("train"))
        if not self.train_examples:
            raise ValueError(f"task {task.name!r} has no training examples")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=config.lr, weight_decay=config.weight_decay)
        total_updates = config.steps * config.mu
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, total_updates))
        # each rank samples differently, reproducibly; rank 0 of N uses the seed itself, as one process does
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 1_000_003 * world.rank)
        self.data_rng = random.Random(config.seed)
        self.order: list[int] = []
        self.step_index = 0
        self.skipped_long_prompts = 0
        self.skipped_updates = 0  # updates dropped for a non-finite loss or gradient (skip_update)
        self.skipped_in_a_row = 0
        self.prompt_ids: dict[str, list[int]] = {}  # an example's id → its prompt's token ids (next_examples)
        self.progress = False  # a bar per rollout, under the bar of steps
        self.show_phase = lambda name: None  # tells the terminal which phase of a step is running

    # ------------------------------------------------------------ one step

    def step(self) -> StepResult:
        """One GRPO step on this rank's share of the batch.

        In mixed precision the rollout, the reference and each update run under bf16 autocast, each in its
        own block, and the logprob reward in float32 (`grpo.precision` says why).
        """
        c, G = self.config, self.config.group_size
        seconds: dict[str, float] = {}
        # every rank draws the same global batch, then takes its share
        share = c.prompts_per_step // self.world.size
        examples = self.next_examples()[self.world.rank * share : (self.world.rank + 1) * share]
        prompts = [self.prompt_ids[ex.id] for ex in examples]
        rows = [ex for ex in examples for _ in range(G)]  # (N,) completion i answers rows[i]
        # 1. rollout: G completions per prompt, sampled from the current policy
        with self.phase("rollout", seconds), self.whole(self.policy), self.autocast(self.policy):
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
                compile=self.compile,
            )
        # what the model wrote from the prefilled <think> on: what the scorers read
        responses = [THINK_OPEN + text for text in out.texts]

        # 2. rewards R (N,) with their parts, and 3. advantages A_i = R_i − mean of i's group
        with self.phase("reward", seconds):
            span_mask, spans = reasoning_mask(
                self.tokenizer, out.completion_ids, out.completion_mask, self.stop_ids
            )
            # the loss keeps the reasoning span (up to </think>; unclosed: what the reward scored) or all of it
            loss_mask = span_mask if self.loss_on_reasoning else out.completion_mask  # (N, C)
            formats = torch.tensor([format_reward(r) for r in responses])  # (N,)
            scored = self.task.score_batch(rows, responses)
            rule_parts = {name: torch.tensor([r.parts[name] for r in scored]) for name in scored[0].parts}
            if c.reward == "rule":
                rewards, parts = torch.tensor([r.total for r in scored], dtype=torch.float32), rule_parts
                signals: dict[str, torch.Tensor] = {}
            else:  # R_i = w_lp · norm(log P(gold | prompt, reasoning_i)) + w_fmt · format_i, in float32
                # the scorer: the frozen reference (a fixed target, the default), or the policy
                scoring = (
                    self.reference_model() if c.scorer == "reference" else contextlib.nullcontext(self.policy)
                )
                with scoring as scorer, self.whole(scorer):
                    rewards, parts, signals = logprob_rewards(
                        scorer,
                        self.tokenizer,
                        [p for p in prompts for _ in range(G)],
                        out.completion_ids,
                        out.completion_mask,
                        [ex.gold for ex in rows],
                        formats,
                        self.reward_options,
                        stop_token_ids=self.stop_ids,
                        spans=spans,
                        micro_batch_size=c.micro_batch_size,
                        group_size=G,
                        rank=self.world.rank,
                    )
                signals.update({f"rule_{k}": v for k, v in rule_parts.items()})  # watched, not trained on
            advantages, zero_std_fraction = group_advantages(rewards, G, scale=c.scale_advantages)

        # 4. log π_ref (and log π_old when μ > 1) of the sampled tokens, without gradient
        with self.phase("reference", seconds):
            ref_logp = None
            if c.beta > 0:
                with self.reference_model() as reference, self.whole(reference):
                    ref_logp = self.sampled_logprobs(reference, out)
            old_logp = None
            if c.mu > 1:
                with self.whole(self.policy):
                    old_logp = self.sampled_logprobs(self.policy, out)

        # 5. μ updates, each one AdamW step over the whole batch, accumulated over micro-batches,
        # each forward under its own autocast block (policy_update)
        with self.phase("update", seconds):
            batch = Experience(out.input_ids, out.attention_mask, out.prompt_length, advantages, loss_mask,
                               ref_logp, old_logp)  # fmt: skip
            losses, loss_stats, grad_norms = self.policy_update(batch)
        self.step_index += 1
        return StepResult(
            examples=rows,
            responses=responses,
            rewards=rewards,
            parts=parts,
            signals=signals,
            advantages=advantages,
            zero_std_fraction=zero_std_fraction,
            formats=formats,
            completion_tokens=out.completion_mask.sum(1).float().cpu(),
            loss_tokens=loss_mask.sum(1).float().cpu(),
            finish_reasons=out.finish_reasons,
            losses=losses,
            loss_stats=loss_stats,
            grad_norms=grad_norms,
            seconds=seconds,
        )

    def policy_update(self, batch: Experience) -> tuple[list[float], list[LossStats], list[float]]:
        """μ AdamW steps on this rank's rows; with DDP the gradient is that of the global batch's loss."""
        c = self.config
        self.policy.train()
        advantages = batch.advantages.to(self.device)
        n = batch.input_ids.shape[0]
        # DDP averages the ranks' gradients. For "sequence" and "constant" every rank holds as many rows, so
        # the mean of the ranks' means is the global mean. For "token" each rank's loss is rescaled from
        # its own token count to the global one: × world size × local kept tokens / global kept tokens.
        rescale = 1.0
        if c.loss_aggregation == "token" and self.world.size > 1:
            local = float(batch.loss_mask.sum())
            rescale = self.world.size * local / max(all_sum(local), 1.0)
        starts = list(range(0, n, c.micro_batch_size))
        stats_log, losses, grad_norms = [], [], []
        for _ in range(c.mu):
            self.optimizer.zero_grad(set_to_none=True)
            total_loss = 0.0
            # one autocast block per update, closed before optimizer.step(): autocast keeps its bf16 copies
            # of the weights until the block exits, and update u + 1 must see the weights update u made
            with self.autocast(self.policy):
                for i in starts:
                    # gradients are exchanged once, on the last micro-batch
                    sync = i == starts[-1] or self.world.size == 1
                    loss, stats = self.microbatch_backward(batch, slice(i, i + c.micro_batch_size), advantages,
                                                           rescale, sync)  # fmt: skip
                    total_loss += loss
                    stats_log.append(stats)
            # the gradient's global norm, clipped to max_grad_norm and recorded when that is > 0
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, c.max_grad_norm or math.inf))
            if c.max_grad_norm > 0:
                grad_norms.append(grad_norm)
            loss_value = all_sum(total_loss) / self.world.size
            # a non-finite loss or gradient (a reward of 3e38, a broken kernel) would write NaN into every
            # weight: skip this update on every rank alike, and stop after a few in a row
            if all_sum(float(not (math.isfinite(loss_value) and math.isfinite(grad_norm)))) > 0:
                self.skip_update(loss_value, grad_norm)  # (the schedule counts the updates applied)
            else:
                self.optimizer.step()
                self.scheduler.step()
                self.skipped_in_a_row = 0
            losses.append(loss_value)
        return losses, stats_log, grad_norms

    def microbatch_backward(
        self, batch: Experience, rows: slice, advantages: torch.Tensor, rescale: float, sync: bool
    ) -> tuple[float, LossStats]:
        """The loss of the micro-batch `rows` of `batch`, weighted as its share of the batch's loss (× `rescale`,
        the rank's share of the global one), backpropagated; the gradient exchanged between ranks if `sync`.
        Returns (the weighted loss, its statistics)."""
        c = self.config
        # the backward exchanges the gradients between ranks (`sync`) or only accumulates them: FSDP is told so,
        # DDP accumulates inside its no_sync block (without either, one process, `sync` is always True)
        if self.fsdp:  # (`shard` made the module an FSDPModule)
            cast("FSDPModule", self.policy_logprobs).set_requires_gradient_sync(sync)
        accumulating = not sync and not self.fsdp
        with (
            cast("DistributedDataParallel", self.policy_logprobs).no_sync()
            if accumulating
            else contextlib.nullcontext()
        ):
            logp = self.policy_logprobs(
                batch.input_ids[rows], batch.attention_mask[rows], batch.start, c.temperature or 1.0,
                group_size=c.group_size,
            )  # (mb, C): each group's prompt runs once  # fmt: skip
            # μ = 1: π_old is the current policy, so the ratio is exactly 1 and carries logp's gradient
            old = logp.detach() if batch.old_logp is None else batch.old_logp[rows]
            loss, stats = grpo_loss(
                logp,
                old,
                None if batch.ref_logp is None else batch.ref_logp[rows],
                advantages[rows],
                batch.loss_mask[rows],
                clip_eps=c.clip_eps,
                beta=c.beta,
                aggregation=c.loss_aggregation,
                max_tokens=c.max_new_tokens,
            )
            weight = microbatch_weight(batch.loss_mask[rows], batch.loss_mask, c.loss_aggregation) * rescale
            # outside autocast: the backward follows the dtypes of the forward it retraces
            with torch.autocast(self.device.type, enabled=False):
                (loss * weight).backward()
        return float(loss.detach()) * weight, stats

    def skip_update(self, loss: float, grad_norm: float) -> None:
        """Drop this update's gradient, count it (`skipped_updates` in metrics.jsonl), warn; after
        MAX_SKIPPED_IN_A_ROW in a row, stop: the run's inputs, not one unlucky batch, are broken."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        self.skipped_in_a_row += 1
        if self.world.is_main:
            print(
                f"warning: step {self.step_index + 1}: the loss ({loss:g}) or the gradient norm ({grad_norm:g}) "
                "is not finite; this update is skipped and the weights are unchanged (skipped_updates in "
                "metrics.jsonl)",
                file=sys.stderr,
            )
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteUpdates(
                f"{self.skipped_in_a_row} updates in a row had a non-finite loss or gradient (the last: loss "
                f"{loss:g}, gradient norm {grad_norm:g}); the weights are unchanged since, and the run stops "
                "here. Look at the rewards (reward_mean, reward_std, nonfinite_rewards in metrics.jsonl): a "
                "reward function returning huge values is the usual cause"
            )

    # ------------------------------------------------------------ what the step uses

    def place_on_ranks(self, policy: CausalLM, reference: PreTrainedModel | None, world: World) -> None:
        """`policy_logprobs`, the module whose forward the update differentiates, and `trainable`, what AdamW
        updates: on one process as they are; under FSDP sharded over the ranks, under DDP wrapped."""
        # DDP averages gradients of what runs inside its wrapped module's forward: the policy's log-probs.
        # FSDP reduce-scatters them itself, and this module is its root (grpo.fsdp.shard says why)
        self.policy_logprobs: torch.nn.Module = TokenLogprobs(
            policy
        )  # wrapped by DDP below, with N > 1 processes
        if self.fsdp:  # before the optimizer: AdamW's state takes the shards' shape
            if world.size < 2 or self.lora:
                raise ValueError("--fsdp shards a full fine-tuning over 2 or more torchrun processes")
            shard(policy, root=self.policy_logprobs)
            if reference is not None:
                self.reference_root = TokenLogprobs(reference)  # (only to be the root of its shards)
                shard(reference, root=self.reference_root)
        # what AdamW updates: every weight, or with LoRA the adapters only (the base weights are frozen)
        self.trainable = [p for p in policy.parameters() if p.requires_grad]
        if world.size > 1 and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            self.policy_logprobs = DistributedDataParallel(self.policy_logprobs)

    def whole(self, model: CausalLM) -> contextlib.AbstractContextManager[None]:
        """A block in which `model`'s sharded parameters stay gathered (FSDP; nothing otherwise): the rollout
        and the scoring passes run a forward per token, and gather each layer once for all of them."""
        if not self.fsdp:
            return contextlib.nullcontext()
        return gathered(self.policy_logprobs if model is self.policy else self.reference_root)

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[CausalLM]:
        """The frozen reference π_ref, in the block where it computes: the copy of the start, or with LoRA
        the policy itself with its adapters off (no second copy of the weights)."""
        if self.lora:
            with adapters_off(self.policy):
                yield self.policy
            return
        if self.reference is None:
            raise ValueError("this needs a reference model, and the run has none (β = 0 and --scorer policy)")
        yield self.reference

    @torch.no_grad()
    def sampled_logprobs(self, model: CausalLM, out: Rollout) -> torch.Tensor:
        """(N, C) log π of the sampled tokens under `model`, without gradient; greedy rollouts are scored as
        the T = 1 distribution. The reference may live on another device (--reference-device)."""
        on = next(model.parameters()).device
        with self.autocast(model):
            logp = token_logprobs(
                model,
                out.input_ids.to(on),
                out.attention_mask.to(on),
                out.prompt_length,
                micro_batch_size=self.config.micro_batch_size,
                temperature=self.config.temperature or 1.0,
                group_size=self.config.group_size,
            )
        return logp.to(self.device)

    def autocast(self, model: CausalLM) -> contextlib.AbstractContextManager[None]:
        """bf16 autocast for `model`'s forward passes under mixed precision, on the device it lives on; float32
        for a model on another kind of device than the policy (a CPU reference beside a GPU policy)."""
        on = next(model.parameters()).device
        return autocast(on, self.mixed_precision and on.type == self.device.type)

    @contextlib.contextmanager
    def phase(self, name: str, seconds: dict[str, float]) -> Iterator[None]:
        """Time a phase of the step into `seconds[name]` and show its name on the terminal while it runs."""
        self.show_phase(name)
        synchronize(self.device)  # on a GPU, the work queued before the phase is not the phase's
        start = time.perf_counter()
        yield
        synchronize(self.device)
        seconds[name] = time.perf_counter() - start

    def next_examples(self) -> list[Example]:
        """The next prompts_per_step examples of a reshuffled-every-epoch pass over the train split.

        Each one's prompt is tokenized once, into `prompt_ids`. An example whose prompt is longer than
        max_prompt_tokens is skipped, not cut (a cut prompt loses its instructions); the count is logged as
        `skipped_long_prompts`.
        """
        batch: list[Example] = []
        skipped_in_a_row = 0
        while len(batch) < self.config.prompts_per_step:
            if not self.order:
                self.order = list(range(len(self.train_examples)))
                self.data_rng.shuffle(self.order)
            example = self.train_examples[self.order.pop()]
            if example.id not in self.prompt_ids:
                self.prompt_ids[example.id] = build_prompt(self.tokenizer, self.task.messages(example))
            if len(self.prompt_ids[example.id]) > self.config.max_prompt_tokens:
                self.skipped_long_prompts += 1
                skipped_in_a_row += 1
                if skipped_in_a_row > 2 * len(self.train_examples):  # two whole passes: none fits
                    raise UsageError(
                        f"every training prompt is longer than --max-prompt-tokens {self.config.max_prompt_tokens} "
                        "tokens (prompts are skipped, not cut): raise it"
                    )
                continue
            skipped_in_a_row = 0
            batch.append(example)
        return batch

    # ------------------------------------------------------------ state, for checkpoints (grpo.run)

    def state_dict(self) -> dict:
        """Everything besides the weights that a resumed run needs to continue exactly."""
        return {
            "run_id": self.config.run_id,
            "step": self.step_index,
            "order": list(self.order),
            "data_rng": self.data_rng.getstate(),
            "skipped_long_prompts": self.skipped_long_prompts,
            "skipped_updates": self.skipped_updates,
            # FSDP: AdamW's state is sharded, and saved apart, one file per rank (grpo.fsdp.save_sharded)
            "optimizer": None if self.fsdp else self.optimizer.state_dict(),
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

    def load_state_dict(self, state: dict, sharded: Path | None = None) -> None:
        """`sharded`: with FSDP, the checkpoint's `sharded/` directory, whose shards of the weights and of
        AdamW's state every rank reads back (the run must have as many ranks as the one that wrote it)."""
        if any(i >= len(self.train_examples) for i in state["order"]):
            raise UsageError(
                f"the checkpoint's place in the data does not fit the {len(self.train_examples)} training examples "
                "read now: the training data changed since the run started; start a new run to train on it"
            )
        self.step_index = state["step"]
        self.order = list(state["order"])
        self.data_rng.setstate(state["data_rng"])
        self.skipped_long_prompts = state["skipped_long_prompts"]
        self.skipped_updates = state.get("skipped_updates", 0)  # (checkpoints written before it: 0)
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if len(state["rank_rng"]) != self.world.size:
            raise ValueError(
                f"the checkpoint was written by {len(state['rank_rng'])} processes; resume it with as many, "
                f"not {self.world.size} (each rank's sampler state is restored exactly)"
            )
        if self.fsdp:
            if sharded is None:
                raise ValueError(
                    "an FSDP run resumes from its checkpoint's shards: pass sharded=CHECKPOINT/sharded"
                )
            load_sharded(sharded, self.policy_logprobs, self.optimizer)
        mine = state["rank_rng"][self.world.rank]
        torch.set_rng_state(mine["torch_rng"])
        if mine["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(mine["cuda_rng"])
        self.generator.set_state(mine["generator"])
