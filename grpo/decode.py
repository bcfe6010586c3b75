"""The rollout's decoding, with fixed shapes: a KV cache allocated once per rollout (`PreallocatedCache`), and
the forward pass of one decode step over it (`DecodeStep`), which `torch.compile` can capture (CUDA graphs on a
GPU); whether to compile it is `compile_decoding`'s. The sampling loop around them is grpo/rollout.py's.

The cache: each decode step writes one column, nothing is concatenated. transformers' DynamicCache grows by
`torch.cat([keys, new], dim=-2)` in every layer at every step, which copies the whole cache each time (15% of
a decode step at batch 32 on a CPU, measured by `python -m tools.bench`). Here each layer owns two buffers of
shape (rows, heads, capacity, head_dim), sized for the longest prompt plus `max_new_tokens`, and the attention
reads a view of the first `length` columns of the first `batch_size` rows:

    update(k, v):           buffer[:b, :, length : length + q] = k;   length += q
    batch_select_indices:   buffer[:b', :, :length] = buffer[rows, :, :length]   (rows that finished leave)
    batch_repeat_interleave(G): buffer[:b·G, :, :length] = repeat_interleave(buffer[:b, :, :length], G)

So the prompt is prefilled for `n_prompts` rows, copied into its G samples' rows, and finished rows are
compacted towards the top of the same buffers; nothing is allocated after the first forward.

Static decoding (`PreallocatedCache.decode_at`, what the rollout uses after its prefill): from then on
every shape is fixed, as a compiled step and a CUDA graph need (gpt-fast's static cache, transformers'
StaticCache). Each layer writes the new column where a position tensor on the device says and returns its
whole capacity; the attention mask, not a slice, hides the columns not written yet (zeros, so that a
masked column can never carry a NaN into the attention's weighted sum):

    update(k, v):           buffer[:b, :, position] = k;   return buffer[:b]      (b, heads, capacity, dim)
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from grpo.models import CausalLM


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values, in buffers of `rows` × `capacity` positions allocated on first use."""

    def __init__(self, rows: int, capacity: int) -> None:
        super().__init__()
        self.is_initialized = False  # (transformers < 4.57 does not set it)
        self.rows, self.capacity = rows, capacity
        self.batch_size = 0  # rows in use: the first batch_size rows of the buffers
        self.length = 0  # positions in use: the first `length` columns
        self.static = False  # static decoding: every update writes one column at `position`
        self.position: torch.Tensor | None = None  # (1,) the column the next static update writes

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        b, heads, _, key_dim = key_states.shape
        # keys in the values' dtype: under autocast Qwen3's k_norm multiplies bf16 keys by a float32 weight,
        # and a float32 key buffer beside bf16 values would be re-cast in every decode step; the attention
        # computes in bf16 under autocast either way, so the numbers are the same (tests/test_kv_cache.py)
        self.key_buffer = value_states.new_zeros((self.rows, heads, self.capacity, key_dim))
        self.value_buffer = value_states.new_zeros(
            (self.rows, value_states.shape[1], self.capacity, value_states.shape[-1])
        )
        self.batch_size = b
        self.is_initialized = True

    def _views(self) -> None:
        """What the attention reads: views of the rows and positions in use."""
        self.keys = self.key_buffer[: self.batch_size, :, : self.length]  # (b, heads, length, key_dim)
        self.values = self.value_buffer[: self.batch_size, :, : self.length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.static:  # one column at `position`, the whole capacity back
            assert self.position is not None  # decode_at sets it before it sets `static`
            keys, values = self.key_buffer[: self.batch_size], self.value_buffer[: self.batch_size]
            keys.index_copy_(2, self.position, key_states.to(keys.dtype))  # (b, heads, capacity, key_dim)
            values.index_copy_(2, self.position, value_states.to(values.dtype))
            return keys, values
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        elif self.length == 0:  # a reused cache's first write (after `reset`): its buffers stay
            if key_states.shape[0] > self.rows:
                raise ValueError(f"the cache holds {self.rows} rows; {key_states.shape[0]} were given")
            self.batch_size = key_states.shape[0]
        if key_states.shape[0] != self.batch_size:
            raise ValueError(f"{key_states.shape[0]} rows given to a cache holding {self.batch_size}")
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} positions; {end} were asked for")
        self.key_buffer[: self.batch_size, :, self.length : end] = key_states
        self.value_buffer[: self.batch_size, :, self.length : end] = value_states
        self.length = end
        self._views()
        assert self.keys is not None and self.values is not None  # _views just set them
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def batch_repeat_interleave(self, repeats: int) -> None:
        if not self.is_initialized:
            return
        b = self.batch_size * repeats
        if b > self.rows:
            raise ValueError(f"the cache holds {self.rows} rows; {b} were asked for")
        for buffer in (self.key_buffer, self.value_buffer):
            buffer[:b, :, : self.length] = buffer[: self.batch_size, :, : self.length].repeat_interleave(
                repeats, dim=0
            )
        self.batch_size = b
        self._views()

    def batch_select_indices(self, indices: torch.Tensor, columns: int | None = None) -> None:
        """Keep the rows `indices`, moved to the top; only the first `columns` positions (default: the
        positions written) are copied, in place, so a static decoder's buffers keep their addresses."""
        if not self.is_initialized:
            return
        indices = indices.to(self.device)
        columns = self.length if columns is None else columns
        for buffer in (self.key_buffer, self.value_buffer):
            # the right-hand side is gathered into a new tensor before the write, so rows may move up safely
            buffer[: len(indices), :, :columns] = buffer[: self.batch_size, :, :columns].index_select(
                0, indices
            )
        self.batch_size = len(indices)
        self._views()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a preallocated rollout cache is never cropped")

    def reset(self) -> None:
        """Empty, for another rollout: the buffers and the position tensor stay, at the same addresses."""
        self.length = 0
        self.batch_size = 0
        self.static = False
        self.keys = self.values = None


