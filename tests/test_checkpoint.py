"""Checkpoints: exact resume, SIGKILL then --resume, half-written checkpoints ignored, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import stable
from safetensors.torch import load_file

from grpo.checkpoint import MODEL_DIR, checkpoints, read_state, truncate_jsonl
from grpo.models import load_model
from grpo.run import train
from grpo.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def latest(run_dir):
    """The newest complete checkpoint of a run directory, (step, path), or None."""
    found = checkpoints(run_dir)
    return found[-1] if found else None


def test_a_resumed_run_equals_one_never_interrupted(tmp_path, tokenizer):
    from conftest import EchoTask, config, make_model

    straight = Trainer(
        config(tmp_path / "a", steps=4, save_every=0),
        make_model(tokenizer),
        make_model(tokenizer),
        tokenizer,
        EchoTask(),
    )
    train(straight, progress=False)

    first = Trainer(
        config(tmp_path / "b", steps=2, save_every=1),
        make_model(tokenizer),
        make_model(tokenizer),
        tokenizer,
        EchoTask(),
    )
    train(first, progress=False)
    step, path = latest(first.config.out_dir)
    assert step == 2 and [s for s, _ in checkpoints(first.config.out_dir)] == [1, 2]  # keep_checkpoints = 2

    policy = load_model(str(path / MODEL_DIR), torch.device("cpu"), torch.float32)
    resumed = Trainer(
        config(tmp_path / "b", steps=4, save_every=1), policy, make_model(tokenizer), tokenizer, EchoTask()
    )
    resumed.load_state_dict(read_state(path))
    train(resumed, progress=False, prepare_dir=False)

    for p, q in zip(straight.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(p, q)
    a = (Path(straight.config.out_dir) / "metrics.jsonl").read_text().splitlines()
    b = (Path(resumed.config.out_dir) / "metrics.jsonl").read_text().splitlines()
    assert [stable(x) for x in a] == [stable(x) for x in b] and len(a) == 4


def test_half_written_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-00000003" / MODEL_DIR).mkdir(parents=True)  # a complete-looking one
    (root / "step-00000003" / MODEL_DIR / "config.json").write_text("{}")
    torch.save({"step": 3}, root / "step-00000003" / "trainer_state.pt")
    (root / ".step-00000005-x1y2" / MODEL_DIR).mkdir(parents=True)  # crashed while writing: hidden name
    (root / "step-00000004" / MODEL_DIR).mkdir(parents=True)  # no trainer_state.pt
    assert latest(tmp_path) == (3, root / "step-00000003")


def test_truncate_jsonl_drops_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 3)))
    truncate_jsonl(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


# ---------------------------------------------------------------- train.py as a process


def train_command(model_dir, out_dir, *extra):
    return [
        sys.executable, str(REPO / "train.py"), "--task", "math", "--model", str(model_dir),
        "--out-dir", str(out_dir), "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "24",
        "--max-prompt-tokens", "2000", "--lr", "1e-2", "--save-every", "1", *extra,
    ]  # fmt: skip


def start(command):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_checkpoint(run_dir, step, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = latest(run_dir)
        if found and found[0] >= step:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"train.py exited early:\n{process.stdout.read()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


# LoRA: the checkpoints hold the adapters and their AdamW state, and the dropout draws from the torch RNG
@pytest.mark.parametrize("extra", [(), ("--lora-rank", "4", "--lora-dropout", "0.1")], ids=["full", "lora"])
def test_sigkill_then_resume_gives_the_parameters_of_an_uninterrupted_run(tmp_path, tiny_model_dir, extra):
    steps = "4"
    straight = start(train_command(tiny_model_dir, tmp_path / "straight", "--steps", steps, *extra))
    assert straight.wait(timeout=600) == 0, straight.stdout.read()

    killed = start(train_command(tiny_model_dir, tmp_path / "killed", "--steps", steps, *extra))
    wait_for_checkpoint(tmp_path / "killed", 2, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "final").exists()  # it really died mid-run

    resumed = start([sys.executable, str(REPO / "train.py"), "--resume", str(tmp_path / "killed")])
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resuming from" in output

    weights = ["model.safetensors"] + (["adapter/adapter_model.safetensors"] if extra else [])
    for name in weights:
        a = load_file(tmp_path / "straight" / "final" / name)
        b = load_file(tmp_path / "killed" / "final" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines_a = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [stable(x) for x in lines_a] == [stable(x) for x in lines_b] and len(lines_a) == 4


def test_sigterm_stops_cleanly_with_a_loadable_checkpoint(tmp_path, tiny_model_dir):
    process = start(train_command(tiny_model_dir, tmp_path / "run", "--steps", "1000"))
    wait_for_checkpoint(tmp_path / "run", 1, process)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    assert "stopped by SIGTERM" in output and "--resume" in output
    assert "done:" not in output and not (tmp_path / "run" / "final").exists()  # no claim of a final model
    step, path = latest(tmp_path / "run")
    assert read_state(path)["step"] == step
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == step
    model = load_model(str(path / MODEL_DIR), torch.device("cpu"), torch.float32)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_a_written_directory_has_the_modes_the_umask_gives(tmp_path, tokenizer):
    import os
    import stat

    from conftest import make_model

    from grpo.files import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            make_model(tokenizer).save_pretrained(tmp)  # its model.safetensors is written 0600
    finally:
        os.umask(old)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "model", *(tmp_path / "model").iterdir()]
    }
    assert modes["model"] == 0o755 and modes["model.safetensors"] == 0o644 and modes["config.json"] == 0o644


def test_a_metrics_line_with_a_step_that_is_not_a_number_is_dropped_with_a_warning(tmp_path, capsys):
    from grpo.checkpoint import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": "2"}\n{"step": 2}\n{"step": true}\n{"step": 3}\n')
    truncate_jsonl(path, last_step=2)  # used to raise TypeError ('<=' between str and int)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    err = capsys.readouterr().err
    assert f"{path}:2 is not a whole line of a step" in err and f"{path}:4 is not a whole line" in err


# train.py, with the last checkpoint's save sending SIGTERM to its own process halfway through
SIGTERM_MID_SAVE = """
import os, signal, sys
import grpo.checkpoint, grpo.run, train
write = grpo.checkpoint.write_checkpoint
def write_and_be_stopped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the last checkpoint is being written
    return write(*args, **kwargs)
