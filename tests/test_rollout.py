"""The sampler against a teacher-forced forward pass, against model.generate, and its stop rules."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_close_relative, make_float64_model

from grpo.logprobs import left_pad, token_logprobs
from grpo.rollout import PREVIOUS_SAMPLER, Ends, nucleus, rollout, sample_tokens

# The tiny model computes in float64 and the teacher-forced log-probs stay float64, but the sampler
# takes its log-softmax in float32 (grpo/rollout.py, sample_tokens: `logits = logits.float()`, and the
# float32 `sample_logp`). So sampled and teacher-forced log-probs are compared relative to their norm:
# they differ by ≤ 1.2e-7 of it (float32 rounding; measured on AVX2 and ATEN_CPU_CAPABILITY=default),
# while a real bug (a wrong position, temperature or cache row) is off by 1e-2 or more.
REL = 1e-5


@pytest.fixture
def tiny_model(tokenizer):
    return make_float64_model(tokenizer)


def encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_rollout_samples_every_step_at_its_temperature_and_top_p(tokenizer, tiny_model, monkeypatch):
    # the log-prob test below holds whatever T the sampler drew at (both sides use the same T), so the
    # settings' way from rollout's arguments to the sampler is checked here, on every decode step
    seen = []

    def spy(logits, temperature, top_p, **kwargs):
        seen.append((temperature, top_p))
        return sample_tokens(logits, temperature, top_p, **kwargs)

    monkeypatch.setattr("grpo.rollout.sample_tokens", spy)
    out = rollout(
        tiny_model,
        tokenizer,
        [encode(tokenizer, "hi")],
        group_size=2,
        max_new_tokens=4,
        temperature=0.7,
        top_p=0.9,
        stop_token_ids=[],
        generator=torch.Generator().manual_seed(0),
    )
    assert out.completion_ids.shape == (2, 4) and seen == [(0.7, 0.9)] * 4


def test_left_pad_right_aligns_rows():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampling_logprobs_equal_a_teacher_forced_forward_pass(tokenizer, tiny_model, temperature, top_p):
    # two prompts of different lengths, so left padding and position ids are exercised
    prompts = [encode(tokenizer, "<|user|>count to five\n<|assistant|>"), encode(tokenizer, "hi")]
    out = rollout(
        tiny_model,
        tokenizer,
        prompts,
        group_size=3,
        max_new_tokens=12,
        temperature=temperature,
        top_p=top_p,
        stop_token_ids=[tokenizer.eos_token_id],
        generator=torch.Generator().manual_seed(0),
    )
    # G contiguous copies of each prompt: rows 0-2 answer the first, 3-5 the second
    assert out.completion_ids.shape[0] == 6
    prompt_ids = out.input_ids[:, : out.prompt_length]  # (N, P)
    assert all(torch.equal(prompt_ids[i], prompt_ids[0]) for i in (1, 2))
    assert all(torch.equal(prompt_ids[i], prompt_ids[3]) for i in (4, 5))
    assert not torch.equal(prompt_ids[0], prompt_ids[3])
    with torch.no_grad():
        forced = token_logprobs(
            tiny_model, out.input_ids, out.attention_mask, out.prompt_length, temperature=temperature
        )
    mask = out.completion_mask.bool()
    assert mask.sum() > 6
    assert_close_relative(out.sample_logp[mask], forced[mask], REL, "sampled vs teacher-forced")
    assert (out.sample_logp[~mask] == 0).all()


def test_greedy_decoding_equals_model_generate(tokenizer, tiny_model):
    prompts = [encode(tokenizer, "<|user|>abc\n<|assistant|>"), encode(tokenizer, "xyz")]
    out = rollout(
        tiny_model,
        tokenizer,
        prompts,
        group_size=1,
        max_new_tokens=10,
        temperature=0.0,
        stop_token_ids=[tokenizer.eos_token_id],
    )
    ids, mask = left_pad(prompts, tokenizer.pad_token_id, "cpu")
    reference = tiny_model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=10,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )[:, ids.shape[1] :]
    for row in range(2):
        # the same tokens, and the same end: generate pads after its stop token (or reaches 10 tokens)
        n = int(out.completion_mask[row].sum())
        assert n > 0 and out.completion_ids[row, :n].tolist() == reference[row, :n].tolist()
        rest = reference[row, n:].tolist()
        assert n == 10 or (
            reference[row, n - 1] == tokenizer.eos_token_id and set(rest) <= {tokenizer.pad_token_id}
        )


def test_same_generator_seed_gives_the_same_samples(tokenizer, tiny_model):
    prompts = [encode(tokenizer, "hello")]
    kwargs = dict(group_size=4, max_new_tokens=8, stop_token_ids=[tokenizer.eos_token_id])
    a = rollout(tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(3), **kwargs)
    b = rollout(tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(3), **kwargs)
    c = rollout(tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_the_rollout_builds_no_autograd_graph(tokenizer, tiny_model):
    # the policy's weights require gradients (as in training) and grad mode is on: a rollout that recorded
    # the graph would keep every decode step's activations and (rows, vocab) logits alive through
    # sample_logp until it returned (11.5 GB against 2.0 GB for the packaged model at batch 64 × 96 tokens)
    assert all(p.requires_grad for p in tiny_model.parameters()) and torch.is_grad_enabled()
    prompts = [encode(tokenizer, "hello"), encode(tokenizer, "a longer prompt")]
    generator = torch.Generator().manual_seed(0)
    out = rollout(tiny_model, tokenizer, prompts, group_size=2, max_new_tokens=6, generator=generator)
    for tensor in (out.input_ids, out.attention_mask, out.sample_logp):
        assert not tensor.requires_grad and tensor.grad_fn is None
    assert out.sample_logp.ne(0).any()  # it did sample and record log-probs


def test_top_p_keeps_only_the_nucleus():
    # probabilities 0.5, 0.3, 0.2: top_p 0.7 keeps the first two, never the third
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(2000, 1)
    tokens, logp = sample_tokens(logits, 1.0, 0.7, torch.Generator().manual_seed(0))
    assert set(tokens.tolist()) == {0, 1}
    # the recorded log-prob is the policy's, before truncation: log 0.5 or log 0.3
    assert torch.allclose(logp, torch.log(torch.tensor([0.5, 0.3]))[tokens], atol=1e-6)
    share = (tokens == 0).float().mean()
    assert abs(share - 0.5 / 0.8) < 0.05  # renormalised over the nucleus: 0.625


class RowTracker:
    """What ScriptedLM keeps as its "cache": which script each batch row follows, through rows leaving."""

    def __init__(self, n_rows):
        self.rows = list(range(n_rows))

    def batch_repeat_interleave(self, repeats):
        self.rows = [r for r in self.rows for _ in range(repeats)]

    def batch_select_indices(self, indices):
        self.rows = [self.rows[i] for i in indices.tolist()]


class ScriptedLM(torch.nn.Module):
    """A stand-in model that writes a fixed script per row: row r's k-th new token is scripts[r][k]."""

    def __init__(self, vocab_size, scripts, prompt_lengths):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size, self.scripts, self.prompt_lengths = vocab_size, scripts, prompt_lengths

    def get_decoder(self):  # (where the sampler reads the cache's keyword: its forward takes it in **kwargs)
        return self

    def forward(self, input_ids, attention_mask, position_ids, use_cache=True, logits_to_keep=0, **kwargs):
        tracker = kwargs.get("past_key_values") or RowTracker(input_ids.shape[0])
        logits = torch.full((input_ids.shape[0], 1, self.vocab_size), -30.0)
        for i, position in enumerate(position_ids[:, -1].tolist()):
            row = tracker.rows[i]
            k = position + 1 - self.prompt_lengths[row]  # index of the token to write next
            script = self.scripts[row]
            logits[i, 0, script[min(k, len(script) - 1)]] = 30.0
        return {"logits": logits, "past_key_values": tracker}


