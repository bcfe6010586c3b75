"""Tiny, offline fixtures: a character-level tokenizer with a chat template, and random tiny models.

The tokenizer splits text into characters, except for a few merges that mimic SmolLM2's pieces:
`</` and `><` are single tokens, so `</think>` is several tokens and can share its last token with the
next tag (`</` `t` `h` `i` `n` `k` `><` ...). With `special_think=True`, `<think>` and `</think>` are
single added tokens, as in Qwen3.
"""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(special_think: bool = False) -> PreTrainedTokenizerFast:
    specials = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
    chars = list(dict.fromkeys(string.printable))
    merges = [("<", "/"), (">", "<")]
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["</", "><"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", additional_special_tokens=specials[2:]
    )
    if special_think:
        tokenizer.add_tokens(["<think>", "</think>"])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    # larger logits than the default init, so that sampling is far from uniform and tests can tell
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model.eval()


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def qwen_like_tokenizer():
    return make_tokenizer(special_think=True)


@pytest.fixture
def tiny_model(tokenizer):
    return make_model(tokenizer)
