"""LoRA (grpo/lora.py): the reference is the base model, only adapters train, final/ loads both ways, and the
whole loop still learns. Exact resume after SIGKILL is tests/test_checkpoint.py's test, run with --lora-rank."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import EchoTask, config, make_model, make_qwen3_model

from grpo.config import UsageError, parse_config
from grpo.logprobs import token_logprobs
from grpo.lora import (
    ADAPTER_DIR,
    LoraOptions,
    add_adapters,
    block_linear_names,
    merged_state_dict,
    quiet_peft,
)
from grpo.run import train
from grpo.trainer import Trainer
from tasks import TASKS

OPTIONS = LoraOptions(rank=4, alpha=8.0)


def lora_trainer(tmp_path, tokenizer, make=make_model, **overrides):
    """(trainer of a LoRA policy, a frozen copy of its base model taken before the adapters went on)."""
    base = make(tokenizer)
    start = copy.deepcopy(base)
    trainer = Trainer(config(tmp_path, **overrides), add_adapters(base, OPTIONS), None, tokenizer, EchoTask())
    return trainer, start


def rollout_batch(trainer):
    from grpo.rollout import build_prompt, rollout

    prompts = [
        build_prompt(trainer.tokenizer, trainer.task.messages(ex)) for ex in trainer.train_examples[:2]
    ]
    return rollout(
        trainer.policy,
        trainer.tokenizer,
        prompts,
        group_size=2,
        max_new_tokens=10,
        temperature=1.0,
        top_p=1.0,
        stop_token_ids=trainer.stop_ids,
        one_think=True,
        generator=torch.Generator().manual_seed(0),
    )


@torch.no_grad()
def logprobs(model, out):
    return token_logprobs(
        model, out.input_ids, out.attention_mask, out.prompt_length, micro_batch_size=4, group_size=2
    )


def randomise_adapters(model):
    """B is zero at the start (the policy is then the reference exactly); make the adapters matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)


def test_the_default_targets_are_every_linear_layer_of_the_blocks(tokenizer):
    assert block_linear_names(make_model(tokenizer)) == (
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj",
    )  # fmt: skip
    policy = add_adapters(make_model(tokenizer), OPTIONS)
    adapted = {n.rsplit(".", 1)[0] for n, p in policy.named_parameters() if p.requires_grad}
    # 2 layers × 7 projections × (A, B); the embeddings and lm_head get none
    assert len(adapted) == 2 * 7 * 2 and not any("embed" in n or "lm_head" in n for n in adapted)


def test_the_reference_is_the_base_model_with_the_adapters_off(tmp_path, tokenizer):
    trainer, start = lora_trainer(tmp_path, tokenizer)
    randomise_adapters(trainer.policy)
    out = rollout_batch(trainer)
    base = logprobs(start, out)
    with trainer.reference_model() as reference:
        assert reference is trainer.policy  # no second copy of the weights
        assert torch.equal(logprobs(reference, out), base)
    # after the block the adapters are on again, and they change the log-probs
    assert (logprobs(trainer.policy, out) - base).abs().max() > 1e-3


def test_a_step_changes_the_adapters_and_nothing_else(tmp_path, tokenizer):
    trainer, start = lora_trainer(tmp_path, tokenizer, beta=0.05)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.step()
    trainer.step()  # B moved off zero in step 1; now A gets a gradient too
    changed = {n for n, p in trainer.policy.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert changed == adapters and len(adapters) == 28
    # AdamW holds state for the adapters only
    assert len(trainer.optimizer.state) == len(adapters)
    # the base weights are still the start's, bit for bit
    plain = {n.replace("base_model.model.", "").replace(".base_layer", ""): p for n, p in before.items()}
    assert all(torch.equal(plain[n], p) for n, p in start.named_parameters())


def test_a_lora_policy_with_a_reference_copy_is_refused(tmp_path, tokenizer):
    policy = add_adapters(make_model(tokenizer), OPTIONS)
    with pytest.raises(ValueError, match="its own reference"):
        Trainer(config(tmp_path), policy, make_model(tokenizer), tokenizer, EchoTask())


@pytest.mark.parametrize("make", [make_model, make_qwen3_model], ids=["llama", "qwen3-tied"])
def test_final_holds_the_merged_model_and_the_adapters(tmp_path, tokenizer, make):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer, _ = lora_trainer(tmp_path, tokenizer, make=make, steps=2, save_every=0, beta=0.0)
    train(trainer, progress=False)
    out = rollout_batch(trainer)
    trained = logprobs(trainer.policy, out)
    final = tmp_path / "run" / "final"
    # the adapters in PEFT's format, on a fresh copy of the base model: the same numbers exactly
    with quiet_peft():
        again = PeftModel.from_pretrained(make(tokenizer), final / ADAPTER_DIR)
    assert torch.equal(logprobs(again, out), trained)
    # the merged model is a plain transformers model: W + (α / r)·BA, so equal up to float32 rounding
    merged = AutoModelForCausalLM.from_pretrained(final)
    assert type(merged).__name__ == type(make(tokenizer)).__name__
    difference = (logprobs(merged, out) - trained).abs().max()
    assert difference < 1e-4 * trained.abs().max(), float(difference)
    # and really merged: without the adapters' update the numbers differ
    assert (logprobs(make(tokenizer), out) - trained).abs().max() > 1e-3


def test_merging_does_not_change_the_policy(tokenizer):
    policy = add_adapters(make_model(tokenizer), OPTIONS)
    randomise_adapters(policy)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    state = merged_state_dict(policy)
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())
    # W' = W + (α / r)·B·A, by hand, for one layer
    layer = policy.get_base_model().model.layers[0].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, d_in), (d_out, r)
    expected = layer.base_layer.weight + (OPTIONS.alpha / OPTIONS.rank) * b @ a
    torch.testing.assert_close(state["model.layers.0.self_attn.q_proj.weight"], expected)
    assert not any("lora" in key or "base_layer" in key for key in state)


def test_lora_options_are_checked(tmp_path):
    parse = lambda *argv: parse_config(["--out-dir", str(tmp_path / "r"), *argv], TASKS)  # noqa: E731
    assert LoraOptions.of(parse()) is None
    assert LoraOptions.of(parse("--lora-rank", "8")) == LoraOptions(8, 16.0, 0.0, None)
    assert LoraOptions.of(parse("--lora-rank", "8", "--lora-targets", "q_proj", "v_proj")).targets == (
        "q_proj",
        "v_proj",
    )
    for argv, message in [
        (["--lora-alpha", "4"], "give --lora-rank too"),
        (["--lora-rank", "-1"], "--lora-rank must be ≥ 0"),
        (["--lora-rank", "4", "--lora-dropout", "1"], "--lora-dropout must be in"),
        (["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha must be"),
        (["--lora-rank", "4", "--reference-device", "cpu"], "has none"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse(*argv)


def test_without_peft_the_option_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import builtins

    import train

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    code = train.main(["--lora-rank", "4", "--out-dir", str(tmp_path / "r")])
    assert code == train.EXIT_USAGE
    assert "pip install -e '.[lora]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written
