"""End to end: the whole GRPO loop raises the reward it is given, with rule and logprob rewards.

Every other test checks one piece. This one checks the composition: rollout → rewards → advantages →
loss → AdamW must move a policy towards what the reward prefers, and a sign error anywhere on that path
(the advantages, the surrogate, the loss's sign, the direction of the logprob reward) must show.

The toy (seconds on a CPU): the tests' tiny model is first taught, by plain supervised steps, to write
`<think>ccc</think>\\n<answer>c</answer>` for a letter c drawn from "abcd", whatever the prompt says. The
gold answer is always "a", so at the start about a quarter of the completions are right, and
- the rule reward (the answer equals the gold) rises when the policy learns to pick "a";
- the logprob reward, log P("a" | prompt, reasoning), scored by the policy itself, rises when the
  policy learns to reason "aaa": the model it was taught copies the reasoning's letter into the answer.

Checked that it can fail: with the advantages negated (`test_..._negated_advantages_...` below) both
rewards fall instead; negating the surrogate in grpo/loss.py (`per_token_objective = -torch.minimum(...)`)
was also tried by hand, and made both learning tests fail.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import make_model, make_tokenizer

import grpo.trainer as trainer_module
from grpo.config import Config
from grpo.lora import LoraOptions, add_adapters
from grpo.rollout import build_prompt
from grpo.run import train_step
from grpo.tags import parse_response
from grpo.task import Example, Reward, Task
from grpo.trainer import Trainer

LETTERS = "abcd"  # what the taught model reasons about, uniformly
GOLD = "a"
STEPS = 20
LORA_LR = 3e-3  # adapters start at B = 0 and hold fewer numbers: LoRA takes a larger step


class LetterTask(Task):
    """ "Say a letter": four prompts, one gold answer, the rule reward is the answer being right."""

    name = "letter"

    def examples(self, split):
        return [Example(id=f"{split}-{i}", gold=GOLD, data={}) for i in range(4)]

    def messages(self, example):
        return [{"role": "user", "content": f"say {GOLD} ({example.id})"}]

    def score(self, example, response):
        right = float(parse_response(response).answer == example.gold)
        return Reward(total=right, parts={"right": right})


def teach():
    """(tokenizer, a tiny model taught the format and to answer with the letter it reasoned about)."""
    tokenizer = make_tokenizer()
    model = make_model(tokenizer, seed=0).train()
    task, rng = LetterTask(), random.Random(0)
    prompts = [build_prompt(tokenizer, task.messages(ex)) for ex in task.examples("train")]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        rows = []
        for _ in range(32):
            letter = rng.choice(LETTERS)
            text = letter * rng.randint(2, 4) + f"</think>\n<answer>{letter}</answer>"
            rows.append((rng.choice(prompts), tokenizer.encode(text) + [tokenizer.eos_token_id]))
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)  # the loss is on the completion only
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tokenizer, model.eval()


@pytest.fixture(scope="module")
def taught():
    return teach()


def train_curve(
    taught, tmp_path, reward: str, lora: LoraOptions | None = None, lr: float = 3e-4
) -> list[float]:
    """The measure each step's batch scored, over STEPS GRPO steps from the taught model (with `lora`: of
    LoRA adapters on it, the base weights frozen)."""
    tokenizer, model = taught
    cfg = Config(
        task="letter",
        reward=reward,
        steps=STEPS,
        prompts_per_step=4,
        group_size=4,
        micro_batch_size=16,
        max_new_tokens=32,
        max_prompt_tokens=128,
        lr=lr,
        beta=0.0,
        scorer="policy",  # the toy's answer follows the policy's own reasoning; there is no reference
        min_reasoning_tokens=0,  # the toy's reasoning is three letters
        seed=0,
        out_dir=str(tmp_path),
    )
    policy = copy.deepcopy(model) if lora is None else add_adapters(copy.deepcopy(model), lora)
    trainer = Trainer(cfg, policy, None, tokenizer, LetterTask())
    # the rule run's reward is its rule; the logprob run's is log P(gold | p, r) per gold token, read
    # before the batch's min-max (which rescales every batch to [0, 1] and so cannot rise)
    measure = "right_mean" if reward == "rule" else "logprob_per_token_mean"
    return [train_step(trainer)[0][measure] for _ in range(STEPS)]


@pytest.mark.parametrize("reward, gain", [("rule", 0.4), ("logprob", 1.5)])
def test_grpo_raises_the_reward(taught, tmp_path, reward, gain):
    curve = train_curve(taught, tmp_path, reward)
    start, end = curve[0], sum(curve[-5:]) / 5
    assert end > start + gain, [round(x, 3) for x in curve]


@pytest.mark.parametrize("reward, gain", [("rule", 0.4), ("logprob", 1.5)])
def test_grpo_raises_the_reward_of_lora_adapters(taught, tmp_path, reward, gain):
    curve = train_curve(taught, tmp_path, reward, lora=LoraOptions(rank=4, alpha=8.0), lr=LORA_LR)
    start, end = curve[0], sum(curve[-5:]) / 5
    assert end > start + gain, [round(x, 3) for x in curve]


@pytest.mark.parametrize("reward", ["rule", "logprob"])
def test_the_same_loop_with_negated_advantages_lowers_the_reward(taught, tmp_path, reward, monkeypatch):
    group_advantages = trainer_module.group_advantages

    def negated(rewards, group_size, **kwargs):
        advantages, zero_std = group_advantages(rewards, group_size, **kwargs)
        return -advantages, zero_std

    monkeypatch.setattr(trainer_module, "group_advantages", negated)
    curve = train_curve(taught, tmp_path, reward)
    assert sum(curve[-5:]) / 5 < curve[0], [round(x, 3) for x in curve]
