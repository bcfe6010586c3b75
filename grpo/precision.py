"""What runs in which precision, decided in one place (the README's "Precision" section is this file).

    training, --dtype auto     float32 weights, gradients and AdamW state; on a GPU with bf16, and on a CPU
                               whose bf16 arithmetic measures faster (`cpu_bf16_pays`), every forward pass
                               of the rollout, the reference and the update runs under bf16 autocast
    the logprob reward         float32 always (autocast off): the reward is a difference of log-probs
                               smaller than bf16's noise (below)
    evaluation, --dtype auto   what training did: float32 weights, bf16 autocast on a GPU for generation,
                               float32 for the likelihood figures, never a bf16 copy of the trained weights
    --dtype bfloat16           pure bf16 weights (half the memory), asked for by name only; training warns
                               when lr is under bf16's spacing for most weights (`lost_update_fraction`)
    --dtype float16            evaluation only: training refuses it (below)
    --dtype float32            float32 and no autocast, unless --autocast is given

Why, measured (README "Precision"):
- The reward in float32. Under bf16 autocast the gold answer's per-token log-prob moves by 0.01–0.05 nats
  on SmolLM2 (the size of poetry's whole within-group spread, 0.048), and the decoder's bf16 is most of
  it, so an fp32 output projection alone does not remove it: the scoring pass runs with autocast off.
- No fp16 training: AdamW's eps (1e-8) and its second moment (squared gradients under 6e-8) underflow
  to 0 in fp16, so the first step divides by zero and every weight becomes NaN or inf. Mixed precision
  with fp16 would need a loss scaler; bf16 autocast (or float32) is what is offered.
- One autocast block per forward phase and per update, never around `optimizer.step()`: autocast keeps
  the bf16 copy of each float32 weight it casts until its outermost block exits, so μ > 1 updates inside
  one block would compute updates 2..μ with the weights of update 1 (their ratio then stays at 1).
- A model on another device type than the run's (`--reference-device cpu` beside a GPU policy) runs in
  float32: CPU bf16 autocast is slow without AVX512-BF16 or AMX.
- On a CPU, autocast is on by default only where it pays: bf16 in hardware (AMX or AVX512-BF16) and a
  product measured faster at start-up. Measured on one Xeon with AMX (issue 25): decode 1.73×, a forward +
  backward 1.77×, a 4 × 4 × 128 rule step 27.0 s against 34.6–39.8 s; on an AMD EPYC with AVX512-BF16, the
  rollout 1.9× at batch 32 and a default logprob step 1.33× (README "Performance"); without bf16 arithmetic,
  slower.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Iterable

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bf16_supported(device: torch.device) -> bool:
    """bf16 that pays for autocast: a CUDA GPU that supports it, or a CPU where `cpu_bf16_pays`."""
    if device.type == "cpu":
        return cpu_bf16_pays()
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


# `on` or `off` skips the start-up measurement of `cpu_bf16_pays` (the tests pin it `off`, so that a CPU with
# AMX computes what one without computes)
CPU_BF16_ENV = "LOGPROB_GRPO_CPU_BF16"
# bf16 autocast is turned on on a CPU when a matrix product runs at least this much faster in bf16 than in
# float32; the casts around every product cost a little of the gain back
CPU_BF16_MIN_SPEEDUP = 1.2


def cpu_has_bf16_arithmetic() -> bool:
    """AMX (Intel Sapphire Rapids on) or AVX512-BF16 (Cooper Lake, AMD Zen 4 on): bf16 products in hardware.
    Without either, oneDNN emulates bf16 by converting to float32, and autocast is slower than float32."""
    return any(getattr(torch.cpu, name, lambda: False)() for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))  # fmt: skip


def bf16_matmul_speedup(rows: int = 256, width: int = 1024, repeats: int = 5) -> float:
    """float32 time ÷ bf16-autocast time of a (rows × width) · (width × 4·width) linear layer on the CPU,
    the shape of a decoder's MLP, best of `repeats` (about a second in all)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, width, generator=generator)
    w = torch.randn(4 * width, width, generator=generator)

    def best(enabled: bool) -> float:
        times = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            torch.nn.functional.linear(x, w)  # warm-up: oneDNN picks and caches its kernel
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(4):
                    torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - start)
        return min(times)

    return best(False) / best(True)


