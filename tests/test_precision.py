"""Precision that trains: float32 master weights under bf16 autocast, and why pure bf16 is not the default.

At the poster's learning rate (5e-7) an AdamW step moves each weight by about lr. bf16 keeps 8 significant
bits, so a weight of 0.02 has neighbours 2^-13 ≈ 1.2e-4 away and a step of 5e-7 rounds back to the same
number. These tests run on a CPU with the settings a GPU gets by default.
"""

from __future__ import annotations

import pytest
import torch
from conftest import EchoTask, config, make_model, make_trainer

from grpo.precision import evaluation_precision, lost_update_fraction, training_precision
from grpo.trainer import Trainer

CUDA = torch.device("cuda")  # only its type is read; nothing runs on it
POSTER_LR = 5e-7


def test_the_gpu_default_is_float32_weights_with_bf16_autocast():
    assert training_precision("auto", None, CUDA, has_bf16=True) == ("float32", True)
    assert training_precision("auto", None, CUDA, has_bf16=False) == ("float32", False)  # e.g. a V100
    assert training_precision("auto", None, torch.device("cpu")) == ("float32", False)
    # pure half precision only when asked for by name, and then without autocast
    assert training_precision("bfloat16", None, CUDA, has_bf16=True) == ("bfloat16", False)
    assert training_precision("auto", False, CUDA, has_bf16=True) == ("float32", False)
    # asking for float32 by name means float32 compute too; --autocast still turns bf16 on
    assert training_precision("float32", None, CUDA, has_bf16=True) == ("float32", False)
    assert training_precision("float32", True, CUDA, has_bf16=True) == ("float32", True)
    with pytest.raises(ValueError, match="unknown dtype"):
        training_precision("float8", None, CUDA)


@pytest.fixture
def cpu_bf16(monkeypatch):
    """`cpu_bf16_pays` measured afresh, with this CPU's hardware and timing replaced by the given ones."""
    import grpo.precision as precision

    def setup(env=None, hardware=False, speedup=None):
        if env is None:
            monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
        else:
            monkeypatch.setenv(precision.CPU_BF16_ENV, env)
        monkeypatch.setattr(precision, "cpu_has_bf16_arithmetic", lambda: hardware)

        def measured():
            if speedup is None:
                raise AssertionError("measured on a CPU that has no bf16 arithmetic")
            return speedup

        monkeypatch.setattr(precision, "bf16_matmul_speedup", measured)
        precision.cpu_bf16_pays.cache_clear()
        return training_precision("auto", None, torch.device("cpu"))[1]

    yield setup
    precision.cpu_bf16_pays.cache_clear()


def test_cpu_autocast_auto_is_on_only_with_bf16_hardware_that_measures_faster(cpu_bf16):
    assert cpu_bf16(hardware=False) is False  # no AMX or AVX512-BF16: off, and nothing is measured
    assert cpu_bf16(hardware=True, speedup=1.7) is True  # the Xeon with AMX of issue 25: 1.73× on a decode
    assert cpu_bf16(hardware=True, speedup=1.1) is False  # under CPU_BF16_MIN_SPEEDUP: not worth its casts
    assert cpu_bf16(env="on", hardware=False) is True  # the override decides without measuring
    assert cpu_bf16(env="off", hardware=True, speedup=3.0) is False
    with pytest.raises(ValueError, match="LOGPROB_GRPO_CPU_BF16='maybe': use on or off"):
        cpu_bf16(env="maybe")


def test_explicit_autocast_wins_over_the_cpu_measurement(cpu_bf16):
    cpu_bf16(hardware=True, speedup=2.0)
    cpu = torch.device("cpu")
    assert training_precision("auto", False, cpu) == ("float32", False)
    assert training_precision("float32", None, cpu) == ("float32", False)  # float32 by name: no autocast
    assert evaluation_precision("auto", None, cpu) == ("float32", True)  # evaluation computes as training did


def test_the_measurement_runs_on_this_cpu():
    from grpo.precision import bf16_matmul_speedup

    speedup = bf16_matmul_speedup(rows=32, width=64, repeats=2)
    assert 0 < speedup < 100