class PreallocatedCache(Cache):
    """`num_layers` PreallocatedLayers, for a model whose every layer attends to the whole past."""

    # Cache types its layers as a list of any kind of layer; these are PreallocatedLayers, and only they have the
    # buffers, the length and the position read below (a list is invariant, so narrowing it needs the ignore)
    layers: list[PreallocatedLayer]  # type: ignore[assignment]

    def __init__(self, num_layers: int, rows: int, capacity: int) -> None:
        super().__init__(layers=[PreallocatedLayer(rows, capacity) for _ in range(num_layers)])
        self.capacity = capacity  # positions per row
        self.position: torch.Tensor | None = None

    def decode_at(self, position: int, compiled: bool = False) -> torch.Tensor:
        """Switch to static decoding, the next column written being `position`; return the (1,) position
        tensor the layers share, which the decoder advances in place (`position += 1`) after each step.

        The buffers and the position keep their addresses from here on; `compiled` tells torch.compile so
        (`mark_static_address`), so that a CUDA graph captured over a decode step replays on that memory.
        """
        first = self.layers[0]
        if not first.is_initialized or first.length == 0:
            raise ValueError("prefill the cache before decoding from it")
        if self.position is None:
            self.position = torch.tensor([position], dtype=torch.long, device=first.device)
            if compiled:  # (importing torch._dynamo takes a second or two: only when compiling)
                for tensor in [self.position] + [
                    b for layer in self.layers for b in (layer.key_buffer, layer.value_buffer)
                ]:
                    torch._dynamo.mark_static_address(tensor)
        else:  # a reused cache: the same tensor, so that a captured graph still reads it
            self.position.fill_(position)
        for layer in self.layers:
            layer.position, layer.static = self.position, True
        return self.position

    def select_rows(self, indices: torch.Tensor, columns: int) -> None:
        """Keep the rows `indices` (finished rows leave), copying their first `columns` positions."""
        for layer in self.layers:
            layer.batch_select_indices(indices, columns)


