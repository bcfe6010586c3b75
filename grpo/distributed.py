"""Several processes with PyTorch's own engine (torchrun + DistributedDataParallel); one process is N = 1.

    torchrun --nproc-per-node 2 train.py ...      # NCCL on GPUs, gloo on CPUs

Each rank rolls out its share of the step's prompts (whole groups, so group baselines stay local),
batch-level statistics (the logprob reward's z-score / min-max, logged means) are taken over the
global batch by all-gather, and DDP averages the gradients. With one process every collective below is
the identity and no process group exists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[World, str]:
    """Join the process group torchrun describes, if any; return the world and this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size()), device


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `x` (same shape on every rank) along dim 0, in rank order."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    wire = x.cuda() if dist.get_backend() == "nccl" else x  # NCCL moves GPU tensors only
    parts = [torch.empty_like(wire) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, wire.contiguous())
    return torch.cat(parts).to(x.device)


def all_sum(value: float) -> float:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t)


def gather_objects(obj: object) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
