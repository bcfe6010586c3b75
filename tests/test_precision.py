"""Precision that trains: float32 master weights under bf16 autocast, and why pure bf16 is not the default.

At the poster's learning rate (5e-7) an AdamW step moves each weight by about lr. bf16 keeps 8 significant
bits, so a weight of 0.02 has neighbours 2^-13 ≈ 1.2e-4 away and a step of 5e-7 rounds back to the same
number. These tests run on a CPU with the settings a GPU gets by default.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model
from test_trainer import EchoTask, config, make_trainer

from grpo.models import lost_update_fraction, training_precision
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
    with pytest.raises(ValueError, match="unknown dtype"):
        training_precision("float8", None, CUDA)


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