def make_rollout_cache(model: CausalLM, rows: int, capacity: int, reuse: bool = False) -> Cache | None:
    """A PreallocatedCache for `model`, or None (the model's own cache) where its layers need another kind.

    `reuse`: hand back the last cache made with `reuse` when it was made for the same model, shape and
    precision, emptied (`reset`): its buffers keep their addresses from one rollout to the next, so a CUDA
    graph captured over a decode step replays instead of being captured again (cudagraph trees re-record a
    graph whose static inputs moved, and stop using graphs after enough re-records). It is held until a
    cache of another shape replaces it.
    """
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    # only a model whose every layer is a plain full-attention layer (sliding windows, linear attention: no)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        return None
    if layer_types is None and (
        getattr(text_config, "use_sliding_window", False)
        or getattr(text_config, "sliding_window_pattern", None)
    ):
        return None
    if not reuse:
        return PreallocatedCache(text_config.num_hidden_layers, rows, capacity)
    parameter = next(model.parameters())
    key = (
        rows,
        capacity,
        parameter.dtype,
        parameter.device,
        torch.is_autocast_enabled(parameter.device.type),
    )
    last = _REUSED.get("model")
    if last is not None and last() is model and _REUSED["key"] == key:
        cache = _REUSED["cache"]
        cache.reset()
        return cache
    _REUSED.clear()  # the old buffers go before the new ones are allocated
    cache = PreallocatedCache(text_config.num_hidden_layers, rows, capacity)
    _REUSED.update(model=weakref.ref(model), key=key, cache=cache)
    return cache


_REUSED: dict = {}  # make_rollout_cache(reuse=True)'s last cache, with its model (weakly) and shape


def cache_argument(model: CausalLM) -> str:
    """The keyword a model's forward takes its cache by: transformers 5 renamed `past_key_values` to `cache`.

    Read off the decoder's forward, which names it as the causal LM's does, and which a PEFT wrapper (whose own
    forward takes **kwargs) hands out as its model's."""
    forward = model.get_decoder().forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def returned_cache(out: Mapping[str, Any]) -> Cache | None:
    return out["cache"] if "cache" in out else out.get("past_key_values")


# ---------------------------------------------------------------- the decode step

STATIC_ATTENTION = ("sdpa", "eager")  # the attention implementations the static step hands a 4D mask to


