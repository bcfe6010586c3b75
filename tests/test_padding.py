"""Left padding: the query rows of pad positions attend to nothing. Real rows must not notice.

Prompts (and the logprob reward's scored rows) are left-padded, so a padded row's first positions are
queries whose every key is masked. Some attention kernels return NaN for such a row; a NaN there becomes a
NaN value vector at that position in the next layer, and 0 · NaN = NaN in every real query that masks it
out. transformers 5 dropped its workaround for these rows, so eager and SDPA attention are
checked on them; on a GPU, `python -m tools.gpu_check` checks the same. A non-finite logit that still
reaches a real row stops the rollout with an error that says so (it would otherwise be sampled as the
last id of the vocabulary, silently).
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_qwen3_model

from grpo.rollout import NonFiniteLogits, rollout

# flex attention is left out: on this CPU (torch 2.13, transformers 5.24) it gave logits 0.07–0.11 away from
# eager's even on unpadded rows, varying from call to call, and once NaN in a real row of a left-padded batch; the
# project never selects it (transformers' default is sdpa), and tools/gpu_check.py checks it on a GPU
IMPLEMENTATIONS = ["eager", "sdpa"]


@pytest.mark.parametrize("attention", IMPLEMENTATIONS)
@pytest.mark.parametrize("autocast", [False, True])
def test_a_left_padded_row_equals_the_row_alone(qwen_like_tokenizer, attention, autocast):
    model = make_qwen3_model(qwen_like_tokenizer)
    model.set_attn_implementation(attention)
    ids = torch.randint(10, 90, (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # row 1: five pad positions, whose queries attend to no key at all
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        batch = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
        alone = model(input_ids=ids[1:, 5:], position_ids=positions[1:, 5:]).logits.float()
    assert torch.isfinite(batch[:, -3:]).all() and torch.isfinite(batch[0]).all()
    # float32 or bf16 rounding of a different batch shape, nothing more
    tolerance = 2e-2 if autocast else 1e-4
    assert float((batch[1, 5:] - alone[0]).abs().max()) <= tolerance * float(alone.abs().max())


def test_a_non_finite_logit_stops_the_rollout_with_a_clear_error(qwen_like_tokenizer):
    model = make_qwen3_model(qwen_like_tokenizer)
    with torch.no_grad():
        model.lm_head.weight[7, 0] = float("nan")  # (tied to the embedding) one broken vocabulary row
    prompt = qwen_like_tokenizer.encode("<|user|>hi<|assistant|><think>", add_special_tokens=False)
    with pytest.raises(NonFiniteLogits, match=r"NaN or infinite in 2 row\(s\).*at new token 0.*gpu_check"):
        rollout(model, qwen_like_tokenizer, [prompt], group_size=2, max_new_tokens=4)
