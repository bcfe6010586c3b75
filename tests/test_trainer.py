"""A few real GRPO steps on a tiny random model, in-process: parameters move, files are written."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import EchoTask, config, make_model, make_trainer
from transformers import AutoModelForCausalLM

from grpo.config import UsageError
from grpo.models import enable_activation_checkpointing
from grpo.rollout import build_prompt
from grpo.run import train, train_step
from grpo.task import Reward
from grpo.trainer import Trainer


@pytest.fixture
def model_factory():
    return make_model


@pytest.mark.parametrize("reward, mu", [("rule", 1), ("rule", 2), ("logprob", 1)])
def test_training_steps_change_parameters_and_write_metrics(tmp_path, tokenizer, model_factory, reward, mu):
    cfg = config(tmp_path, reward=reward, mu=mu)
    trainer = make_trainer(cfg, tokenizer, model_factory)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    history = train(trainer, progress=False)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert changed > 0

    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history  # the file holds what train returned
    assert [m["step"] for m in history] == [1, 2]
    metrics = history[0]
    for key in (
        "reward_mean",
        "reward_std",
        "format_rate",
        "kl",
        "clip_fraction",
        "zero_std_fraction",
        "completion_length_mean",
        "time_rollout",
        "time_reference",
        "time_reward",
        "time_update",
        "rollout_tokens_per_s",
        "lr",
        "loss",
    ):
        assert key in metrics, key

    n = cfg.prompts_per_step * cfg.group_size  # 2 × 4 = 8 completions a step
    for m in history:
        # every completion stopped for one reason, after its first token and by max_new_tokens = 12
        assert sum(m["finish_reasons"].values()) == n
        assert 1 <= m["completion_length_mean"] <= m["completion_length_max"] <= cfg.max_new_tokens
        # the loss keeps a prefix of each completion: all of it (rule), or its reasoning span (logprob)
        assert m["loss_tokens_mean"] <= m["completion_length_mean"]
        # tokens/s of the rollout = the batch's tokens (mean × 8) over the rollout's seconds
        assert m["rollout_tokens_per_s"] == pytest.approx(n * m["completion_length_mean"] / m["time_rollout"])
        # the format reward is 0 or 1 per completion: a mean of 8 of them is a multiple of 1/8
        assert (n * m["format_rate"]).is_integer() and 0.0 <= m["format_rate"] <= 1.0
        # 2 groups: the share of all-equal groups is 0, 1/2 or 1
        assert m["zero_std_fraction"] in (0.0, 0.5, 1.0)
        # both rewards lie in [0, 1] (a letter's share; 0.9 · min-max in [0, 1] + 0.1 · format in {0, 1}),
        # and the spread of values in [0, 1] is at most half the range
        assert 0.0 <= m["reward_mean"] <= 1.0 and 0.0 <= m["reward_std"] <= 0.5
        assert m["nonfinite_rewards"] == 0 and m["skipped_updates"] == 0
        # "<|user|>say a\n<|assistant|>Let me think it through first.\n<think>" is 46 tokens: all fit in 64
        assert m["skipped_long_prompts"] == 0
        assert m["lr"] == cfg.lr  # constant schedule, no warm-up
        # a finite loss; the gradient norm is logged (not None) as max_grad_norm = 1 > 0
        assert math.isfinite(m["loss"]) and m["grad_norm"] >= 0.0
        assert all(m[f"time_{phase}"] >= 0.0 for phase in ("rollout", "reward", "reference", "update"))
    if reward == "logprob":
        for key in (
            "logprob_mean",
            "logprob_raw_mean",
            "logprob_per_token_mean",
            "gold_tokens_mean",
            "reasoning_tokens_mean",
            "format_mean",
            "rule_share_mean",
        ):
            assert key in metrics, key
        for m in history:
            assert 0.0 <= m["logprob_mean"] <= 1.0  # min-max normalised
            # R_i = 0.9 · logprob_i + 0.1 · format_i (the default weights), so the means add up alike
            assert m["reward_mean"] == pytest.approx(
                cfg.logprob_weight * m["logprob_mean"] + cfg.format_weight * m["format_mean"]
            )
            assert m["format_mean"] == pytest.approx(m["format_rate"])
            # every gold answer is one letter, one token: per token is the sum, and a log-prob is ≤ 0
            assert m["gold_tokens_mean"] == 1.0 and m["gold_tokens_std"] == 0.0
            assert m["logprob_per_token_mean"] == m["logprob_raw_mean"] <= 0.0
            assert 0.0 <= m["rule_share_mean"] <= 1.0  # watched, not trained on
    else:
        for m in history:  # the rule reward is the task's total, here its only part
            assert m["share_mean"] == m["reward_mean"] and m["share_std"] == m["reward_std"]
            # the loss keeps every completion token (no reasoning mask without the logprob reward)
            assert m["loss_tokens_mean"] == m["completion_length_mean"]
    if mu == 1:
        # the only update of a step starts from the policy that sampled: π_old is the policy itself, so
        # r_t = exp(logp − logp.detach()) = 1 exactly, and min(r·Â, clip(r)·Â) never picks the clipped term
        assert [m["ratio_mean"] for m in history] == [1.0, 1.0]
        assert [m["clip_fraction"] for m in history] == [0.0, 0.0]
        # step 1's update starts from π_θ = π_ref (the same weights, scored by the same micro-batches), so
        # the k3 KL is expm1(0) − 0 = 0 exactly; after that update the policy has moved away from π_ref
        assert history[0]["kl"] == 0.0
    else:
        for m in history:
            assert 0.0 <= m["clip_fraction"] <= 1.0 and m["ratio_mean"] > 0.0
            # the second update's π_θ is the first update's result, π_old the policy that sampled: a ratio
            # of exactly 1 on average would mean π_old was taken from the policy being updated
            assert abs(m["ratio_mean"] - 1.0) > 0.1
    assert history[1]["kl"] > 0.0  # the policy was updated at least once: it is no longer π_ref

    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * cfg.samples_per_step
    assert [s["step"] for s in samples] == [1] * cfg.samples_per_step + [2] * cfg.samples_per_step
    assert all(s["response"].startswith("<think>") for s in samples)
    # a step's first samples_per_step = 4 = G completions are its first group: A_i = R_i − mean of the 4
    assert cfg.samples_per_step == cfg.group_size
    for step in (1, 2):
        group = [s for s in samples if s["step"] == step]
        mean = sum(s["reward"] for s in group) / len(group)
        for s in group:
            assert s["advantage"] == pytest.approx(s["reward"] - mean, abs=1e-6)

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    for p, q in zip(trainer.policy.parameters(), reloaded.parameters()):
        assert torch.equal(p, q)


def test_zero_beta_runs_without_a_reference(tmp_path, tokenizer, model_factory):
    trainer = make_trainer(config(tmp_path, beta=0.0, steps=1), tokenizer, model_factory)
    assert trainer.reference is None
    metrics, _ = train_step(trainer)
    assert metrics["kl"] == 0.0


def test_all_equal_groups_make_no_update(tmp_path, tokenizer, model_factory):
    class Constant(EchoTask):
        def score(self, example, response):
            return Reward(total=1.0, parts={"share": 1.0})

    cfg = config(tmp_path, beta=0.0, steps=1, max_grad_norm=0.0)
    trainer = Trainer(cfg, model_factory(tokenizer), None, tokenizer, Constant())
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    metrics, _ = train_step(trainer)
    assert metrics["zero_std_fraction"] == 1.0
    # every advantage is exactly 0 and β = 0, so the gradient is 0 and AdamW (no weight decay) leaves θ as it was
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


def test_build_prompt_prefills_think(tokenizer):
    ids = build_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert tokenizer.decode(ids) == "<|user|>hi\n<|assistant|>Let me think it through first.\n<think>"


def test_prompts_too_long_are_skipped_and_counted(tmp_path, tokenizer, model_factory):
    class Mixed(EchoTask):
        def messages(self, example):  # the prompts of a, c, e, g are long
            pad = "x" * 200 if example.gold in "aceg" else ""
            return [{"role": "user", "content": f"say {example.gold}{pad}"}]

    cfg = config(tmp_path, beta=0.0, prompts_per_step=4, max_prompt_tokens=60)
    trainer = Trainer(cfg, model_factory(tokenizer), None, tokenizer, Mixed())
    batch = trainer.next_examples()
    assert sorted(ex.gold for ex in batch) == ["b", "d", "f", "h"]
    # every example popped from the epoch's order that is not in the batch was a skipped long one
    assert trainer.skipped_long_prompts == 8 - len(trainer.order) - 4 > 0
    too_short = Trainer(
        config(tmp_path, beta=0.0, max_prompt_tokens=5), model_factory(tokenizer), None, tokenizer, Mixed()
    )
    with pytest.raises(UsageError, match="every training prompt is longer"):
        too_short.next_examples()


def test_a_second_run_into_the_same_directory_is_refused_unless_overwrite(tmp_path, tokenizer, model_factory):
    cfg = config(tmp_path, beta=0.0, steps=1)
    train(make_trainer(cfg, tokenizer, model_factory), progress=False)
    with pytest.raises(UsageError, match="already holds a run"):
        train(make_trainer(cfg, tokenizer, model_factory), progress=False)
    cfg.overwrite = True
    train(make_trainer(cfg, tokenizer, model_factory), progress=False)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1


def test_eval_every_logs_a_held_out_score_without_changing_training(tmp_path, tokenizer, model_factory):
    plain = make_trainer(config(tmp_path / "plain", beta=0.0, steps=2), tokenizer, model_factory)
    train(plain, progress=False)
    evaluated = make_trainer(
        config(tmp_path / "eval", beta=0.0, steps=2, eval_every=1, eval_limit=2), tokenizer, model_factory
    )
    history = train(evaluated, progress=False)
    assert all(0.0 <= m["eval_score"] <= 1.0 and "eval_share" in m for m in history)
    assert history[0]["eval_score_low"] <= history[0]["eval_score"] <= history[0]["eval_score_high"]
    for p, q in zip(plain.policy.parameters(), evaluated.policy.parameters()):
        assert torch.equal(p, q)


def test_gradient_checkpointing_leaves_the_update_unchanged(tmp_path, tokenizer):
    from conftest import make_float64_model  # float64 throughout: the comparison is not float32 rounding

    plain = make_trainer(config(tmp_path / "plain", steps=1), tokenizer, make_float64_model)
    train(plain, progress=False)
    saving = make_trainer(config(tmp_path / "saving", steps=1), tokenizer, make_float64_model)
    enable_activation_checkpointing(saving.policy)
    policy = saving.policy
    active = (
        "is_activation_checkpointing"
        if hasattr(type(policy), "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    assert getattr(policy, active)
    train(saving, progress=False)
    # recomputing the activations repeats the same float64 arithmetic: the weights agree to float64
    # rounding (measured: exactly), far inside 1e-9, while AdamW moves the weights it updates by ~1e-2
    for p, q in zip(plain.policy.parameters(), saving.policy.parameters()):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, atol=1e-9, rtol=0)


def test_autocast_computes_in_bf16_and_keeps_fp32_weights(tmp_path, tokenizer, model_factory):
    trainer = make_trainer(
        config(tmp_path, steps=1, reward="logprob", autocast=True), tokenizer, model_factory
    )
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    seen = []  # dtype of an MLP projection's output, in every forward pass of the step
    trainer.policy.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda m, i, out: seen.append(out.dtype)
    )
    metrics, _ = train_step(trainer)
    assert seen and set(seen) == {torch.bfloat16}
    assert math.isfinite(metrics["loss"])
    assert all(
        p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainer.policy.parameters()
    )
    assert any(not torch.equal(p, b) for p, b in zip(trainer.policy.parameters(), before))


class SometimesNaNTask(EchoTask):
    """EchoTask whose scorer breaks on responses containing an "a": it returns NaN there."""

    def score(self, example, response):
        reward = super().score(example, response)
        return Reward(total=float("nan"), parts=reward.parts) if "a" in response[7:] else reward


def test_a_nan_reward_is_counted_and_never_reaches_the_weights(tmp_path, tokenizer, model_factory, capsys):
    policy = model_factory(tokenizer, seed=0)
    trainer = Trainer(config(tmp_path, steps=3, beta=0.0), policy, None, tokenizer, SometimesNaNTask())
    history = train(trainer, progress=False)
    nan_steps = [m for m in history if m["nonfinite_rewards"] > 0]
    assert nan_steps, "the toy scorer should have broken on some response"
    assert "rewards are NaN or infinite" in capsys.readouterr().err
    assert all(math.isfinite(m["loss"]) and math.isfinite(m["reward_mean"]) for m in history)
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


def test_output_to_a_file_is_one_line_per_step_and_final_shares_the_checkpoints_weights(
    tmp_path, tokenizer, model_factory, capsys
):
    cfg = config(tmp_path, steps=2, beta=0.0, reward="logprob", scorer="policy")  # no reference at β = 0
    trainer = make_trainer(cfg, tokenizer, model_factory)
    train(trainer, progress=True)  # stderr is captured here: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err  # no bar redrawn with carriage returns or escape codes
    steps = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and steps[0].startswith("step 1/2  reward ") and "reasoning" in steps[0]
    final = tmp_path / "run" / "final" / "model.safetensors"
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002" / "model" / "model.safetensors"
    assert final.stat().st_ino == checkpoint.stat().st_ino  # one copy of the weights on disk
    assert "done: metrics in" in err


def test_min_reasoning_tokens_marks_the_short_reasonings_in_metrics_and_progress_line(
    tmp_path, tokenizer, model_factory
):
    from grpo.run import progress_line

    # 12 new tokens at most: every reasoning is under 1,000 tokens and none is under 0
    for minimum, expected in ((1000, 1.0), (0, 0.0)):
        cfg = config(tmp_path / str(minimum), reward="logprob", steps=1, min_reasoning_tokens=minimum)
        metrics, _ = train_step(make_trainer(cfg, tokenizer, model_factory))
        assert metrics["reasoning_too_short_mean"] == expected
        assert f"short {expected:.2f}" in progress_line(metrics)


class HugeRewardTask(EchoTask):
    """A broken scorer: finite rewards of ±3e38, whose loss overflows to ±inf."""

    def score(self, example, response):
        self.calls = getattr(self, "calls", 0) + 1
        value = 3e38 if self.calls % 2 else -3e38
        return Reward(total=value, parts={"huge": value})


def test_a_non_finite_update_is_skipped_the_weights_stay_finite_and_three_in_a_row_stop(
    tmp_path, tokenizer, capsys
):
    from grpo.trainer import MAX_SKIPPED_IN_A_ROW, NonFiniteUpdates

    cfg = config(tmp_path, steps=5, beta=0.0)
    trainer = Trainer(cfg, make_model(tokenizer), None, tokenizer, HugeRewardTask())
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    for step in range(1, MAX_SKIPPED_IN_A_ROW):
        result = trainer.step()
        assert not all(math.isfinite(x) for x in result.losses)  # the loss did overflow
        assert trainer.skipped_updates == step
    assert "this update is skipped and the weights are unchanged" in capsys.readouterr().err
    with pytest.raises(NonFiniteUpdates, match="3 updates in a row had a non-finite loss or gradient"):
        trainer.step()
    for p, b in zip(trainer.policy.parameters(), before, strict=True):
        assert torch.equal(p, b)  # never updated: finite, as it started
    assert trainer.state_dict()["skipped_updates"] == 3


def test_compile_reaches_the_rollout_and_auto_leaves_it_off(tmp_path, tokenizer, model_factory, monkeypatch):
    import grpo.decode
    import grpo.rollout
    import grpo.trainer

    seen = []

    def recording_rollout(*args, **kwargs):
        seen.append(kwargs["compile"])
        return grpo.rollout.rollout(*args, **kwargs)

    monkeypatch.setattr(grpo.trainer, "rollout", recording_rollout)
    # the "compiler" hands back the eager step, so only the plumbing is under test here
    monkeypatch.setattr(grpo.decode, "compiled_decode_forward", lambda device: grpo.decode.decode_forward)
    for setting in (None, True, False):
        make_trainer(
            config(tmp_path / str(setting), steps=1, compile=setting), tokenizer, model_factory
        ).step()
    assert seen == [False, True, False]
