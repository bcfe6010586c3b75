"""The run directory: one run per directory, held by one process at a time.

prepare_out_dir     refuse a directory that holds another run, or (--overwrite) empty it of that run's files
hold_out_dir        an exclusive lock on OUT_DIR/.lock for as long as the process runs
release_out_dirs    free them again (train.py's main, as it returns)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from grpo.config import UsageError

# everything a run writes into its directory; --overwrite removes exactly these
RUN_FILES = ("config.json", "metrics.jsonl", "samples.jsonl")
RUN_DIRS = ("checkpoints", "final")


LOCK_FILE = ".lock"  # held (flock) by the process that runs in the directory, for as long as it runs
_held_locks: list[int] = []  # the open descriptors of the locks this process holds: closing one frees it


def hold_out_dir(out_dir: Path) -> None:
    """Take `out_dir` for this process: an exclusive lock on OUT_DIR/.lock, held until the process ends (the
    kernel frees it however it ends, SIGKILL included). A second run started there meanwhile, fresh or
    --resume, is refused in one line naming the first one's pid: two runs never mix their files."""
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no lock, as before
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UsageError(
            f"{out_dir} is in use by another run (pid {holder}); wait for it to end, or choose another --out-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held_locks.append(fd)


def release_out_dirs() -> None:
    """Free the directories this process holds (train.py's main, as it returns: a caller in the same process
    may start another run there)."""
    while _held_locks:
        os.close(_held_locks.pop())


def prepare_out_dir(out_dir: Path, overwrite: bool, remove: bool = True) -> None:
    """Make `out_dir` hold one run: refuse a directory that holds another run, or with `overwrite` empty
    it of everything a run writes (files, checkpoints, the final model) so nothing of the old run is left
    for --resume to continue or for a reader to mistake for the new one.

    `remove=False` only checks (the directory can be written; a run there is refused unless `overwrite`):
    train.py checks first and removes the old run only once the new one's data and models have loaded, so
    that a typo in --model or an empty --data never costs the old run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} is a file, not a directory")
    found = [out_dir / name for name in RUN_FILES + RUN_DIRS if (out_dir / name).exists()]
    found += list(out_dir.glob(".final-*")) if out_dir.is_dir() else []  # a save interrupted mid-write
    if found:
        if not overwrite:
            raise UsageError(f"{out_dir} already holds a run; choose another --out-dir or pass --overwrite")
        if not remove:
            return
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"--overwrite: removed the previous run's {', '.join(p.name for p in found)} from {out_dir}",
              file=sys.stderr)  # fmt: skip
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"--out-dir {out_dir} cannot be written ({err.strerror})") from None