def test_float16_weights_cannot_train_but_can_be_evaluated():
    with pytest.raises(ValueError, match="float16 cannot train"):
        training_precision("float16", None, CUDA, has_bf16=True)
    assert evaluation_precision("float16", None, CUDA, has_bf16=True) == ("float16", False)


def test_float16_adamw_is_what_the_refusal_prevents():
    # the reason, shown: one AdamW step on float16 weights with a small gradient gives non-finite weights
    w = torch.nn.Parameter(torch.full((4,), 0.02, dtype=torch.float16))
    w.grad = torch.full((4,), 1e-4, dtype=torch.float16)  # its square, 1e-8, is 0 in float16
    torch.optim.AdamW([w], lr=1e-5).step()
    assert not torch.isfinite(w).all()


def test_evaluation_computes_as_training_did():
    # a trained run's float32 weights, never a bf16 copy: under autocast where training used it
    assert evaluation_precision("auto", None, CUDA, has_bf16=True) == ("float32", True)
    assert evaluation_precision("auto", None, torch.device("cpu")) == ("float32", False)
    assert evaluation_precision("bfloat16", None, CUDA, has_bf16=True) == ("bfloat16", False)


def test_lost_update_fraction_by_hand():
    # bf16 1.0 has neighbours 2^-7 apart: a step of 1e-3 < 2^-8 rounds away. 0.02 = 0.64 · 2^-5 has
    # neighbours 2^-13 apart: a step of 1e-3 survives. One of two lost.
    weights = torch.tensor([1.0, 0.02], dtype=torch.bfloat16)
    assert lost_update_fraction([weights], 1e-3) == 0.5
    assert (weights + 1e-3)[0] == weights[0] and (weights + 1e-3)[1] != weights[1]  # what it predicts
    assert lost_update_fraction([weights], 1e-2) == 0.0
    assert lost_update_fraction([weights.float()], 1e-9) == 0.0  # float32 weights never count
    # fp16 (eps 2^-10): 1.0's neighbours are 2^-10 apart, so 1e-3 > 2^-11 survives
    assert lost_update_fraction([weights.half()], 1e-3) == 0.0


def changed_share_after_one_step(tmp_path, tokenizer, weights: str, autocast: bool) -> float:
    """Share of the weights that got a gradient and moved, after one GRPO step at the poster's lr."""
    cfg = config(tmp_path, steps=1, lr=POSTER_LR, beta=0.0, dtype=weights, autocast=autocast)
    trainer = make_trainer(cfg, tokenizer, make_model)
    trainer.policy.to(getattr(torch, weights))
    trainer.optimizer = torch.optim.AdamW(trainer.policy.parameters(), lr=POSTER_LR)  # on the cast weights
    trainer.scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.step()
    moved = graded = 0
    for p, b in zip(trainer.policy.parameters(), before, strict=True):
        has_gradient = p.grad != 0
        graded += int(has_gradient.sum())
        moved += int((has_gradient & (p.detach() != b)).sum())
    assert graded > 10_000  # the step did produce gradients
    return moved / graded


@pytest.mark.filterwarnings("ignore:at --lr")
def test_one_step_at_the_posters_lr_moves_almost_every_weight_under_the_gpu_default(tmp_path, tokenizer):
    weights, autocast = training_precision("auto", None, CUDA, has_bf16=True)
    mixed = changed_share_after_one_step(tmp_path / "mixed", tokenizer, weights, autocast)
    assert mixed > 0.99
    # the old GPU default, pure bf16 weights: the same step changes almost nothing
    pure = changed_share_after_one_step(tmp_path / "pure", tokenizer, "bfloat16", False)
    assert pure < 0.2


def test_pure_bf16_at_a_small_lr_warns(tmp_path, tokenizer):
    cfg = config(tmp_path, steps=1, lr=POSTER_LR, beta=0.0, dtype="bfloat16")
    policy = make_model(tokenizer).to(torch.bfloat16)
    with pytest.warns(UserWarning, match=r"rounds away for \d+% of the torch.bfloat16 weights"):
        Trainer(cfg, policy, None, tokenizer, EchoTask())


# --------------------------------------------------------------------------------------------------
# Under autocast: what each phase computes in


