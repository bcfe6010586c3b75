"""What `make bench` (tools/bench.py) measures with: the models and prompts it runs, the machine it records, a
timer that waits for the device, and a peak-memory meter (CUDA statistics, or a CPU's resident set)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import threading
import time
from pathlib import Path

import torch

from grpo.precision import cpu_has_bf16_arithmetic, synchronize
from grpo.rollout import build_prompt
from tools.qwen3_tokenizer import QWEN3_1_7B_SHAPE

# Model shapes for --random-init, from the models' published config.json files (weights are never needed).
SHAPES = {
    "qwen3-1.7b": dict(model_type="qwen3", **QWEN3_1_7B_SHAPE),
    # Qwen3-1.7B's structure (28 layers, its heads, its vocabulary) at a width a CPU runs in seconds: the ops a
    # decode step issues, which the "ops" section counts, depend on the structure and not on the width
    "qwen3-1.7b-narrow": dict(
        model_type="qwen3",
        **{**QWEN3_1_7B_SHAPE, "hidden_size": 128, "intermediate_size": 256, "head_dim": 16},
    ),
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100_000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
}


def random_model(shape: str, tokenizer, device: torch.device, dtype: torch.dtype):
    """A randomly initialised model of a named shape (SHAPES) or of a config.json's shape."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if shape in SHAPES:
        fields = dict(SHAPES[shape])
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    elif Path(shape).is_file():
        config = AutoConfig.from_pretrained(shape)
    else:
        raise SystemExit(
            f"error: --random-init takes one of {sorted(SHAPES)} or a config.json path, not {shape!r}"
        )
    # the packaged tokenizer drives the prompts; sampled ids it does not know decode to ""
    if config.get_text_config(decoder=True).vocab_size < len(tokenizer):
        raise SystemExit(
            f"error: --random-init needs a vocabulary of at least {len(tokenizer)} tokens (the packaged tokenizer's)"
        )
    config.bos_token_id = config.eos_token_id = config.pad_token_id = tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def countdown_prompts(tokenizer, n: int) -> list[list[int]]:
    from tasks.countdown import CountdownTask

    task = CountdownTask()
    examples = list(task.examples("train"))[:n]
    return [build_prompt(tokenizer, task.messages(ex)) for ex in examples]


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    info = {
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: a GPU that supports it, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16_arithmetic()
    return False


def timed(fn, device: torch.device):
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


class PeakMemory:
    """Peak memory above the level at entry, in bytes (`.peak`).

    On a GPU: the caching allocator's statistics. On a CPU: the process's resident set read from
    /proc/self/statm every millisecond by a thread (torch's kernels release the GIL), after returning
    freed heap pages to the system so that the starting level is the live data's. Elsewhere (no
    /proc, e.g. macOS or MPS) `.peak` stays None.
    """

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        if self.device.type != "cpu" or not os.path.exists("/proc/self/statm"):
            self.peak = self.thread = None
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base = self.high = self._rss()
        self.running = True

        def watch():
            while self.running:
                self.high = max(self.high, self._rss())
                time.sleep(0.001)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
            return
        if self.thread is None:
            return
        self.high = max(self.high, self._rss())
        self.running = False
        self.thread.join()
        self.peak = self.high - self.base