def scripted_rollout(tokenizer, texts, one_think=True, max_new_tokens=40, eos_after=False):
    prompt = encode(tokenizer, "q")
    scripts = [
        encode(tokenizer, t)
        + ([tokenizer.eos_token_id] if eos_after else [])
        + [encode(tokenizer, "z")[0]] * 50
        for t in texts
    ]
    model = ScriptedLM(len(tokenizer), scripts, [len(prompt)] * len(texts))
    # one prompt per row (group_size 1), so each row follows its own script
    return rollout(
        model,
        tokenizer,
        [prompt] * len(texts),
        group_size=1,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        stop_token_ids=[tokenizer.eos_token_id],
        one_think=one_think,
    )


def test_stop_string_spanning_several_tokens_ends_the_row(tokenizer):
    # "</answer>" is "</" + "a" "n" "s" "w" "e" "r" + ">": 8 tokens; the row stops right after ">"
    out = scripted_rollout(tokenizer, ["r</think><answer>7</answer>tail"])
    assert out.texts[0] == "r</think><answer>7</answer>"
    assert out.finish_reasons == ["stop"]
    assert int(out.completion_mask.sum()) == len(encode(tokenizer, "r</think><answer>7</answer>"))


def test_rows_stop_independently_and_padding_is_masked(tokenizer):
    out = scripted_rollout(
        tokenizer, ["a</think><answer>1</answer>", "longer text here</think><answer>22</answer>"]
    )
    lengths = out.completion_mask.sum(1).tolist()
    assert lengths == [
        len(encode(tokenizer, t))
        for t in ["a</think><answer>1</answer>", "longer text here</think><answer>22</answer>"]
    ]
    assert (out.completion_ids[0, lengths[0] :] == tokenizer.pad_token_id).all()