grpo.run.write_checkpoint = write_and_be_stopped
sys.exit(train.main(sys.argv[1:]))
"""


def test_sigterm_while_the_last_checkpoint_is_written_loses_nothing(tmp_path, tiny_model_dir):
    command = train_command(tiny_model_dir, tmp_path / "run", "--steps", "1", "--save-every", "0")
    process = start([sys.executable, "-c", SIGTERM_MID_SAVE, *command[2:]])
    output = process.communicate(timeout=300)[0]
    # it used to die there (exit 143) with a half-written .step-* directory and nothing to resume
    assert process.returncode == 0, output
    step, path = latest(tmp_path / "run")
    assert step == 1 and read_state(path)["step"] == 1
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert not list((tmp_path / "run" / "checkpoints").glob(".step-*"))


def test_a_checkpoints_bytes_are_its_weights_and_adamws_two_moments():
    from grpo.checkpoint import checkpoint_bytes, parameter_bytes, run_disk_bytes

    first, second = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1, bias=False)  # 8 and 2 float32 numbers
    model = torch.nn.ModuleList([first, second, second])  # `second` twice: a tied tensor counts once
    first.requires_grad_(False)
    assert parameter_bytes(model) == 40 and parameter_bytes(model, trainable=True) == 8
    assert checkpoint_bytes(model) == 40 + 2 * 8  # every weight saved, AdamW's moments of the trainable ones
    assert checkpoint_bytes(model, lora=True) == 8 + 2 * 8  # LoRA saves its (trainable) adapters alone
    assert checkpoint_bytes(model, sharded=True) == 2 * 40 + 2 * 8  # FSDP's shards hold the weights again
    second.to(torch.bfloat16)
    assert parameter_bytes(model, trainable=True) == 4  # in the parameter's own dtype
    # a new checkpoint is written before the oldest kept one goes: keep + 1 at once, fewer when fewer saves
    assert run_disk_bytes(10, saves=5, keep=2) == 30 and run_disk_bytes(10, saves=1, keep=2) == 10
    assert run_disk_bytes(10, saves=5, keep=1, final_model=7) == 27
