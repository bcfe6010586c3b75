"""FSDP2 (`--fsdp`, grpo/fsdp.py) under torchrun with 2 gloo processes on a CPU: train.py as users start it.

The update itself (the same parameters as one process on the same batch, and each rank holding at most 0.55×
of DDP's bytes of parameters, gradients and AdamW state) is tests/test_distributed.py's test, run with FSDP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import stable
from safetensors.torch import load_file

from grpo.checkpoint import SHARDED_DIR, STATE_FILE, read_state

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, expect: int = 0) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(free_port()), str(REPO / "train.py"), *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == expect, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stderr


def run_args(model_dir, out_dir, *extra):
    return ["--task", "math", "--reward", "logprob", "--model", str(model_dir), "--out-dir", str(out_dir),
            "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "16", "--max-prompt-tokens",
            "2000", "--lr", "1e-2", "--save-every", "1", *extra]  # fmt: skip


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "final" / "model.safetensors")


def test_fsdp_trains_like_ddp_and_resumes_exactly(tmp_path, tiny_model_dir):
    torchrun(*run_args(tiny_model_dir, tmp_path / "fsdp", "--fsdp", "--steps", "3"))
    torchrun(*run_args(tiny_model_dir, tmp_path / "ddp", "--steps", "3"))
    # stopped after 2 steps, then resumed: the run a never-stopped one is
    torchrun(*run_args(tiny_model_dir, tmp_path / "resumed", "--fsdp", "--steps", "2"))
    output = torchrun("--resume", str(tmp_path / "resumed"), "--steps", "3")
    assert "resuming from" in output

    # each checkpoint holds one file of shards per rank, and no optimizer in the trainer state
    last = tmp_path / "fsdp" / "checkpoints" / "step-00000003"
    assert len(list((last / SHARDED_DIR).glob("*.distcp"))) == 2
    assert read_state(last)["optimizer"] is None and (last / STATE_FILE).is_file()

    fsdp, ddp, resumed = weights(tmp_path / "fsdp"), weights(tmp_path / "ddp"), weights(tmp_path / "resumed")
    assert fsdp.keys() == ddp.keys() == resumed.keys()
    assert all(torch.equal(fsdp[k], resumed[k]) for k in fsdp)
    start = load_file(tiny_model_dir / "model.safetensors")
    for k in fsdp:
        # the same update as DDP: float32, another reduction order, so to a tolerance relative to the step
        # (on an AMD EPYC with 2 gloo ranks the two came out bit for bit equal in every tensor, measured)
        moved = (ddp[k] - start[k]).norm()
        assert moved > 0 and (fsdp[k] - ddp[k]).norm() <= 1e-4 * moved + 1e-7, k
    lines = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("fsdp", "resumed")]
    assert [stable(x) for x in lines[0]] == [stable(x) for x in lines[1]] and len(lines[0]) == 3
    assert json.loads((tmp_path / "fsdp" / "config.json").read_text())["fsdp"] is True


def test_fsdp_without_torchrun_is_refused_in_one_line(tmp_path, capsys):
    import train

    assert train.main(["--fsdp", "--out-dir", str(tmp_path / "r")]) == train.EXIT_USAGE
    assert "torchrun --nproc-per-node N" in capsys.readouterr().err


def test_fsdp_on_a_torch_without_fully_shard_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    import torch.distributed.fsdp

    import train

    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")  # as on torch 2.4 and 2.5: FSDP1 alone
    assert train.main(["--fsdp", "--out-dir", str(tmp_path / "r")]) == train.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--fsdp needs torch 2.6 or newer" in err and torch.__version__ in err
    assert not (tmp_path / "r").exists()  # refused before the run directory is made