def test_end_of_turn_token_stops_and_is_kept_in_the_mask_but_not_the_text(tokenizer):
    out = scripted_rollout(tokenizer, ["done"], eos_after=True)
    assert out.finish_reasons == ["eos"]
    assert out.texts == ["done"]
    assert int(out.completion_mask.sum()) == 5  # d o n e <eos>


def test_max_new_tokens_cuts_a_row(tokenizer):
    out = scripted_rollout(tokenizer, ["abcdefghij"], max_new_tokens=4)
    assert out.finish_reasons == ["length"] and out.texts == ["abcd"]


def test_second_think_block_is_stopped_there(tokenizer):
    out = scripted_rollout(tokenizer, ["a</think>\n<think>b</think><answer>1</answer>"])
    assert out.finish_reasons == ["second_think"]
    assert out.texts[0] == "a</think>\n<think>"
    free = scripted_rollout(tokenizer, ["a</think>\n<think>b</think><answer>1</answer>"], one_think=False)
    assert free.finish_reasons == ["stop"]


def test_stop_strings_and_a_second_think_are_found_when_tags_come_in_one_piece(tokenizer):
    watcher = Ends(tokenizer, 1, 8, [], ["</answer>"], one_think=True)
    assert watcher.update(0, "<think>") is None  # an opening before any close is not a second block
    assert watcher.update(0, "x") is None
    assert watcher.update(0, "</think>") is None
    assert watcher.update(0, "<answer>1</ans") is None
    assert watcher.update(0, "wer>") == "stop"
    closed_and_reopened_in_one_piece = Ends(tokenizer, 1, 8, [], ["</answer>"], one_think=True)
    assert closed_and_reopened_in_one_piece.update(0, "a</think><think>") == "second_think"


def test_rows_leaving_the_batch_early_do_not_disturb_the_others(tokenizer, tiny_model):
    # many stop ids, so rows finish at different steps and the cache is cut down several times
    stop_ids = [i for i in range(5, 60)]
    prompts = [encode(tokenizer, "<|user|>a b c\n<|assistant|>"), encode(tokenizer, "zz")]
    out = rollout(
        tiny_model,
        tokenizer,
        prompts,
        group_size=4,
        max_new_tokens=20,
        temperature=1.0,
        stop_token_ids=stop_ids,
        generator=torch.Generator().manual_seed(1),
    )
    lengths = out.completion_mask.sum(1)
    assert len(set(lengths.tolist())) > 2  # rows really did stop at different times
    with torch.no_grad():
        forced = token_logprobs(tiny_model, out.input_ids, out.attention_mask, out.prompt_length)
    mask = out.completion_mask.bool()
    assert_close_relative(out.sample_logp[mask], forced[mask], REL, "sampled vs teacher-forced")


