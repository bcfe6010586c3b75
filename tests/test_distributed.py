"""Two gloo processes on a CPU make the same parameter update as one process on the same global batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from grpo.config import Config
from grpo.distributed import World, all_gather
from grpo.fsdp import full_state_dict
from grpo.trainer import Experience, Trainer
from tools.bench_memory import tensor_bytes

N, LENGTH, START = 8, 20, 8  # 8 completions of 12 tokens after an 8-token prompt


def fixed_batch(shared_prompts: bool = False) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(N, LENGTH, dtype=torch.long)
    loss_mask = (torch.rand(N, LENGTH - START, generator=g) < 0.7).long()
    loss_mask[:, 0] = 1  # every row keeps at least one token, and the rows keep different counts
    ids = torch.randint(5, 100, (N, LENGTH), generator=g)
    if shared_prompts:  # groups of two rows with one prompt: the update runs each prompt once
        ids[:, :START] = ids[::2, :START].repeat_interleave(2, dim=0)
    return {
        "ids": ids,
        "mask": mask,
        "advantages": torch.randn(N, generator=g),
        "loss_mask": loss_mask,
        "ref_logp": -torch.rand(N, LENGTH - START, generator=g) * 5,
    }


def update(
    rank: int, world: World, aggregation: str, shared_prompts: bool = False, fsdp: bool = False
) -> dict:
    from conftest import EchoTask, make_float64_model, make_tokenizer

    tokenizer = make_tokenizer()
    policy = make_float64_model(tokenizer, seed=0)  # float64: see the test's tolerance
    config = Config(task="echo", prompts_per_step=2, micro_batch_size=2, beta=0.1, lr=1e-2,
                    group_size=2 if shared_prompts else 4,
                    loss_aggregation=aggregation, max_new_tokens=LENGTH - START, out_dir="unused",
                    fsdp=fsdp)  # fmt: skip
    # required with β > 0; the test hands ref_logp in directly
    reference = make_float64_model(tokenizer, seed=0)
    trainer = Trainer(config, policy, reference, tokenizer, EchoTask(), world)
    b = fixed_batch(shared_prompts)
    rows = slice(
        rank * N // world.size, (rank + 1) * N // world.size
    )  # this rank's share of the global batch
    trainer.policy_update(
        Experience(
            b["ids"][rows],
            b["mask"][rows],
            START,
            b["advantages"][rows],
            b["loss_mask"][rows],
            b["ref_logp"][rows],
            None,
        )
    )
    # what this rank holds: parameters, gradients and AdamW's state (an FSDP rank: its shards)
    optimizer_state = [v for state in trainer.optimizer.state.values() for v in state.values()]
    held = tensor_bytes(trainer.trainable) + tensor_bytes(p.grad for p in trainer.trainable)
    held += tensor_bytes(optimizer_state)
    # FSDP: gathered whole on rank 0 (the others get nothing)
    weights = full_state_dict(trainer.policy_logprobs, prefix="model.") if fsdp else policy.state_dict()
    return {"weights": {k: v.detach().clone() for k, v in weights.items()}, "bytes": held}


def worker(
    rank: int, init_file: str, out_file: str, aggregation: str, shared_prompts: bool, fsdp: bool
) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = update(rank, World(rank, 2), aggregation, shared_prompts, fsdp)
        torch.save(result, f"{out_file}.{rank}")
        # both ranks done before either tears the group down: a rank that destroyed it while the other still
        # received (FSDP gathers the full weights onto rank 0) aborted once in CI ("terminate called without
        # an active exception", SIGABRT). Not in `finally`: after an error the other rank may never arrive
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "aggregation, shared_prompts, fsdp",
    [("sequence", False, False), ("token", False, False), ("token", True, False), ("token", True, True),
     ("sequence", False, True)],
    ids=["ddp-sequence", "ddp-token", "ddp-token-shared", "fsdp-token-shared", "fsdp-sequence"],
)  # fmt: skip
def test_two_processes_update_like_one(tmp_path, aggregation, shared_prompts, fsdp):
    single = update(0, World(), aggregation, shared_prompts)
    mp.spawn(
        worker,
        args=(str(tmp_path / "init"), str(tmp_path / "state.pt"), aggregation, shared_prompts, fsdp),
        nprocs=2,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"state.pt.{rank}") for rank in range(2)]
    double = ranks[0]["weights"]
    # DDP: every rank holds all of it; FSDP2: each rank its half, and a few small tensors whole
    for result in ranks:
        assert result["bytes"] <= (0.55 if fsdp else 1.0) * single["bytes"], (
            result["bytes"],
            single["bytes"],
        )
    single = single["weights"]
    from conftest import make_float64_model, make_tokenizer

    before = make_float64_model(make_tokenizer(), seed=0).state_dict()
    moved = sum(not torch.equal(before[k], single[k]) for k in single)
    assert moved > 0
    # AdamW's first step moves each weight by about ±lr (1e-2) whatever its gradient's size, so rounding
    # in a tiny gradient shows up in the weight: in float32, summing a shared prompt's gradient over its
    # group in another order moved some weights by 5e-5, by an amount that depends on the CPU. The models
    # compute in float64, so the two runs differ by float64 rounding: 2e-15 in the weights (measured). A
    # gradient missing its other rank's half moves weights by 2e-2 (measured), seven orders above 1e-9.
    for key in single:
        torch.testing.assert_close(double[key], single[key], atol=1e-9, rtol=0, msg=key)


def test_all_gather_is_the_identity_for_one_process():
    x = torch.arange(3)
    assert all_gather(x) is x
