"""FSDP2 (`--fsdp` under torchrun): each rank holds 1/N of the weights, gradients and AdamW state.

    torchrun --nproc-per-node 8 train.py --fsdp --preset poster --task math --reward logprob

PyTorch's own `torch.distributed.fsdp.fully_shard`, on each decoder layer and then on the root (the
embeddings, the final norm, the output projection): every parameter becomes a DTensor sharded along dim 0
over the ranks. A forward all-gathers one layer's parameters just before it runs and frees them after; the
backward gathers them again and reduce-scatters the gradient, so each rank keeps and updates only its shard
(AdamW's state is created in the shards' shape). DDP, by contrast, keeps everything on every rank.

What this file decides:
- The rollout, the reward's scoring and the reference pass run hundreds of forwards (one per new token): an
  all-gather per layer per decode step would cost more than the step. `gathered(model)` gathers every
  layer once for the whole phase and reshards after it; during it the rank holds the whole model once
  (the memory of one unsharded copy, the price of a rollout at decode speed).
- Precision: parameters are gathered in their own dtype (float32 master weights) and the forward passes
  run under the run's bf16 autocast, as without FSDP; gradients are reduced in float32 (bf16 weights' too).
  Gathering in float32 moves twice the bytes of bf16, once per phase thanks to `gathered`, and keeps the
  logprob reward scored with float32 weights (`grpo.precision`).
- The gradients of micro-batches are accumulated locally and reduce-scattered once, on the last micro-batch
  (`Trainer.microbatch_backward`, as DDP's no_sync).
- Checkpoints: the sharded parameters and AdamW state, one file per rank through
  `torch.distributed.checkpoint` (`save_sharded` / `load_sharded`), resumed with the same number of ranks;
  the final model is gathered into one Hugging Face directory on rank 0 (`full_state_dict`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from grpo.models import unwrapped

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch.distributed.fsdp import FSDPModule

    from grpo.models import CausalLM


def shard(model: CausalLM, root: torch.nn.Module) -> None:
    """fully_shard every decoder layer of `model`, then `root` with what is left (the embeddings, the final
    norm, the output projection); parameters become sharded DTensors. `root` is a `TokenLogprobs` of `model`:
    the module whose forward the training pass calls (it runs the decoder and the output projection apart,
    so the model's own forward is never called), so that its hooks gather those parameters. Gradients are
    reduced in float32 for bf16 weights and in the weights' own dtype otherwise; parameters are gathered in
    their own dtype (the module docstring says why)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    half = next(model.parameters()).dtype in (torch.bfloat16, torch.float16)
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32 if half else None)
    for layer in unwrapped(model).get_decoder().layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(root, mp_policy=policy)
    # FSDP takes the first sharded module to run a forward for the root; the rollout's first forward is
    # layer 0's (the model's own forward is no FSDP module), so run the root once now, on two tokens
    ids = torch.zeros(1, 2, dtype=torch.long, device=next(model.parameters()).device)
    with torch.no_grad():
        root(ids, torch.ones_like(ids), 1)
    # a root keeps its parameters gathered after its forward; the optimizer needs the shards (fully_shard made
    # `root` an FSDPModule)
    # a root keeps its parameters gathered after its forward; the optimizer needs the shards
    cast("FSDPModule", root).reshard()


def _fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """A block in which every layer of a sharded `model` stays whole: gathered once at entry, resharded at
    exit (a model that is not sharded: nothing happens)."""
    modules = _fsdp_modules(model)
    for m in modules:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True)


def full_state_dict(root: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer of the sharded `root` whole, on the CPU of rank 0 (the other ranks get an
    empty dict; every rank must call it), keys without `prefix` (the trainer's root holds the policy as
    `model.`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # typed as any state value (a DTensor, a number, …); a module's whole state dict holds plain tensors
    whole = cast("dict[str, torch.Tensor]", state)
    return {key.removeprefix(prefix): value for key, value in whole.items()}


def save_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """This rank's shards of the parameters and of AdamW's state, into `path` (every rank writes its own)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(path))


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The shards `save_sharded` wrote, back into a sharded `model` and its optimizer (the same ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of `t`: a DTensor's local shard, a plain tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t