def test_inverse_cdf_sampling_matches_the_distribution_and_skips_zero_probability_tokens():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.0, 0.3])
    logits = torch.log(probs).repeat(20000, 1)  # −inf where the probability is 0
    tokens, _ = sample_tokens(logits, 1.0, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=5).float() / tokens.numel()
    assert counts[1] == 0 and counts[3] == 0
    torch.testing.assert_close(counts, probs, atol=0.01, rtol=0)
    # at T = 0.5 the draws follow softmax(log p / 0.5) = p² / Σ p² = (0.01, 0, 0.36, 0, 0.09) / 0.46,
    # and the recorded log-prob is that distribution's
    tokens, logp = sample_tokens(logits, 0.5, 1.0, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=5).float() / tokens.numel()
    sharpened = probs**2 / (probs**2).sum()
    torch.testing.assert_close(counts, sharpened, atol=0.01, rtol=0)
    torch.testing.assert_close(logp[tokens == 2], torch.full_like(logp[tokens == 2], math.log(0.36 / 0.46)))


def test_nucleus_wider_than_the_candidates_falls_back_to_a_full_sort():
    probs = torch.full((1, 3000), 1 / 3000)  # flat: the 0.9-nucleus needs 2,700 tokens
    kept = nucleus(probs, 0.9, candidates=1024)
    assert int((kept > 0).sum()) == 2700


# ---------------------------------------------------------------- the static decode step

PREVIOUS = PREVIOUS_SAMPLER  # the sampler the static one replaced, as the same function's settings


def test_the_decode_step_is_static_on_a_preallocated_sdpa_or_eager_model(tokenizer, tiny_model):
    from grpo.decode import DecodeStep, cache_argument, make_rollout_cache

    for attention in ("sdpa", "eager"):
        tiny_model.config._attn_implementation = attention
        cache = make_rollout_cache(tiny_model, rows=2, capacity=9)
        tiny_model(
            input_ids=torch.tensor([[5, 6], [7, 8]]), use_cache=True, **{cache_argument(tiny_model): cache}
        )
        step = DecodeStep(tiny_model, cache, torch.tensor([[1, 1], [0, 1]]), max_new_tokens=7, compile=False)
        assert step.static and step.mask.shape == (2, 1, 1, 9)
        # the prompt's padding stays closed, the 7 columns to come are closed until their step opens them
        opened = step.mask.bool() if attention == "sdpa" else step.mask == 0
        assert opened[:, 0, 0].tolist() == [[True, True] + [False] * 7, [False, True] + [False] * 7]
    assert not DecodeStep(tiny_model, None, torch.ones(2, 2), 7, compile=False).static


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_static_and_growing_decoding_sample_the_same_tokens(tokenizer, tiny_model, attention):
    # many stop ids, so rows finish at different steps and leave the batch (and the cache) at least once
    tiny_model.config._attn_implementation = attention
    prompts = [encode(tokenizer, "<|user|>a b c\n<|assistant|>"), encode(tokenizer, "zz")]
    if attention == "eager":  # float64 eager attention turns left padding's fully masked rows into NaN
        prompts = [encode(tokenizer, "<|user|>a b c"), encode(tokenizer, "<|user|>x y z")]

    def run(**kwargs):
        return rollout(tiny_model, tokenizer, prompts, group_size=4, max_new_tokens=20, temperature=1.0,
                       stop_token_ids=list(range(5, 25)), generator=torch.Generator().manual_seed(1), **kwargs)  # fmt: skip

    static, growing = run(), run(static=False)
    assert len(set(static.completion_mask.sum(1).tolist())) > 2
    assert torch.equal(static.completion_ids, growing.completion_ids)
    assert static.finish_reasons == growing.finish_reasons
    assert_close_relative(static.sample_logp, growing.sample_logp, REL, "static vs growing")


