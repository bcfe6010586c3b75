"""Checkpoints that survive a crash: written whole or not at all, found again by `--resume`.

A checkpoint is a directory `RUN_DIR/checkpoints/step-00000042/` holding
    model/               the policy in Hugging Face format (safetensors); with LoRA, its adapters in PEFT's
    trainer_state.pt     optimizer, scheduler, every RNG state, step and data position
    sharded/             FSDP only: each rank's shards of the weights and of AdamW's state (whose
                         trainer_state.pt then holds no optimizer), read back by as many ranks
It is written into a hidden temporary directory and renamed into place (a rename is atomic), so a
directory named `step-*` is always complete; a crash mid-save leaves only a `.step-*` directory, which
is ignored and cleaned up by the next save. Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from grpo.files import atomic_directory, atomic_write_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from grpo.models import CausalLM

STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
SHARDED_DIR = (
    "sharded"  # FSDP: every rank's shards of the weights and AdamW state (torch.distributed.checkpoint)
)
_NAME = re.compile(r"step-(\d{8})")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (step, path)."""
    root = Path(run_dir) / "checkpoints"
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        match = _NAME.fullmatch(path.name)
        if match and not missing_files(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


MODEL_CONFIGS = ("config.json", "adapter_config.json")  # a whole model's, or (LoRA) its adapters'


def model_config(model_dir: Path) -> Path | None:
    """The config file of a saved model or of saved LoRA adapters, None if there is neither."""
    found = [model_dir / name for name in MODEL_CONFIGS if (model_dir / name).is_file()]
    return found[0] if found else None


def missing_files(checkpoint: Path) -> list[str]:
    """The files a complete checkpoint has and `checkpoint` lacks (none: it is complete)."""
    missing = [] if (checkpoint / STATE_FILE).is_file() else [STATE_FILE]
    if model_config(checkpoint / MODEL_DIR) is None:
        missing.append(f"{MODEL_DIR}/config.json")
    return missing


def shards_dir(run_dir: Path, step: int) -> Path:
    """Where every rank of an FSDP run writes its shards of a checkpoint, before rank 0 moves them into it."""
    return Path(run_dir) / "checkpoints" / f".shards-step-{step:08d}"


def write_checkpoint(
    run_dir: Path,
    step: int,
    policy: CausalLM,
    tokenizer: PreTrainedTokenizerBase,
    state: dict,
    keep: int,
    weights: dict[str, torch.Tensor] | None = None,
) -> Path:
    """`weights` (FSDP: the policy gathered whole) are saved as the model instead of `policy.save_pretrained`;
    the shards the ranks wrote to `shards_dir` (FSDP) move into the checkpoint as `sharded/`."""
    from grpo.files import save_as_model
    from grpo.models import unwrapped

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    shards = shards_dir(run_dir, step)
    for stale in [*root.glob(".step-*"), *root.glob(".shards-step-*")]:  # left by a save that crashed
        if stale != shards:
            shutil.rmtree(stale, ignore_errors=True)
    target = root / f"step-{step:08d}"
    with atomic_directory(target) as tmp:
        if weights is None:
            # PEFT types the directory as a str; it takes any path, as transformers does
            policy.save_pretrained(tmp / MODEL_DIR, safe_serialization=True)  # type: ignore[arg-type]
            tokenizer.save_pretrained(tmp / MODEL_DIR)
        else:
            save_as_model(unwrapped(policy), weights, tokenizer, tmp / MODEL_DIR)
        if shards.is_dir():
            os.replace(shards, tmp / SHARDED_DIR)
        torch.save(state, tmp / STATE_FILE)
    for _, old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


class DiskFull(RuntimeError):
    """The disk filled up while the run wrote to it. The run stops there; what it wrote before stays whole (a
    checkpoint or model half-written is removed, a torn last line of metrics.jsonl is dropped on resume)."""


def disk_full(run_dir: Path, step: int) -> DiskFull:
    """The error a run stops with when a write finds the disk of `run_dir` full after `step` steps: what it
    kept, and how to go on."""
    found = checkpoints(run_dir)
    if found:
        kept, then = (
            f"its newest complete checkpoint is {found[-1][1]}",
            f"python train.py --resume {run_dir}",
        )
    else:
        kept, then = "it has no complete checkpoint yet", "start it again (--overwrite)"
    return DiskFull(
        f"the disk of {run_dir} is full: the run stopped after step {step}, and {kept}. Free space (or lower "
        f"--keep-checkpoints), then {then}"
    )


def parameter_bytes(model: torch.nn.Module, trainable: bool = False) -> int:
    """The bytes of `model`'s parameters (a tied tensor once), or of its trainable ones only."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not trainable)


def checkpoint_bytes(policy: torch.nn.Module, lora: bool = False, sharded: bool = False) -> int:
    """About the bytes one checkpoint takes on disk: the weights it saves (with LoRA, the adapters alone) and
    AdamW's two moments of every trainable parameter, each in its parameter's dtype; with FSDP (`sharded`) the
    shards hold the weights once more."""
    trainable = parameter_bytes(policy, trainable=True)
    saved = trainable if lora else parameter_bytes(policy)
    return saved * (2 if sharded else 1) + 2 * trainable


def run_disk_bytes(per_checkpoint: int, saves: int, keep: int, final_model: int = 0) -> int:
    """The most bytes a run's checkpoints hold at once: a new checkpoint is written whole before the oldest of
    the `keep` kept goes, so keep + 1 of them (fewer when the run saves fewer), and `final_model`: final/ links
    the last checkpoint's weights (0), but a LoRA run's final model is merged (its weights whole)."""
    return min(keep + 1, saves) * per_checkpoint + final_model


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files cannot be read (a disk that filled up, a copy cut short, …)."""


def read_state(checkpoint: Path) -> dict:
    path = Path(checkpoint) / STATE_FILE
    try:
        # our own file, written by write_checkpoint: it holds RNG states and Python lists, not only tensors
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch.load raises RuntimeError, EOFError, UnpicklingError, … on damage
        raise DamagedCheckpoint(f"{path} is damaged ({err.__class__.__name__}: {str(err)[:120]})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise DamagedCheckpoint(f"{path} is not a trainer state written by train.py")
    return state


def check_model_files(model_dir: Path) -> None:
    """Raise DamagedCheckpoint unless the model's config parses and its safetensors headers read."""
    import json

    from safetensors import safe_open

    try:
        json.loads((model_config(model_dir) or model_dir / "config.json").read_text())
        weights = sorted(model_dir.glob("*.safetensors"))
        if not weights:
            raise FileNotFoundError("no *.safetensors file")
        for file in weights:
            with safe_open(file, framework="pt") as f:
                f.keys()
    except Exception as err:  # JSONDecodeError, SafetensorError, OSError, …
        raise DamagedCheckpoint(
            f"{model_dir} is damaged ({err.__class__.__name__}: {str(err)[:120]})"
        ) from None


def resumable_checkpoint(run_dir: Path, run_id: str | None) -> tuple[Path, dict]:
    """The newest checkpoint of `run_dir` that reads whole, and its state; an older one when the newest
    is damaged (with a warning). Refuses a checkpoint written by another run (a different run id)."""
    import sys

    found = checkpoints(run_dir)
    complete = {path for _, path in found}
    root = Path(run_dir) / "checkpoints"
    for path in sorted(root.glob("step-*")) if root.is_dir() else []:  # named, not skipped in silence
        if _NAME.fullmatch(path.name) and path not in complete:
            missing = " and no ".join(missing_files(path))
            print(f"warning: {path} is incomplete (no {missing}); skipped", file=sys.stderr)
    if not found:
        raise DamagedCheckpoint(f"no complete checkpoint under {root}")
    for _, path in reversed(found):
        try:
            check_model_files(path / MODEL_DIR)
            state = read_state(path)
        except DamagedCheckpoint as err:
            print(f"warning: {err}; trying the checkpoint before it", file=sys.stderr)
            continue
        if state.get("run_id") != run_id:
            raise DamagedCheckpoint(
                f"{path} was written by run {state.get('run_id')!r}, but {run_dir}/config.json belongs to run "
                f"{run_id!r}: the directory mixes two runs, so it cannot be resumed"
            )
        return path, state
    raise DamagedCheckpoint(f"every checkpoint under {Path(run_dir) / 'checkpoints'} is damaged")


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop the lines of steps after `last_step`: they are recomputed, identically, after a resume.

    A line that is not a JSON object with a whole-number step (the torn last line of a crash mid-write, a line
    edited by hand) is dropped too, with a warning: it belongs to a step that is recomputed.
    """
    import json
    import sys

    if not path.exists():
        return
    before = []  # the lines of the steps up to last_step
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
            if not isinstance(step, int) or isinstance(step, bool):
                raise TypeError(f"step {step!r} is not a whole number")
        except (json.JSONDecodeError, TypeError, KeyError):
            print(f"warning: {path}:{number} is not a whole line of a step (a crash mid-write?); dropped",
                  file=sys.stderr)  # fmt: skip
            continue
        if step <= last_step:
            before.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in before))