def test_the_second_update_computes_with_the_weights_the_first_one_made(tmp_path, tokenizer):
    # autocast keeps a bf16 copy of every float32 weight it casts until its outermost block exits; one
    # block around all μ updates made update 2 compute with update 1's weights (on the packaged model,
    # μ 2 at lr 1e-3: ratio_mean 1.09 under autocast, 32.9 without). Here each update's log-probs are
    # recorded with the weights each optimizer step started from, and recomputed in float32 from both.
    import copy

    from grpo.logprobs import token_logprobs

    cfg = config(tmp_path, steps=1, mu=2, lr=1e-2, beta=0.0, autocast=True, micro_batch_size=8)
    trainer = make_trainer(cfg, tokenizer, make_model)
    calls, weights = [], []
    forward = trainer.policy_logprobs.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls.append((args, kwargs, out.detach().float()))
        return out

    trainer.policy_logprobs.forward = recording
    trainer.optimizer.register_step_pre_hook(
        lambda *_: weights.append(copy.deepcopy(trainer.policy.state_dict()))
    )
    trainer.step()
    assert len(calls) == 2 and len(weights) == 2  # one micro-batch, two updates

    def fp32_logprobs(state, call):
        model = make_model(tokenizer)
        model.load_state_dict(state)
        (ids, mask, start, temperature), kwargs, _ = call
        with torch.no_grad():
            return token_logprobs(model, ids, mask, start, temperature=temperature, **kwargs)

    mask = calls[1][0][1][:, calls[1][0][2] :].bool()  # the completion tokens
    update_2 = calls[1][2][mask]
    after_update_1 = fp32_logprobs(weights[1], calls[1])[mask]
    before_it = fp32_logprobs(weights[0], calls[1])[mask]
    moved = float((after_update_1 - before_it).abs().mean())
    assert moved > 0.05  # lr 1e-2: update 1 changed the policy a lot
    # update 2 computed with update 1's result, up to bf16 rounding, a fraction of how far it moved
    assert float((update_2 - after_update_1).abs().mean()) < 0.25 * moved


def test_a_model_on_another_kind_of_device_runs_without_autocast(tmp_path, tokenizer):
    cfg = config(tmp_path, steps=1, beta=0.0, autocast=True)
    trainer = make_trainer(cfg, tokenizer, make_model)
    assert trainer.mixed_precision
    with trainer.autocast(trainer.policy):
        assert torch.is_autocast_enabled("cpu")
    # a reference kept elsewhere (--reference-device) is not run in the policy device's autocast
    elsewhere = torch.nn.Linear(2, 2, device="meta")
    with torch.autocast("cpu", dtype=torch.bfloat16), trainer.autocast(elsewhere):
        assert torch.is_autocast_enabled("cpu")  # untouched: that block is the caller's, not the trainer's
    with trainer.autocast(elsewhere):
        assert not torch.is_autocast_enabled("cpu")


def test_the_gold_answer_is_scored_in_float32_inside_an_autocast_block(tokenizer):
    from grpo.rewards import gold_answer_logprobs

    model = make_model(tokenizer)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    prompts = [encode("<|user|>make 24<|assistant|><think>"), encode("<|user|>make 10<|assistant|><think>")]
    reasonings = [encode("try 4*6 </think>"), encode("2*5 </think>")]
    options = dict(micro_batch_size=2, with_empty_reasoning=True)
    plain = gold_answer_logprobs(model, tokenizer, prompts, reasonings, ["4*6", "2*5"], **options)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = gold_answer_logprobs(model, tokenizer, prompts, reasonings, ["4*6", "2*5"], **options)
        # (what bf16 would have given: the same pass with autocast left on differs)
        from grpo.rewards import _score_rows

        bf16 = _score_rows(model, prompts, [r + encode("\n<answer>4*6</answer>") for r in reasonings[:1]] * 2,
                           [3, 3], len(encode("</answer>")), tokenizer.pad_token_id, 1)  # fmt: skip
    assert torch.equal(inside.logp_sum, plain.logp_sum)
    assert torch.equal(inside.empty_logp_sum, plain.empty_logp_sum)
    assert inside.logp_sum.dtype == torch.float32
    assert not torch.equal(bf16[0], plain.logp_sum[0])