def test_greedy_completions_equal_the_previous_samplers(tokenizer, tiny_model):
    # greedy draws no random numbers, so how rows leave the batch cannot change what they write
    texts = ("<|user|>abc\n<|assistant|>", "xyz", "a b", "q", "hello there", "<|user|>7+8")
    prompts = [encode(tokenizer, t) for t in texts]
    # stop ids the tiny model writes 2, 5 and 7 tokens in, or never (read off its greedy completions)
    kwargs = dict(group_size=2, max_new_tokens=16, temperature=0.0, stop_token_ids=[87, 14, 103])
    ours, previous = rollout(tiny_model, tokenizer, prompts, **kwargs), rollout(tiny_model, tokenizer, prompts, **kwargs, **PREVIOUS)  # fmt: skip
    assert len(set(ours.completion_mask.sum(1).tolist())) > 2
    assert torch.equal(ours.completion_ids, previous.completion_ids)
    assert torch.equal(ours.completion_mask, previous.completion_mask)
    assert ours.finish_reasons == previous.finish_reasons and ours.texts == previous.texts


def test_sampled_completions_equal_the_previous_samplers(tokenizer, tiny_model):
    # each row draws its own uniform number each step, so neither when the host reads the tokens nor when
    # finished rows leave the batch changes what any row samples (float64: the two caches' logits agree)
    prompts = [encode(tokenizer, t) for t in ("<|user|>a b c\n<|assistant|>", "zz", "hello there")]
    kwargs = dict(group_size=4, max_new_tokens=20, temperature=1.0, stop_token_ids=list(range(5, 25)))
    ours = rollout(tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(7), **kwargs)
    previous = rollout(
        tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(7), **kwargs, **PREVIOUS
    )
    assert len(set(ours.completion_mask.sum(1).tolist())) > 3  # rows left at many different steps
    assert torch.equal(ours.completion_ids, previous.completion_ids)
    assert ours.finish_reasons == previous.finish_reasons
    assert_close_relative(ours.sample_logp, previous.sample_logp, REL, "static vs previous")


SCRIPTS = [
    "r</think><answer>7</answer>tail",  # stop: a stop string over 8 tokens
    "a</think>\n<think>b</think><answer>1</answer>",  # second_think
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",  # length
    "x</think><answer>12345</answer>",
]


@pytest.mark.parametrize("check_every", [1, 3, 8, 100])
def test_stop_reasons_do_not_depend_on_how_often_the_host_reads(tokenizer, check_every):
    # one row per script, one ending in an end-of-turn token; every row is cut exactly where it stopped
    # however many tokens it sampled past its stop before the host read them
    prompt = encode(tokenizer, "q")
    texts = [*SCRIPTS, "done"]
    scripts = [encode(tokenizer, t) + [encode(tokenizer, "z")[0]] * 60 for t in texts]
    scripts[-1] = encode(tokenizer, "done") + [tokenizer.eos_token_id] + [encode(tokenizer, "z")[0]] * 60
    model = ScriptedLM(len(tokenizer), scripts, [len(prompt)] * len(texts))
    out = rollout(model, tokenizer, [prompt] * len(texts), group_size=1, max_new_tokens=40, temperature=0.0,
                  stop_token_ids=[tokenizer.eos_token_id], check_every=check_every)  # fmt: skip
    assert out.finish_reasons == ["stop", "second_think", "length", "stop", "eos"]
    assert out.texts == [
        "r</think><answer>7</answer>",
        "a</think>\n<think>",
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmn",
        "x</think><answer>12345</answer>",
        "done",
    ]
    lengths = out.completion_mask.sum(1).tolist()
    assert lengths == [len(encode(tokenizer, t)) for t in out.texts[:4]] + [5]
    for row, n in enumerate(lengths):  # padding after the stop, and no log-prob there
        assert (out.completion_ids[row, n:] == tokenizer.pad_token_id).all()
        assert (out.sample_logp[row, n:] == 0).all()


