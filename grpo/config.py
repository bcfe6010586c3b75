"""Every knob of a run, in one dataclass (`Config`; the options evaluate.py takes too come first, from
`SharedOptions`). The docstring under each field is its `--help` text.

`python train.py --help` is generated from this file (`build_parser`, through grpo/cli.py), so the two cannot
disagree. The domains
are not named here: `--task`'s choices, their help, their CPU defaults and their option checks come from the
registry the caller passes (`tasks.TASKS`, a name → `grpo.task.Task` subclass mapping).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from grpo.cli import DefaultsHelpFormatter, OneLineErrorParser, add_options

if TYPE_CHECKING:
    from grpo.task import Task

    Registry = Mapping[str, type[Task]]  # tasks.TASKS: the domains --task chooses from, by name

# The choices of every option that takes one of a few words, stated once: argparse's choices, and the checks of
# the functions that take them (grpo.loss, grpo.rewards), come from these
RewardKind = Literal["rule", "logprob"]
Preset = Literal["poster"]
LrSchedule = Literal["constant", "cosine"]
Scorer = Literal["reference", "policy"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
Aggregation = Literal["sequence", "token", "constant"]  # grpo.loss.grpo_loss
AGGREGATIONS = get_args(Aggregation)
BatchNorm = Literal["none", "zscore", "minmax"]  # grpo.rewards.batch_normalise
BATCH_NORMALISATIONS = get_args(BatchNorm)
# what a completion without </think> is scored as (grpo.rewards.normalised_logprob): its text before its own
# answer (`score`); the batch's lowest reward if it wrote an answer tag without closing </think>
# (`bar_early_answer`); always the lowest (`batch_min`)
Unclosed = Literal["score", "bar_early_answer", "batch_min"]
UNCLOSED = get_args(Unclosed)


@dataclass
class SharedOptions:
    """The options train.py and evaluate.py both take, with one meaning in both, declared once: `Config` and
    evaluate.py's `EvalConfig` inherit them, so they head both --help lists. Options the two share by name
    but not by default are declared in each: --model (the policy to train, the model to evaluate),
    --max-new-tokens, --temperature and --top-p (training explores; evaluation samples as Qwen3 recommends),
    --seed (of the whole run, of the sampler) and --scorer (which model scores the gold answer: one of the
    run's two in training, any model with the same tokenizer in evaluation)."""

    # ---------------------------------------------------------------- the task and its data
    task: str | None = None
    """Domain (train.py's default: the first below; evaluate.py needs it with --model and --responses)"""
    data: str | None = None
    """Poetry: the poems, a CSV or JSONL file (default: the file `make data` prepared, else ../shared/data/public-domain-poems.csv); evaluate.py reads its test split. --task jsonl: your examples, a .jsonl (or .csv) file with prompt (or messages) and answer on each line (see the README's "Bring your own data")."""
    test_fraction: float = 0.1
    """--task jsonl: the share of the examples without a `split` field that is held out for testing, picked by a hash of each prompt (the same file always splits the same way). Evaluate with the value training used: a smaller one holds out a subset of those examples."""
    reward_fn: str | None = None
    """--task jsonl: a scoring function, `module:function` or `path/to/file.py:function`, called as function(example, response) and returning a number or a dict of parts. In training it is, with the format reward, the rule reward (--reward rule), and it is logged in --reward logprob runs; in evaluation its parts join the report's."""
    reward_fn_timeout: float = 30.0
    """--reward-fn: seconds one call may take; a call that takes longer scores 0 with a warning (it finishes on its own thread, and the run goes on). 0: no limit."""
    system_prompt: str | None = None
    """--task jsonl: the system message (default: the built-in tasks' instructions to reason inside <think> </think> and then answer inside <answer> </answer>). Evaluate with the one training used."""

    # ---------------------------------------------------------------- hardware
    device: str = "auto"
    """`auto` (cuda, then mps, then cpu), or a torch device such as cpu or cuda:1."""
    dtype: DType = "auto"
    """Weights' dtype. `auto`: float32 weights (in training, gradients and AdamW state too); where --autocast auto turns it on (a GPU with bf16, a CPU where bf16 pays) the forward passes, generation included, then run under bf16 autocast (mixed precision), so a trained model is evaluated as it was trained. `float32`: float32 weights and compute (no autocast unless --autocast). `bfloat16`: bf16 weights, half the memory; in training their gradients and AdamW state too, but an AdamW step of about lr is below bf16's resolution for most weights at the poster's lr (a warning says how many), so most updates round away. `float16`: a half-precision copy for evaluation; training refuses it (AdamW's state underflows). The README's "Precision" says what runs in which."""
    autocast: bool | None = None
    """Run the forward passes (the rollout, the reference and the update; evaluation's generation) under bf16 autocast while the weights, gradients and AdamW state stay float32 (mixed precision). The gold answer's log-prob never is: training scores the logprob reward in float32, evaluation its likelihood figures in the weights' own precision. `auto` (with --dtype auto): on a CUDA GPU that supports bf16; on a CPU with bf16 arithmetic (AMX or AVX512-BF16) where a matrix product measured at start-up runs faster in bf16; off elsewhere."""
    compile: bool | None = None
    """Run each decode step of the rollout (and of evaluation's generation) through torch.compile, compiled once per shape (CUDA graphs on a GPU; the first steps of each shape wait for the compiler). `auto`: off, on every device measured so far (the README's "Performance" says where and by how much); a compiler failure falls back to eager decoding with a warning."""


@dataclass
class Config(SharedOptions):
    # ---------------------------------------------------------------- what to train
    reward: RewardKind = "rule"
    """`rule`: the task's rule-based score. `logprob`: the teacher-forced log-prob of the gold answer after the model's own reasoning, plus the format reward."""
    model: str = "smollm2-135m"
    """Policy to train: `smollm2-135m` (SmolLM2-135M-Instruct, packaged, offline), a local Hugging Face directory, or a hub id such as Qwen/Qwen3-1.7B."""
    preset: Preset | None = None
    """`poster`: the poster's recipe (Qwen/Qwen3-1.7B, bf16 autocast over fp32 weights, lr 5e-7 cosine with 3% warm-up, β 0.001, G 4, 1,024 new tokens). Options given explicitly still win."""

    # ---------------------------------------------------------------- hardware
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of storing them: far less memory for long completions, about a third more update time."""
    fsdp: bool = False
    """Under torchrun: shard the weights, gradients and AdamW state over the processes with PyTorch's FSDP2 (`fully_shard` on each decoder layer and the root) instead of copying them to every one (DDP); each rank holds about 1/N. The rollout and the scoring passes gather the whole model once per phase (one full copy per rank while they run). Checkpoints hold the shards (torch.distributed.checkpoint) and resume with as many processes. Not with --lora-rank."""
    reference_device: str | None = None
    """Keep the frozen reference on another device (e.g. cpu) to free GPU memory, at the cost of a slower reference pass. Default: the policy's device. No reference is loaded with LoRA (the policy with its adapters off is the reference), nor when --beta is 0 and nothing else needs it (a rule run, or --scorer policy)."""

    # ---------------------------------------------------------------- LoRA
    lora_rank: int = 0
    """Train LoRA adapters of this rank r instead of every weight (0: full fine-tuning). Only the adapters and their AdamW state train, in float32; the base weights are frozen (with --dtype bfloat16 they can stay bf16), and the frozen reference is the policy with its adapters off, not a second copy. Checkpoints hold the adapters; final/ the merged model and final/adapter/ the adapters in PEFT's format. Needs the `lora` extra (pip install -e '.[lora]'). LoRA usually wants a ~10× larger --lr than full fine-tuning."""
    lora_alpha: float | None = None
    """α: the adapters' update B·A is scaled by α / r. Default: 2 × --lora-rank."""
    lora_dropout: float = 0.0
    """Dropout on the adapters' input, in the policy update only."""
    lora_targets: list[str] | None = None
    """The names of the layers that get adapters, e.g. q_proj v_proj. Default: every linear layer of the decoder blocks (the attention and MLP projections; not the embeddings or the output projection)."""

    # ---------------------------------------------------------------- the batch
    steps: int = 25
    """Optimiser steps' worth of rollouts: each step samples a fresh batch of prompts. Sized so that a CPU run of the packaged model ends in about 30 minutes on 2 cores; on a GPU the default is 100."""
    prompts_per_step: int = 4
    """Prompts per step. The batch of completions, over which rewards are normalised, is prompts_per_step × group_size (the poster: 16 × 4 = 64, the default on a GPU; 4 × 4 on a CPU)."""
    group_size: int = 4
    """G: completions sampled per prompt; each is compared with the mean of its group."""
    micro_batch_size: int = 8
    """Completions per forward/backward pass; lower it to save memory, the result is the same. Keep it a multiple of --group-size: each group's shared prompt then runs through the model once."""
    max_prompt_tokens: int = 512
    """Examples whose prompt is longer than this are skipped, not cut (the poster: 256; poem starts here run longer)."""
    max_answer_tokens: int = 256
    """--task jsonl: training examples whose gold answer is longer than this are skipped (counted in the log and as skipped_long_answers in metrics.jsonl): the logprob reward scores every answer token after every completion."""
    max_new_tokens: int = 96
    """Longest completion, in tokens (the poster: 1,024, the default on a GPU)."""
    temperature: float = 1.0
    """Sampling temperature of the rollout; the log-probs of the ratio are taken at the same temperature."""
    top_p: float = 1.0
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p."""
    one_think: bool = True
    """Stop a completion that opens a second <think> after closing the first (it gets format 0): the poster's guard against repeated think blocks."""

    # ---------------------------------------------------------------- the objective
    lr: float = 1e-5
    """AdamW learning rate (the poster: 5e-7 for Qwen3-1.7B; the default on a GPU: 1e-6; on a CPU, 3e-5 for a math or poetry logprob run and for poetry's rule run). The CPU defaults are high for a short run of a 135M model; the KL penalty holds it."""
    lr_schedule: LrSchedule = "constant"
    """`constant` or `cosine` (decay to 0 over the run), after `warmup_ratio` of linear warm-up."""
    warmup_ratio: float = 0.0
    """Fraction of the optimiser steps spent warming the learning rate up from 0 (the poster: 0.03)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Clip the gradient's global norm to this (0 turns clipping off)."""
    beta: float = 0.02
    """β: weight of the k3 KL penalty to the frozen reference (the poster: 0.001, the default on a GPU). 0 drops the KL term; the reference is then loaded only to score a logprob run's reward (--scorer reference)."""
    clip_eps: float = 0.2
    """ε: the ratio π_θ/π_old is clipped to [1−ε, 1+ε]."""
    mu: int = 1
    """μ: optimiser updates per rollout batch, each against the stored old log-probs."""
    loss_aggregation: Aggregation = "token"
    """`token`: one mean over all kept tokens of the batch (DAPO), so a short reasoning's tokens weigh no more than a long one's. `sequence`: mean over each sequence's kept tokens, then over sequences (the poster's; it favours short reasonings, see the README's "Choices"). `constant`: sum / (batch × max_new_tokens) (Dr. GRPO)."""
    scale_advantages: bool = False
    """Divide each group's advantages by the group's reward std (DeepSeekMath) instead of only subtracting the mean (the poster). On for a math or poetry logprob run on a CPU (those tasks' CPU defaults)."""
    reasoning_mask: bool | None = None
    """Give gradient only to the tokens up to and including the first </think>. Default: on for --reward logprob, off for rule."""

    # ---------------------------------------------------------------- the logprob reward
    logprob_weight: float = 0.9
    """Total reward = logprob_weight × logprob reward + format_weight × format reward (the poster: 0.9 and 0.1)."""
    format_weight: float = 0.1
    """Weight of the binary format reward in --reward logprob runs."""
    length_norm: bool = True
    """Divide the gold answer's log-prob by its number of tokens (the poster's most stable setting)."""
    exp_norm: bool = False
    """Exponentiate the (length-normalised) log-prob into (0, 1]."""
    batch_norm: BatchNorm = "minmax"
    """Batch-level normalisation of the logprob reward over all completions of the step: none, zscore or minmax."""
    scorer: Scorer = "reference"
    """Which model scores the gold answer: `reference` (the frozen start: the yardstick stays fixed while the policy moves) or `policy` (the current one, the poster's)."""
    unclosed: Unclosed = "score"
    """A completion with no </think>: `score` it on its text before its own answer (a dense signal while a small model cannot yet close the tag); `bar_early_answer`: the same, except that one which wrote an answer tag without closing </think> (an empty reasoning the reward could not otherwise tell from a real one) gets the batch's lowest reward; `batch_min`: every unclosed completion gets the batch's lowest reward. A math or poetry logprob run on a CPU defaults to `bar_early_answer`."""
    min_reasoning_tokens: int = 16
    """A completion whose reasoning (up to and including </think>) is shorter than this gets the batch's lowest logprob reward: the guard against the collapse to an empty <think></think> (see the README's "Choices"). 0 turns it off (--preset poster)."""
    debias: bool = False
    """Beyond the poster: reward log P(a | p, r) − log P(a | p, empty reasoning), the credit the reasoning adds. The subtracted score is one number per prompt, so within a group it is a constant: under --scale-advantages (a math or poetry logprob run's CPU default) it changes no advantage of a group whose format rewards are all equal, and without the scaling it rescales the advantages (by one factor for the whole batch, unless --exp-norm); the length guard's lowest reward and the format reward's weight are what it moves (tests/test_normalisations.py)."""

    # ---------------------------------------------------------------- held-out evaluation
    eval_every: int = 0
    """Every this many steps, generate on the first --eval-limit test examples and log eval_score and its parts (0: never)."""
    eval_limit: int = 16
    """Test examples per held-out evaluation during training."""

    # ---------------------------------------------------------------- bookkeeping
    seed: int = 0
    """Seed of data order, sampling and initialisation."""
    out_dir: str | None = None
    """Where config.json, metrics.jsonl, samples.jsonl and the final model go. Default: runs/<task>-<reward>-<date>-<time>. A directory that already holds a run is refused unless --overwrite."""
    save_every: int = 50
    """Write a resumable checkpoint (policy, optimizer, scheduler, RNG states, data position) every this many steps; one is always written at the end and on SIGINT / SIGTERM. 0: only then."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep under OUT_DIR/checkpoints. Each holds the weights and AdamW's state (full fine-tuning: about 3 × the weights' bytes), and a new one is written before the oldest goes; a run whose disk has less space free than that is warned of before its first step."""
    resume: str | None = None
    """Continue the run in this directory from its latest complete checkpoint, with the options it was started with. Only --steps (to extend it), --save-every, --keep-checkpoints, --samples-per-step, --eval-every, --eval-limit, --device and --reference-device may be given anew (config.json records them; --overwrite is ignored, the run continues its directory); another value of any other option is refused in one line naming it."""
    overwrite: bool = False
    """Replace the files of a run already in --out-dir instead of refusing to start."""
    samples_per_step: int = 4
    """Decoded completions written to samples.jsonl each step."""
    run_id: str | None = None
    """Identifies the run: set when it starts, written into config.json and every checkpoint, so that --resume never continues another run's weights. Not meant to be passed."""


PRESETS = {
    "poster": dict(
        model="Qwen/Qwen3-1.7B",
        autocast=True,  # bf16 compute, fp32 master weights and AdamW state (mixed precision)
        lr=5e-7,
        lr_schedule="cosine",
        warmup_ratio=0.03,
        beta=0.001,
        clip_eps=0.2,
        group_size=4,
        prompts_per_step=16,
        max_new_tokens=1024,
        steps=100,
        # the poster's method exactly: per-sequence mean, the policy scores the gold, no length guard, an
        # unclosed completion scored whatever it wrote, advantages not divided by the group's std
        loss_aggregation="sequence",
        scorer="policy",
        min_reasoning_tokens=0,
        unclosed="score",
        scale_advantages=False,
    ),
}

# A GPU run keeps the poster's scale; the class defaults above size a CPU run to about 30 minutes
GPU_DEFAULTS = dict(steps=100, prompts_per_step=16, max_new_tokens=1024, lr=1e-6, beta=0.001)
# A logprob run on a CPU (the packaged 135M model, 25 steps): what the README's "Does it learn?" measured to make
# the reasoning more useful without shortening it, on both tasks and two training seeds. The length guard (the
# class default, 16 tokens) and `bar_early_answer` close the two ways to win the reward by reasoning less (an
# empty reasoning, an answer written inside <think>); dividing by the group's std lifts poetry's small
# within-group spreads (0.05 nats a token, Countdown's 0.17) out from under the batch min-max; at lr 1e-5 the
# KL penalty held the policy still (math: judged reasoning gain +0.002 [−0.054, +0.059])
CPU_LOGPROB_DEFAULTS = dict(lr=3e-5, unclosed="bar_early_answer", scale_advantages=True)
# Which task takes it is the task's say (`Task.cpu_defaults`, by --reward): Countdown and poetry take it for
# --reward logprob, poetry also lr 3e-5 for the rule reward, as measured before; the rule reward keeps the class
# defaults otherwise


# what --resume may change: how long the run goes on and what it writes or evaluates on the way, and where it
# runs; everything else would make the resumed run another run than the one its checkpoints and metrics record
CHANGEABLE_ON_RESUME = {"steps", "save_every", "keep_checkpoints", "samples_per_step", "eval_every", "eval_limit",
                        "device", "reference_device", "overwrite", "resume", "out_dir"}  # fmt: skip


class UsageError(ValueError):
    """Options that cannot work, or inputs that cannot be used together: train.py and evaluate.py print
    `error: …` and exit with EXIT_USAGE, no traceback."""


EXIT_USAGE = 2  # as argparse: options that cannot work, an input (file, model) that cannot be used


def task_choices(tasks: Registry) -> dict[str, dict[str, str]]:
    """`add_options`' `choices` for --task: every registered domain's name and summary."""
    return {"task": {name: task.summary for name, task in tasks.items()}}


def build_parser(tasks: Registry, description: str = "") -> argparse.ArgumentParser:
    """train.py's parser, generated from Config; `tasks`: the domains --task chooses from (`tasks.TASKS`)."""
    parser = OneLineErrorParser(description=description, formatter_class=DefaultsHelpFormatter)
    add_options(parser, Config, choices=task_choices(tasks))
    parser.set_defaults(task=next(iter(tasks)))
    return parser


def parse_config(argv: list[str] | None, tasks: Registry, description: str = "") -> Config:
    """The Config of a command line (`argv`; None: sys.argv), with the defaults of where it runs (a GPU, or the
    task's on a CPU) and of its --preset, or those of the run it resumes, then checked (`validate`)."""
    parser = build_parser(tasks, description)
    known = parser.parse_known_args(argv)[0]
    if known.resume:
        # a resumed run starts from the options it was started with; the command line still wins
        saved = Path(known.resume) / "config.json"
        if not saved.is_file():
            raise UsageError(f"--resume {known.resume}: no config.json there, so no run to resume")
        try:
            options = json.loads(saved.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UsageError(
                f"--resume: {saved} is damaged ({err}); it cannot say how the run was started"
            ) from None
        unknown = (
            set(options) - {f.name for f in dataclasses.fields(Config)} if isinstance(options, dict) else None
        )
        if unknown is None or unknown:
            raise UsageError(f"--resume: {saved} is not a config.json written by train.py")
        parser.set_defaults(**{**options, "resume": known.resume, "out_dir": known.resume})
        given = vars(parser.parse_args(argv))
        if Path(given["out_dir"]).resolve() != Path(known.resume).resolve():
            raise UsageError(
                f"--resume {known.resume} continues the run in {known.resume}; --out-dir {given['out_dir']} names "
                "another directory (drop --out-dir, or copy the run there and resume it there)"
            )
        changed = {name: value for name, value in given.items() if name in options and value != options[name]}
        refused = sorted(set(changed) - CHANGEABLE_ON_RESUME)
        if refused:
            listed = ", ".join(
                f"--{n.replace('_', '-')} {changed[n]} (the run's: {options[n]})" for n in refused
            )
            raise UsageError(
                f"--resume continues a run as it was started, and these options differ from its config.json: "
                f"{listed}. Start a new run (another --out-dir) to train with them; only "
                f"{', '.join('--' + n.replace('_', '-') for n in sorted(CHANGEABLE_ON_RESUME))} may change on resume"
            )
    else:
        if on_gpu(known.device):
            parser.set_defaults(**GPU_DEFAULTS)
        else:
            parser.set_defaults(**tasks[known.task].cpu_defaults.get(known.reward, {}))
        if known.preset:
            # a preset replaces the defaults; whatever the command line gives explicitly still wins
            parser.set_defaults(**PRESETS[known.preset])
    config = Config(**vars(parser.parse_args(argv)))
    if config.out_dir is None:
        config.out_dir = f"runs/{config.task}-{config.reward}-{time.strftime('%Y%m%d-%H%M%S')}"
    validate(config, tasks)
    return config


def on_gpu(device: str) -> bool:
    """Whether --device names (or `auto` will pick) a CUDA GPU."""
    import torch

    return torch.cuda.is_available() if device == "auto" else device.startswith("cuda")


def task_option_problem(
    options: Any, tasks: Registry, reward: str | None, needs_examples: bool
) -> str | None:
    """What is wrong with the task options of `options` (a Config or evaluate.py's EvalConfig), or None: an
    option that only other domains read (`Task.options`), given another value than its default, or what the
    task itself refuses (`Task.option_problem`)."""
    task = tasks[options.task]
    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    for name in dict.fromkeys(option for other in tasks.values() for option in other.options):
        if name in task.options or name not in defaults or getattr(options, name) == defaults[name]:
            continue
        readers = " and ".join(f"--task {other}" for other, cls in tasks.items() if name in cls.options)
        return f"--{name.replace('_', '-')} is read by {readers}; --task {task.name} does not read it"
    return task.option_problem(options, reward=reward, needs_examples=needs_examples)


def shared_checks(options: Any) -> list[tuple[bool, str]]:
    """(holds, message) for the options train.py and evaluate.py share (a Config or an EvalConfig)."""
    return [
        (options.max_new_tokens >= 1, "--max-new-tokens must be ≥ 1"),
        (options.temperature >= 0, "--temperature must be ≥ 0 (0 is greedy)"),
        (0 < options.top_p <= 1, "--top-p must be in (0, 1]"),
        (0 <= options.test_fraction < 1, "--test-fraction must be in [0, 1)"),
        (
            0 <= options.reward_fn_timeout < math.inf,
            "--reward-fn-timeout must be a number of seconds ≥ 0 (0: no limit)",
        ),
        (
            not options.autocast or options.dtype in ("auto", "float32"),
            "--autocast keeps float32 weights and computes in bf16: use it with --dtype float32 (or auto), "
            "or pass --no-autocast for pure half-precision weights",
        ),
    ]


def validate(config: Config, tasks: Registry) -> None:
    """Refuse, with a UsageError naming the option, a combination of options that cannot work."""
    numbers = ("lr", "beta", "clip_eps", "temperature", "top_p", "warmup_ratio", "weight_decay",
               "max_grad_norm", "logprob_weight", "format_weight", "lora_dropout")  # fmt: skip
    for name in numbers:
        if not math.isfinite(getattr(config, name)):
            raise UsageError(
                f"--{name.replace('_', '-')} must be a finite number, got {getattr(config, name)}"
            )
    for ok, message in range_checks(config) + combination_checks(config) + shared_checks(config):
        if not ok:
            raise UsageError(message)
    problem = task_option_problem(config, tasks, reward=config.reward, needs_examples=True)
    if problem:
        raise UsageError(problem)


def range_checks(config: Config) -> list[tuple[bool, str]]:
    """(holds, the message if not) for each train.py option that has a range of its own."""
    return [
        (config.steps >= 1, "--steps must be ≥ 1"),
        (config.prompts_per_step >= 1, "--prompts-per-step must be ≥ 1"),
        (config.group_size >= 2, "--group-size must be ≥ 2: a group of one has no baseline to compare with"),
        (config.micro_batch_size >= 1, "--micro-batch-size must be ≥ 1"),
        (config.max_prompt_tokens >= 1, "--max-prompt-tokens must be ≥ 1"),
        (config.mu >= 1, "--mu must be ≥ 1"),
        (config.beta >= 0, "--beta must be ≥ 0"),
        (0 <= config.clip_eps < 1, "--clip-eps must be in [0, 1)"),
        (0 <= config.warmup_ratio < 1, "--warmup-ratio must be in [0, 1)"),
        (config.lr > 0, "--lr must be > 0"),
        (config.save_every >= 0, "--save-every must be ≥ 0"),
        (config.min_reasoning_tokens >= 0, "--min-reasoning-tokens must be ≥ 0"),
        (config.eval_every >= 0 and config.eval_limit >= 1, "--eval-every must be ≥ 0 and --eval-limit ≥ 1"),
        (config.keep_checkpoints >= 1, "--keep-checkpoints must be ≥ 1"),
        (config.lora_rank >= 0, "--lora-rank must be ≥ 0 (0: no LoRA, every weight trains)"),
        (config.lora_alpha is None or 0 < config.lora_alpha < math.inf, "--lora-alpha must be a number > 0"),
        (0 <= config.lora_dropout < 1, "--lora-dropout must be in [0, 1)"),
        (config.max_answer_tokens >= 1, "--max-answer-tokens must be ≥ 1"),
    ]


def combination_checks(config: Config) -> list[tuple[bool, str]]:
    """(holds, the message if not) for each combination of train.py options that cannot work."""
    return [
        (
            config.lora_rank > 0
            or (config.lora_alpha is None and config.lora_dropout == 0 and config.lora_targets is None),
            "--lora-alpha, --lora-dropout and --lora-targets shape LoRA adapters: give --lora-rank too",
        ),
        (
            not (config.fsdp and config.lora_rank > 0),
            "--fsdp shards a full fine-tuning; with --lora-rank the trained state is small already (not both)",
        ),
        (
            not (config.fsdp and config.eval_every),
            "--eval-every evaluates on rank 0 alone, and an FSDP rank holds half a model: evaluate the checkpoints "
            "with evaluate.py instead",
        ),
        (
            not (config.fsdp and config.compile),
            "--compile captures the decode step over the weights' memory, and --fsdp gathers the weights anew "
            "for every rollout (not both)",
        ),
        (
            not (config.fsdp and config.reference_device),
            "--fsdp shards the reference with the policy; --reference-device cannot move it",
        ),
        (
            not (config.lora_rank > 0 and config.reference_device),
            "--reference-device moves the reference copy, and a LoRA run has none (its reference is the "
            "policy with its adapters off)",
        ),
        (
            config.dtype != "float16",
            "--dtype float16 cannot train: AdamW's eps (1e-8) and its second moment underflow to 0 in float16, "
            "so the first step turns the weights into NaN/inf. Use --dtype auto (float32 weights, bf16 autocast "
            "on a GPU that has bf16), float32, or bfloat16",
        ),
        (
            not (config.temperature == 0 and config.group_size > 1),
            "--temperature 0 makes every completion of a group identical: every advantage would be 0, "
            "with either reward (the logprob reward of equal reasoning is equal too)",
        ),
    ]


def use_reasoning_mask(config: Config) -> bool:
    return config.reward == "logprob" if config.reasoning_mask is None else config.reasoning_mask
