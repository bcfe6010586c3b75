"""Tiny, offline fixtures: a character-level tokenizer with a chat template, random tiny models, and a toy
task with the config and trainer of a tiny GRPO run on it.

The tokenizer splits text into characters, except for a few merges that mimic SmolLM2's pieces:
`</` and `><` are single tokens, so `</think>` is several tokens and can share its last token with the
next tag (`</` `t` `h` `i` `n` `k` `><` ...). With `special_think=True`, `<think>` and `</think>` are
single added tokens, as in Qwen3.

The plain helpers (`make_model`, `EchoTask`, `config`, `make_trainer`, ...) are imported by name,
`from conftest import ...`: tests/ has no __init__.py, so pytest puts it on sys.path and loads this file
as the module `conftest`, the one such an import then finds.
"""

from __future__ import annotations

import json
import os
import string
import types

import huggingface_hub.constants
import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from grpo.config import Config
from grpo.task import Example, Reward, Task
from grpo.trainer import Trainer

# The tests compute what a CPU without bf16 arithmetic computes, whatever this one has: `--autocast auto` is off
# (grpo.precision.cpu_bf16_pays), here and in the scripts the tests start (they inherit the environment)
os.environ["LOGPROB_GRPO_CPU_BF16"] = "off"
# No test reaches the Hugging Face hub: a name looked up there (a mistyped --model) fails at once, where online
# mode tries the network 5 times (about 45 s of backoff). The hub library read the variable when transformers
# imported it, above, so its flag is set too; the scripts the tests start read the variable
os.environ["HF_HUB_OFFLINE"] = "1"
huggingface_hub.constants.HF_HUB_OFFLINE = True

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


def make_qwen3_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32):
    """A tiny random Qwen3ForCausalLM: Qwen3's q_norm/k_norm and tied embeddings, at a test's size."""
    from tools.qwen3_tokenizer import tiny_qwen3

    return tiny_qwen3(tokenizer, layers=layers, hidden=hidden, seed=seed)


@pytest.fixture
def tokenizer():
    return make_tokenizer()


@pytest.fixture
def qwen_like_tokenizer():
    return make_tokenizer(special_think=True)


@pytest.fixture
def tiny_model(tokenizer):
    return make_model(tokenizer)


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer):
    """The tiny model and its tokenizer saved as a Hugging Face directory, for `--model DIR`."""
    path = tmp_path / "tiny"
    make_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _rms_norm_float64(self, hidden_states: torch.Tensor) -> torch.Tensor:
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _rotary_float64(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = position_ids[..., None].double() * self.inv_freq.double()  # (N, L, head_dim / 2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def make_float64_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 32) -> LlamaForCausalLM:
    """`make_model`'s model (the same weights), computing in float64 throughout.

    For tests that compare two ways of computing the same numbers: they then agree to float64 rounding
    (~1e-16 relative) whatever the CPU's summation order (AVX2, AVX-512, threads), so a tolerance of 1e-9
    relative holds on any CPU and is still far below what a bug produces. `.double()` alone is not
    enough: transformers' Llama computes its RMSNorm (`hidden_states.to(torch.float32)`) and the rotary
    embedding's cos/sin in float32 whatever the weights' dtype, which left gradients of the shared-prompt
    pass and the plain pass 4e-8 apart. Those modules get float64 forwards with the same formulas.
    """
    model = make_model(tokenizer, seed=seed, layers=layers, hidden=hidden).double()
    norms = [m for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    rotary = [m for m in model.modules() if type(m).__name__ == "LlamaRotaryEmbedding"]
    # a transformers version that renamed them would otherwise leave float32 steps in, silently
    assert len(norms) == 2 * layers + 1 and len(rotary) == 1, (
        "transformers' Llama changed: update this helper"
    )
    for norm in norms:
        norm.forward = types.MethodType(_rms_norm_float64, norm)
    rotary[0].forward = types.MethodType(_rotary_float64, rotary[0])
    return model


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, rel: float, msg: str = "") -> None:
    """‖actual − expected‖ ≤ rel · ‖expected‖, 2-norms over the whole tensor, taken in float64.

    A tolerance that scales with the tensor, not with one element's rounding: rounding errors spread
    over many elements and depend on the CPU, while a bug moves the whole difference's norm.
    """
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error, scale = float((actual - expected).norm()), float(expected.norm())
    assert error <= rel * scale, (
        f"{msg}: ‖actual − expected‖ = {error:.3g} > {rel:g} · ‖expected‖ = {rel * scale:.3g}"
    )


# ---------------------------------------------------------------- a toy task and a tiny GRPO run on it


class EchoTask(Task):
    """Answer with the letter the user names. Short prompts, so a tiny model can play."""

    name = "echo"

    def examples(self, split):
        letters = "abcdefgh" if split == "train" else "xyz"
        return [Example(id=f"{split}-{c}", gold=c, data={"letter": c}) for c in letters]

    def messages(self, example):
        return [{"role": "user", "content": f"say {example.gold}"}]

    def score(self, example, response):
        # a dense, made-up reward so that groups differ: the share of the letter in the response
        share = response.count(example.gold) / max(1, len(response))
        return Reward(total=share, parts={"share": share})


def config(tmp_path, **overrides) -> Config:
    """The config of a tiny EchoTask run into tmp_path/run: 2 steps of 2 prompts × G 4 = 8 completions of
    at most 12 tokens, micro-batches of 3 rows (so the last one is short), β 0.01."""
    base = dict(
        task="echo",
        steps=2,
        prompts_per_step=2,
        group_size=4,
        micro_batch_size=3,
        max_new_tokens=12,
        max_prompt_tokens=64,
        lr=1e-2,
        beta=0.01,
        seed=0,
        out_dir=str(tmp_path / "run"),
    )
    return Config(**{**base, **overrides})


def make_trainer(cfg: Config, tokenizer, model_factory=make_model) -> Trainer:
    """A Trainer on EchoTask whose policy and reference (when β > 0) are the same weights, `model_factory`'s
    model of seed 0: π_θ = π_ref until the first update."""
    policy = model_factory(tokenizer, seed=0)
    reference = model_factory(tokenizer, seed=0).requires_grad_(False) if cfg.beta > 0 else None
    return Trainer(cfg, policy, reference, tokenizer, EchoTask())


# ---------------------------------------------------------------- helpers of several test files

VOLATILE = ("time_", "rollout_tokens_per_s")  # wall-clock figures differ between any two runs


def stable(line: str) -> dict:
    """A metrics.jsonl line without its wall-clock figures: what two runs of the same seed must share."""
    return {k: v for k, v in json.loads(line).items() if not k.startswith(VOLATILE)}


def positions_run(model, fn):
    """Call fn(); return how many (row, position) pairs went through the decoder."""
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(lambda m, i, out: seen.append(i[0].numel()))
    try:
        result = fn()
    finally:
        handle.remove()
    return result, sum(seen)