def test_each_prompt_is_prefilled_once_for_its_group(tokenizer, tiny_model):
    rows_seen = []
    hook = tiny_model.model.register_forward_pre_hook(
        lambda module, args, kwargs: rows_seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        rollout(tiny_model, tokenizer, [encode(tokenizer, "abc"), encode(tokenizer, "de")], group_size=3,
                max_new_tokens=4, stop_token_ids=[])  # fmt: skip
    finally:
        hook.remove()
    prompt_width = len(encode(tokenizer, "abc"))
    # one forward of the 2 prompts, then one of the 6 rows per new token after the first
    assert rows_seen == [(2, prompt_width)] + [(6, 1)] * 3


def test_a_failing_compiler_falls_back_to_eager_decoding_with_a_warning(tokenizer, tiny_model, monkeypatch):
    import grpo.decode

    def broken_compiler(device):
        def compiled(*args):
            raise RuntimeError("inductor: no C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(grpo.decode, "compiled_decode_forward", broken_compiler)
    prompts = [encode(tokenizer, "abc")]
    kwargs = dict(group_size=2, max_new_tokens=6, temperature=0.0, stop_token_ids=[])
    with pytest.warns(
        UserWarning, match="torch.compile of the decode step failed .RuntimeError: inductor: no C"
    ):
        compiled = rollout(tiny_model, tokenizer, prompts, compile=True, **kwargs)
    eager = rollout(tiny_model, tokenizer, prompts, **kwargs)
    assert torch.equal(compiled.completion_ids, eager.completion_ids)


@pytest.mark.slow
def test_the_compiled_decode_step_samples_what_the_eager_one_does(tokenizer):
    # torch.compile on a CPU (inductor, C++): the same greedy completions and the same log-probs; a second
    # rollout of another prompt length reuses the compiled step (the capacity is bucketed)
    model = make_float64_model(tokenizer)
    prompts = [encode(tokenizer, "<|user|>abc\n<|assistant|>"), encode(tokenizer, "xyz")]
    kwargs = dict(group_size=2, max_new_tokens=10, temperature=0.0, stop_token_ids=[tokenizer.eos_token_id])
    compiled = rollout(model, tokenizer, prompts, compile=True, **kwargs)
    eager = rollout(model, tokenizer, prompts, **kwargs)
    assert torch.equal(compiled.completion_ids, eager.completion_ids)
    assert_close_relative(compiled.sample_logp, eager.sample_logp, REL, "compiled vs eager")
    again = rollout(model, tokenizer, prompts[:1], compile=True, **kwargs)
    assert torch.equal(again.completion_ids, eager.completion_ids[:2, : again.completion_ids.shape[1]])


def test_a_compiled_rollout_reuses_its_cache_and_samples_what_a_fresh_one_does(
    tokenizer, tiny_model, monkeypatch
):
    # the compiled step's cache keeps its memory from one rollout to the next (a CUDA graph replays on it);
    # here the "compiler" hands back the eager step, so only the reuse is under test
    import grpo.decode

    monkeypatch.setattr(grpo.decode, "compiled_decode_forward", lambda device: grpo.decode.decode_forward)
    monkeypatch.setattr(grpo.decode, "_REUSED", {})
    prompts = [encode(tokenizer, "<|user|>a b c\n<|assistant|>"), encode(tokenizer, "zz")]
    kwargs = dict(group_size=3, max_new_tokens=12, stop_token_ids=list(range(5, 25)))
    fresh = rollout(tiny_model, tokenizer, prompts, generator=torch.Generator().manual_seed(2), **kwargs)
    first = rollout(
        tiny_model, tokenizer, prompts, compile=True, generator=torch.Generator().manual_seed(2), **kwargs
    )
    cache = grpo.decode._REUSED["cache"]
    address = cache.layers[0].key_buffer.data_ptr()
    other = rollout(
        tiny_model,
        tokenizer,
        prompts[::-1],
        compile=True,
        generator=torch.Generator().manual_seed(5),
        **kwargs,
    )
    again = rollout(
        tiny_model, tokenizer, prompts, compile=True, generator=torch.Generator().manual_seed(2), **kwargs
    )
    assert grpo.decode._REUSED["cache"] is cache and cache.layers[0].key_buffer.data_ptr() == address
    for out in (first, again):  # the last rollout's keys in the buffers change nothing
        assert (
            torch.equal(out.completion_ids, fresh.completion_ids)
            and out.finish_reasons == fresh.finish_reasons
        )
    assert not torch.equal(other.completion_ids, fresh.completion_ids)
    rollout(tiny_model, tokenizer, prompts[:1], compile=True, **kwargs)  # another shape: another cache
    assert grpo.decode._REUSED["cache"] is not cache