class DecodeStep:
    """The forward pass of one decode step: the new token of every row in, the next logits (b, V) out.

    Static (a preallocated cache and sdpa or eager attention): the cache is written at a position tensor
    and attended over its whole capacity, with a (b, 1, 1, capacity) mask that opens one column per step,
    so every step has the same shapes and the same memory, and `compile` can capture it (a CUDA graph per
    shape on a GPU). Otherwise (the model's own cache, or another attention kernel) the cache grows by a
    column per step and the 2D mask is sliced to it, as `generate` does.
    """

    def __init__(
        self,
        model: CausalLM,
        cache: Cache | None,
        prompt_mask: torch.Tensor,
        max_new_tokens: int,
        compile: bool,
        static: bool = True,
    ) -> None:
        self.model, self.cache, self.cache_kw = model, cache, cache_argument(model)
        # (a PEFT wrapper passes its model's config on)
        attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        self.static = static and isinstance(cache, PreallocatedCache) and attention in STATIC_ATTENTION
        n, P = prompt_mask.shape
        if self.static:
            assert isinstance(cache, PreallocatedCache)  # (self.static says so)
            capacity = cache.capacity
            self.position = cache.decode_at(P, compiled=compile)  # (1,) the column the next step writes
            # sdpa takes a boolean mask (True: attend); eager adds its mask to the scores
            self.open = True if attention == "sdpa" else 0.0
            closed = False if attention == "sdpa" else torch.finfo(torch.float32).min
            dtype = torch.bool if attention == "sdpa" else torch.float32
            mask = torch.full((n, capacity), closed, dtype=dtype, device=prompt_mask.device)
            mask[:, :P] = torch.where(prompt_mask.bool(), self.open, closed)
            self.mask = mask[:, None, None, :]  # (b, 1, 1, capacity)
        else:
            self.mask = torch.cat(
                [prompt_mask, prompt_mask.new_ones((n, max_new_tokens))], dim=1
            )  # (b, P + T)
        self.compiled = compiled_decode_forward(prompt_mask.device) if compile and self.static else None
        if compile and not self.static:
            warnings.warn(
                f"--compile needs a preallocated cache and sdpa or eager attention (this model: {attention!r}, "
                f"cache {type(cache).__name__}); decoding eagerly",
                stacklevel=3,
            )

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, column: int) -> torch.Tensor:
        """Logits (b, V) after each row's token `tokens` (b,) at position ids `positions` (b,), written to
        cache column `column` (= P + t at step t)."""
        args = (tokens[:, None], positions[:, None])
        if not self.static:
            return decode_forward(self.model, self.cache_kw, self.cache, *args, self.mask[:, : column + 1])
        self.mask[:, :, :, column] = self.open
        logits = None
        if self.compiled is not None:
            try:
                # a new step of the CUDA graphs: the last step's outputs have been read and may be overwritten
                if tokens.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()
                logits = self.compiled(self.model, self.cache_kw, self.cache, *args, self.mask)
            except Exception as error:  # noqa: BLE001 (any compiler failure: say what, then decode eagerly)
                warn_compile_failed(error)
                self.compiled = None
        if logits is None:
            logits = decode_forward(self.model, self.cache_kw, self.cache, *args, self.mask)
        self.position += 1
        return logits

    def select_rows(self, keep: torch.Tensor, written: int) -> None:
        """Keep the batch rows `keep`: in the cache (its first `written` columns) and in the mask."""
        self.mask = self.mask[keep]
        if self.cache is None:
            return
        if self.static:
            assert isinstance(self.cache, PreallocatedCache)  # (self.static says so)
            self.cache.select_rows(keep, written)
        else:
            self.cache.batch_select_indices(keep)


def decode_forward(
    model: CausalLM,
    cache_kw: str,
    cache: Cache | None,
    input_ids: torch.Tensor,  # (b, 1)
    position_ids: torch.Tensor,  # (b, 1)
    attention_mask: torch.Tensor,  # (b, 1, 1, capacity) static, else (b, length)
) -> torch.Tensor:
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        **{cache_kw: cache},
    )
    return out["logits"][:, -1]


def compile_decoding(setting: bool | None, device: torch.device) -> bool:
    """Whether the rollout compiles its decode step: `--compile on|off` as given; `auto` (None) is off on
    every device. On this project's CPUs `make bench` measured the compiled step no faster once its
    compile time is counted (the README's "Performance"); on a GPU it has not been measured here yet
    (`python -m tools.gpu_check` times both), so `on` stays a choice the user makes."""
    return bool(setting)


_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_decode_forward(device: torch.device) -> Callable[..., torch.Tensor]:
    """`decode_forward` under torch.compile, made once per process and device type: CUDA graphs on a GPU
    (`reduce-overhead`), inductor's default elsewhere. Every shape compiles once, so dynamo's limit of
    recompilations is raised above the number of (rows, capacity) buckets a run meets."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if mode not in _COMPILED:
        dynamo = torch._dynamo.config
        for limit in ("recompile_limit", "cache_size_limit"):
            if hasattr(dynamo, limit):
                setattr(dynamo, limit, max(getattr(dynamo, limit), 64))
        _COMPILED[mode] = torch.compile(decode_forward, mode=mode, dynamic=False)
    return _COMPILED[mode]


def warn_compile_failed(error: Exception) -> None:
    first_line = (str(error).strip().splitlines() or [""])[0][:300]
    warnings.warn(
        f"torch.compile of the decode step failed ({type(error).__name__}: {first_line}); decoding without it "
        "from here on (--compile off skips the attempt)",
        stacklevel=3,
    )
