import pytest
import torch
from conftest import assert_close_relative, make_float64_model, make_qwen3_model
from transformers import LlamaConfig
from transformers.cache_utils import DynamicLayer

from grpo.decode import PreallocatedCache, PreallocatedLayer, make_rollout_cache
from grpo.rollout import rollout


def kv(rows, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 3, generator=g), torch.randn(rows, 2, length, 3, generator=g)


def test_updates_write_in_place_and_return_what_concatenation_returns():
    ours, theirs = PreallocatedLayer(rows=4, capacity=10), DynamicLayer()
    for step, length in enumerate([5, 1, 1, 1]):  # a prefill, then three decode steps
        k, v = kv(4, length, seed=step)
        keys, values = ours.update(k, v)
        expected_keys, expected_values = theirs.update(k, v)
        assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    assert ours.get_seq_length() == 8
    # the returned keys are a view of the one buffer: nothing was reallocated
    assert keys.untyped_storage().data_ptr() == ours.key_buffer.untyped_storage().data_ptr()


def test_repeat_then_select_rows_equals_the_dynamic_cache():
    ours, theirs = PreallocatedLayer(rows=6, capacity=8), DynamicLayer()
    k, v = kv(2, 4, seed=0)  # two prompts prefilled once
    for layer in (ours, theirs):
        layer.update(k, v)
        layer.batch_repeat_interleave(3)  # three samples each: rows 0,0,0,1,1,1
    assert torch.equal(ours.keys, theirs.keys) and ours.keys.shape[0] == 6
    k, v = kv(6, 1, seed=1)
    for layer in (ours, theirs):
        layer.update(k, v)
        layer.batch_select_indices(torch.tensor([1, 4, 5]))  # rows 0, 2 and 3 finished
    assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    k, v = kv(3, 1, seed=2)
    assert torch.equal(ours.update(k, v)[0], theirs.update(k, v)[0])
    assert ours.keys.shape == (3, 2, 6, 3)


def test_asking_for_more_than_was_allocated_is_an_error():
    layer = PreallocatedLayer(rows=2, capacity=3)
    layer.update(*kv(2, 3, seed=0))
    with pytest.raises(ValueError, match="holds 3 positions"):
        layer.update(*kv(2, 1, seed=1))
    with pytest.raises(ValueError, match="holds 2 rows"):
        layer.batch_repeat_interleave(2)
    with pytest.raises(ValueError, match="1 rows given"):
        layer.update(*kv(1, 0, seed=2))


def test_sliding_window_models_keep_their_own_cache():
    full, sliding, windowed = (LlamaConfig(num_hidden_layers=2) for _ in range(3))
    sliding.layer_types = ["full_attention", "sliding_attention"]
    windowed.use_sliding_window = True  # (a config of before layer_types)

    def cache_for(config):
        return make_rollout_cache(type("Model", (), {"config": config})(), rows=2, capacity=4)

    cache = cache_for(full)
    assert isinstance(cache, PreallocatedCache) and len(cache.layers) == 2 and cache.capacity == 4
    assert cache_for(sliding) is None and cache_for(windowed) is None


def test_rollout_samples_the_same_tokens_with_either_cache(tokenizer):
    tiny_model = make_float64_model(tokenizer)  # float64: the two caches' logits agree to ~1e-16
    prompts = [tokenizer.encode("<|user|>a b c\n<|assistant|>"), tokenizer.encode("zz")]
    stop_ids = list(range(5, 40))  # rows finish at different steps, so rows leave the cache several times

    def run(preallocate):
        return rollout(
            tiny_model,
            tokenizer,
            prompts,
            group_size=3,
            max_new_tokens=16,
            stop_token_ids=stop_ids,
            generator=torch.Generator().manual_seed(3),
            preallocate=preallocate,
        )

    ours, theirs = run(True), run(False)
    assert len(set(ours.completion_mask.sum(1).tolist())) > 2
    assert torch.equal(ours.completion_ids, theirs.completion_ids)
    # the sampler's log-softmax is float32 (grpo/rollout.py, sample_tokens), so the log-probs are compared
    # relative to their norm, with a wide margin over float32 rounding (measured: equal)
    assert_close_relative(ours.sample_logp, theirs.sample_logp, 1e-5, "sample_logp")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_qwen3_keys_are_cached_in_the_values_dtype_under_autocast(qwen_like_tokenizer, attention):
    # Qwen3's k_norm multiplies the bf16 keys by a float32 weight, so under autocast its keys come out
    # float32 and its values bf16; the cache holds both in bf16, and the next token's logits are those of
    # the whole sequence run at once (the attention computes in bf16 under autocast anyway), up to bf16's
    # rounding, which the two shapes' kernels may order differently on another CPU
    from grpo.decode import PreallocatedCache, cache_argument

    model = make_qwen3_model(qwen_like_tokenizer)
    model.config._attn_implementation = attention
    ids = torch.randint(10, 90, (2, 12), generator=torch.Generator().manual_seed(0))
    cache = PreallocatedCache(model.config.num_hidden_layers, rows=2, capacity=20)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids[:, :11], use_cache=True, **{cache_argument(model): cache})
        assert all(
            layer.key_buffer.dtype == layer.value_buffer.dtype == torch.bfloat16 for layer in cache.layers
        )
        step = model(input_ids=ids[:, 11:], use_cache=True, **{cache_argument(model): cache}).logits[:, -1]
        whole = model(input_ids=ids).logits[:, -1]
    assert_close_relative(step, whole, rel=1e-2, msg="the cached step against the whole sequence")


def test_static_decoding_writes_at_the_position_and_returns_the_whole_capacity():
    from grpo.decode import PreallocatedCache

    cache = PreallocatedCache(num_layers=1, rows=4, capacity=6)
    layer = cache.layers[0]
    k, v = kv(2, 3, seed=0)
    layer.update(k, v)  # a prefill of 2 prompts × 3 positions
    cache.batch_repeat_interleave(2)  # rows 0, 0, 1, 1
    position = cache.decode_at(3)
    address = layer.key_buffer.data_ptr()
    new_k, new_v = kv(4, 1, seed=1)
    keys, values = layer.update(new_k, new_v)
    assert keys.shape == (4, 2, 6, 3)  # every row, every column: the mask hides what is not written yet
    assert torch.equal(keys[:, :, :3], k.repeat_interleave(2, dim=0)) and torch.equal(keys[:, :, 3:4], new_k)
    assert torch.equal(values[:, :, 3:4], new_v) and (keys[:, :, 4:] == 0).all()  # zeros, never NaN
    position += 1  # the decoder advances it in place; every layer reads the same tensor
    later_k, _ = kv(4, 1, seed=2)
    assert torch.equal(layer.update(later_k, later_k)[0][:, :, 4:5], later_k)
    position += 1
    cache.select_rows(torch.tensor([1, 3]), columns=5)  # rows 0 and 2 finished
    keys, _ = layer.update(*kv(2, 1, seed=3))
    assert keys.shape == (2, 2, 6, 3)
    assert torch.equal(keys[:, :, :3], k) and torch.equal(keys[:, :, 4:5], later_k[[1, 3]])
    assert layer.key_buffer.data_ptr() == address  # the same memory throughout, as a CUDA graph needs


def test_decoding_from_a_cache_never_prefilled_is_an_error():
    from grpo.decode import PreallocatedCache

    with pytest.raises(ValueError, match="prefill the cache before decoding"):
        PreallocatedCache(num_layers=1, rows=2, capacity=4).decode_at(0)
