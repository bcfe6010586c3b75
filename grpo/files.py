"""Directories written whole or not at all: a model, a checkpoint, a cache entry. A crash while one is written
leaves what was there before, never a half-written directory under its name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """A fresh temporary directory beside `target` to write into; on success it replaces `target` whole, in one
    rename. A crash leaves `target` as it was, and never a half-written directory under its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        yield tmp
        as_umask_allows(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: into a temporary file beside it, then renamed, so a write that
    fails (a full disk) leaves whatever `path` held before, never a torn file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def as_umask_allows(root: Path) -> None:
    """Give `root` and what it holds the modes a plain mkdir and open would have: mkdtemp makes the directory
    0700, and transformers writes model.safetensors 0600 (through a temporary file), so a finished model
    would be unreadable to the machine's other users whatever their umask says."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def save_as_model(
    like: PreTrainedModel, state: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase, path: Path
) -> None:
    """A plain Hugging Face model at `path` with `like`'s architecture and generation config and the weights
    `state` (whole tensors, e.g. on the CPU): for a policy whose own save_pretrained cannot write them (a
    sharded one, or LoRA adapters to be merged in). The model is built on the meta device, so no weights are
    allocated besides `state`'s."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        dtype = next(v.dtype for v in state.values() if v.is_floating_point())
        plain = AutoModelForCausalLM.from_config(like.config, dtype=dtype)
    plain.load_state_dict(state, assign=True, strict=False)
    plain.tie_weights()
    missing = [k for k, v in plain.state_dict().items() if v.is_meta]
    if missing:
        raise RuntimeError(f"{len(missing)} weights have no value to save, e.g. {missing[0]}")
    plain.generation_config = like.generation_config
    plain.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
