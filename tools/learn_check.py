"""`make learn-check`: does the loop, on the packaged model, raise the logprob reward of the prompts it trains
on? A regression that stops the loop learning fails it. About 25 minutes on 2 CPU cores.

    python -m tools.learn_check                 # exit 0: it learned; exit 1: it did not
    python -m tools.learn_check --seed 1        # another sampling stream, for a second opinion
    python -m tools.learn_check --seeds 0 1 2 3 4   # one run per seed (~25 min each), judged over the runs

The same `--problems` Countdown problems (the first of the train split) are each asked `--repeats` times, before
and after `--steps` GRPO steps of `train.py --task math --reward logprob` with LOOP_RECIPE on exactly those
problems. The recipe is pinned, not the CPU default, so that a change of defaults cannot pass or fail the
check: it is the math CPU default before the length guard and the early-answer bar (README, "Does it learn?").
It learned the trained prompts in 10 steps with the previous sampler (+0.134 [+0.073, +0.196]), mostly by
shortening their reasoning, but not with today's, whose random draws differ (+0.041 [−0.036, +0.118]): at
10 steps the verdict rested on one sampling stream. So it runs 20 steps: −2.185 → −2.056, +0.129 [+0.056,
+0.202] with today's sampler, seed 0, and +0.120 [+0.046, +0.194] with --seed 2; but --seed 1 fails, +0.079
[−0.016, +0.173], so one run's verdict still depends on the stream; seeds 3 and 4 pass (+0.118, +0.185), and
the five runs' mean difference is +0.126 [+0.079, +0.173] (a t-interval over runs; README, "Does it learn?"). Today's default, which
lengthens the reasoning, did not move them in 10 steps (−0.034 [−0.115, +0.048]). Every completion is sampled with the same seeds on both sides and judged by the same fixed model, the
untrained start (`evaluate.py --scorer`): the figure is log P(gold | prompt, reasoning) per gold token, the
reward before its batch normalisation, compared pair by pair (`grpo.reports.compare_reports`). The check
passes when the paired difference's 95% interval lies above 0. With `--seeds`, each seed is one run, and the
check passes when the runs' mean difference has a 95% t-interval above 0 (n = the runs, `over_runs`): a
verdict that does not rest on one sampling stream, nor treat one run's completions as independent.
"""

from __future__ import annotations

import argparse
import sys

import torch

from grpo.config import parse_config
from grpo.evaluation import evaluate_model
from grpo.models import load_models
from grpo.reports import compare_reports
from grpo.run import progress_line, train_step
from grpo.statistics import t_interval
from grpo.task import Example, Task
from grpo.trainer import Trainer
from tasks import TASKS, get_task

FIGURE = "gold_logprob_per_token"
# lr 1e-5, no length guard, every unclosed completion scored, advantages not divided by the group's std
LOOP_RECIPE = ["--lr", "1e-5", "--min-reasoning-tokens", "0", "--unclosed", "score", "--no-scale-advantages"]


class FixedProblems(Task):
    """A task's first `n` training examples as its whole train split, each `repeats` times over (under ids
    `<id>#<k>`) when `repeats` > 1, so that an evaluation of the train split samples each problem that often."""

    def __init__(self, task: Task, n: int, repeats: int = 1):
        self.inner, self.name = task, task.name
        first = list(task.examples("train"))[:n]
        self.problems = [Example(f"{ex.id}#{k}", ex.gold, ex.data) for k in range(repeats) for ex in first]

    def examples(self, split: str) -> list[Example]:
        return self.problems if split == "train" else []

    def messages(self, example: Example):
        return self.inner.messages(example)

    def score_batch(self, examples, responses):
        return self.inner.score_batch(examples, responses)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.learn_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps on the fixed problems (default 20)")
    parser.add_argument(
        "--problems", type=int, default=4, help="fixed problems: one step's prompts (default 4)"
    )
    parser.add_argument(
        "--repeats", type=int, default=16, help="completions per problem, each side (default 16)"
    )
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the run's seed: its training draws and its judged samples (default 0)",
    )
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="one run per seed, one after the other; the verdict is on the runs' mean difference (over_runs)",
    )
    return parser.parse_args(argv)


def over_runs(differences: list[float]) -> dict[str, float | int | None]:
    """The runs' mean paired difference and its 95% t-interval, each run one value (n − 1 degrees of freedom)."""
    return t_interval(differences, 0.95, wald=False)


def one_run(args: argparse.Namespace, seed: int) -> dict:
    """Train from the start with `seed`, judge before and after; return the figure's row of the comparison."""
    recipe = ["--task", "math", "--reward", "logprob", "--device", "cpu", "--steps", str(args.steps),
              "--prompts-per-step", str(args.problems), "--seed", str(seed), "--out-dir", "unused"]  # fmt: skip
    config = parse_config([*recipe, *LOOP_RECIPE], TASKS)
    torch.manual_seed(config.seed)
    policy, reference, tokenizer = load_models(config.model, "cpu", "float32", with_reference=True)
    countdown = get_task("math")

    def judged(name: str) -> dict:  # every problem `repeats` times, judged by the untrained start
        return evaluate_model(
            policy,
            tokenizer,
            FixedProblems(countdown, args.problems, args.repeats),
            split="train",
            max_new_tokens=config.max_new_tokens,
            batch_size=16,
            seed=config.seed,
            scorer=reference,
            settings={"name": name},
        )

    before = judged("start")
    trainer = Trainer(config, policy, reference, tokenizer, FixedProblems(countdown, args.problems))
    for _ in range(args.steps):
        metrics, _ = train_step(trainer)
        print(
            f"step {trainer.step_index}/{args.steps}  {progress_line(metrics)}", file=sys.stderr, flush=True
        )
    after = judged(f"after {args.steps} steps")
    comparison = compare_reports(before, after, names=("start", f"after {args.steps} steps"))
    row = next(r for r in comparison["figures"] if r["figure"] == FIGURE)
    verdict = "passed" if row["low"] > 0 else "FAILED"
    print(
        f"learn-check {verdict}{f' (seed {seed})' if args.seeds else ''}: log P(gold | p, r) per token on the "
        f"{args.problems} trained problems, judged by the start, {row['mean_a']:.3f} → {row['mean_b']:.3f}: "
        f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}] (95% CI, n = {row['n']})",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.seeds:
        return 0 if one_run(args, args.seed)["low"] > 0 else 1
    rows = [one_run(args, seed) for seed in args.seeds]
    runs = over_runs([row["difference"] for row in rows])
    if runs["low"] is None:  # one seed: no spread over runs, so its own interval decides
        return 0 if rows[0]["low"] > 0 else 1
    passed = runs["low"] > 0
    print(
        f"learn-check over {len(rows)} runs {'passed' if passed else 'FAILED'}: mean difference "
        f"{runs['mean']:+.3f} [{runs['low']:+.3f}, {runs['high']:+.3f}] (95% t-interval over runs); "
        f"{sum(row['low'] > 0 for row in rows)} of {len(rows)} runs passed alone"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