@functools.cache
def cpu_bf16_pays() -> bool:
    """`--autocast auto` on a CPU: on where the CPU has bf16 arithmetic and bf16 measured at least
    CPU_BF16_MIN_SPEEDUP× faster on a decoder-sized product at start-up (once per process); off on every
    other CPU, without measuring. LOGPROB_GRPO_CPU_BF16=on|off decides without measuring."""
    override = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if override in ("on", "off"):
        return override == "on"
    if override:
        raise ValueError(f"{CPU_BF16_ENV}={override!r}: use on or off (or leave it unset to measure)")
    return cpu_has_bf16_arithmetic() and bf16_matmul_speedup() >= CPU_BF16_MIN_SPEEDUP


def _check(dtype: str) -> None:
    if dtype not in ("auto", *DTYPES):
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {sorted(DTYPES)}")


def training_precision(
    dtype: str, autocast: bool | None, device: torch.device, has_bf16: bool | None = None
) -> tuple[str, bool]:
    """(the weights' dtype, whether forward passes run under bf16 autocast) for training.

    `dtype="auto"` keeps float32 weights, gradients and AdamW state; on a GPU with bf16 (or a CPU where bf16
    pays) the forward passes then run in bf16 (`autocast=None` means: on where `has_bf16`, by default
    `bf16_supported`).
    That is mixed precision: the matrix products in bf16, every update applied to float32 weights.
    `dtype="float32"` means float32 compute too (autocast only when asked for). Pure bf16 weights are
    what `dtype="bfloat16"` asks for, never a default: at lr 5e-7 an AdamW step (about lr per weight) is
    below bf16's resolution for weights of size 0.02 (2^-13 ≈ 1.2e-4 apart), so it rounds away.
    """
    _check(dtype)
    if dtype == "float16":
        raise ValueError(
            "--dtype float16 cannot train: AdamW's eps (1e-8) and its second moment underflow to 0 in "
            "float16, so the first step turns the weights into NaN/inf. Use --dtype auto (float32 weights, "
            "bf16 autocast on a GPU that has bf16), float32, or bfloat16"
        )
    weights = "float32" if dtype == "auto" else dtype
    if autocast is None:
        has_bf16 = bf16_supported(device) if has_bf16 is None else has_bf16
        autocast = dtype == "auto" and has_bf16
    return weights, autocast


def evaluation_precision(
    dtype: str, autocast: bool | None, device: torch.device, has_bf16: bool | None = None
) -> tuple[str, bool]:
    """(the weights' dtype, bf16 autocast for generation) for evaluation: by default what training used.

    `auto` evaluates the float32 weights a run trained and saved, under bf16 autocast where training
    would have used it: a bf16 copy of the weights would round away most of a small update (±1e-4 on
    each weight of SmolLM2 changes the bf16 value of only 28 % of them). `bfloat16` and `float16` are
    half-precision copies, for when memory asks for them.
    """
    _check(dtype)
    if dtype == "float16":
        return "float16", False
    return training_precision(dtype, autocast, device, has_bf16)


def lost_update_fraction(parameters: Iterable[torch.Tensor], lr: float) -> float:
    """The fraction of half-precision weights w for which a step of size lr rounds back to w.

    A float w = m · 2^e (m in [0.5, 1)) has neighbours eps · 2^(e−1) away (eps = 2^-7 for bf16, 2^-10
    for fp16); w + lr rounds to w when lr is under half of that. AdamW's first steps move every weight by
    about lr, so this is the share of the model an update cannot change. float32 weights count as never
    losing one (eps = 2^-23); zero weights are left out (their neighbours are far closer).
    """
    lost = total = 0
    for p in parameters:
        if p.dtype not in (torch.bfloat16, torch.float16):
            total += p.numel()
            continue
        w = p.detach().float()
        _, exponent = torch.frexp(w)
        half_spacing = torch.finfo(p.dtype).eps * torch.exp2(exponent.float() - 2)
        lost += int(((lr < half_spacing) & (w != 0)).sum())
        total += p.numel()
    return lost / total if total else 0.0


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on `device` when `enabled`; else a block with autocast off, even inside an enclosing
    autocast block, so that it computes in the weights' own dtype."""
    if enabled:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type not in ("cuda", "cpu", "mps", "xpu"):  # e.g. meta: nothing to turn off
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read after it counts that work (CUDA is async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
