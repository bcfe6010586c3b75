"""One decode step of the rollout: the new token of every row in, the next logits out (`DecodeStep`), with static
shapes so that `torch.compile` can capture it (CUDA graphs on a GPU), and whether to compile it
(`compile_decoding`). The sampling loop around it is grpo/rollout.py's.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from grpo.kv_cache import PreallocatedCache, cache_argument
from grpo.models import unwrapped

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers.cache_utils import Cache

    from grpo.models import CausalLM

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
        attention = getattr(getattr(unwrapped(model), "config", None), "_attn_implementation", None)
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
