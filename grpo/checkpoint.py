"""Checkpoints that survive a crash: written whole or not at all, found again by `--resume`.

A checkpoint is a directory `RUN_DIR/checkpoints/step-00000042/` holding
    model/               the policy in Hugging Face format (safetensors)
    trainer_state.pt     optimizer, scheduler, every RNG state, step and data position
It is written into a hidden temporary directory and renamed into place (a rename is atomic), so a
directory named `step-*` is always complete; a crash mid-save leaves only a `.step-*` directory, which
is ignored and cleaned up by the next save. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
_NAME = re.compile(r"step-(\d{8})")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, path)."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        match = _NAME.fullmatch(path.name)
        if match and (path / STATE_FILE).is_file() and (path / MODEL_DIR / "config.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def write_checkpoint(run_dir: Path, step: int, policy, tokenizer, state: dict, keep: int) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*"):  # left by a save that crashed
        shutil.rmtree(stale, ignore_errors=True)
    target = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}-"))
    try:
        policy.save_pretrained(tmp / MODEL_DIR, safe_serialization=True)
        tokenizer.save_pretrained(tmp / MODEL_DIR)
        torch.save(state, tmp / STATE_FILE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for _, old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def read_state(checkpoint: Path) -> dict:
    # our own file, written by write_checkpoint: it holds RNG states and Python lists, not only tensors
    return torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=False)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop the lines of steps after `last_step`: they are recomputed, identically, after a resume."""
    import json

    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
