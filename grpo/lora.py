"""LoRA adapters, through PEFT: train a low-rank update of each linear layer, and get the reference for free.

    W x  →  W x + (α / r) · B A x,        A (r, d_in) random, B (d_out, r) zero at the start

Only A and B train (AdamW keeps state for them only: r · (d_in + d_out) numbers a layer instead of
d_in · d_out); W never changes. So the frozen reference π_ref is the policy with its adapters switched off,
not a second copy of the weights, and at step 0 (B = 0) the policy is exactly the reference.

    add_adapters(model, options)          the policy: `model` with adapters on its decoder's linear layers
    load_adapters(model, path)            the same, with the adapters of a checkpoint (--resume)
    adapters_off(policy)                  a block in which the policy computes as π_ref
    save_merged(policy, tokenizer, path)  W + (α / r)·BA as one plain model, for final/

A checkpoint's `model/` holds the adapters in PEFT's format (adapter_config.json, adapter_model.safetensors);
`final/` holds the merged model, which `AutoModelForCausalLM` loads (evaluate.py --model RUN/final), and
under `final/adapter/` the adapters, which `PeftModel.from_pretrained(base, RUN/final/adapter)` loads.

PEFT is an optional extra (`pip install -e '.[lora]'`); without it everything else works, and --lora-rank
says how to install it.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType
    from typing import TypeGuard

    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from grpo.config import Config

ADAPTER_DIR = "adapter"  # final/adapter: the adapters beside the merged model
INSTALL = "pip install -e '.[lora]'"


@dataclass(frozen=True)
class LoraOptions:
    rank: int  # r
    alpha: float  # α: the update is scaled by α / r
    dropout: float = 0.0  # on the adapters' input, in training only
    targets: tuple[str, ...] | None = None  # module names (q_proj, …); None: every linear layer of the blocks

    @classmethod
    def of(cls, config: Config) -> LoraOptions | None:
        """The adapters a run's config asks for (--lora-rank and the rest), None without --lora-rank."""
        if not config.lora_rank:
            return None
        alpha = config.lora_alpha if config.lora_alpha is not None else 2.0 * config.lora_rank
        targets = tuple(config.lora_targets) if config.lora_targets else None
        return cls(config.lora_rank, alpha, config.lora_dropout, targets)


def peft() -> ModuleType:
    """The `peft` package, or an ImportError that says how to install it."""
    try:
        import peft as module
    except ImportError:
        raise ImportError(f"LoRA (--lora-rank) needs PEFT, an optional extra: {INSTALL}") from None
    return module


def is_adapted(model: torch.nn.Module) -> TypeGuard[PeftModel]:
    """Whether `model` is a PEFT model (its reference is itself with the adapters off)."""
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def block_linear_names(model: PreTrainedModel) -> tuple[str, ...]:
    """The names of every linear layer inside the decoder's blocks (q_proj, k_proj, …, down_proj for Llama
    and Qwen3): the default targets. The embeddings and the output projection are left out."""
    names: set[str] = set()
    for layer in model.get_decoder().layers:
        names.update(
            name.rsplit(".", 1)[-1] for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)
        )
    return tuple(sorted(names))


def add_adapters(model: PreTrainedModel, options: LoraOptions) -> PeftModel:
    """`model` with LoRA adapters (fp32, whatever the base weights' dtype) and every base weight frozen."""
    lib = peft()
    targets = options.targets or block_linear_names(model)
    config = lib.LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(targets),
        task_type="CAUSAL_LM",
    )
    try:
        with quiet_peft():
            # autocast_adapter_dtype: adapters of a bf16 base are kept in float32 (their updates are small)
            return lib.get_peft_model(model, config, autocast_adapter_dtype=True)
    except ValueError as err:  # e.g. "Target modules {'x'} not found in the base model"
        raise ValueError(f"--lora-targets {','.join(targets)}: {err}") from None


def load_adapters(model: PreTrainedModel, path: str | Path) -> PeftModel:
    """`model` with the trainable adapters saved at `path` (a checkpoint's model/, or final/adapter)."""
    lib = peft()
    with quiet_peft():
        return lib.PeftModel.from_pretrained(model, str(path), is_trainable=True, autocast_adapter_dtype=True)


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """PEFT reads transformers' deprecated `is_gradient_checkpointing`: its FutureWarning is not the user's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def adapters_off(policy: PreTrainedModel | PeftModel) -> contextlib.AbstractContextManager[None]:
    """A block in which `policy` computes without its adapters, as the frozen reference π_ref."""
    return policy.disable_adapter() if is_adapted(policy) else contextlib.nullcontext()


def merged_state_dict(policy: PeftModel) -> dict[str, torch.Tensor]:
    """The base model's weights with every adapter merged in, W + (α / r)·BA, in float32 on the CPU; the
    policy is left as it is (PEFT's merge_and_unload would rewrite it in place, in the base's dtype)."""
    base = policy.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in module.active_adapters:
                delta = module.get_delta_weight(adapter).detach().float().cpu()
                deltas[f"{name}.weight"] = deltas.get(f"{name}.weight", 0) + delta
    merged: dict[str, torch.Tensor] = {}
    seen: dict[int, torch.Tensor] = {}  # data_ptr → its float32 copy
    for key, tensor in base.state_dict().items():
        if ".lora_" in key:
            continue
        plain = key.replace(".base_layer.", ".")
        # tied weights (an embedding shared with the output projection) stay one tensor
        ptr = tensor.data_ptr()
        value = seen[ptr] if ptr in seen else tensor.detach().float().cpu()
        seen[ptr] = value
        merged[plain] = value + deltas[plain] if plain in deltas else value
    return merged


def save_merged(policy: PeftModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """One plain Hugging Face model at `path`: the policy's adapters merged into its weights, float32."""
    from grpo.files import save_as_model

    base = cast("PreTrainedModel", policy.get_base_model())  # PEFT types it as any torch Module
    save_as_model(base, merged_state_dict(policy), tokenizer, path)
