"""The functions a reader meets in one step: every function of this project that `train.py` calls, in the order
first called, from its `run` to the first `optimizer.step()` of a `--reward logprob` run, traced rather than
listed by hand (the figures of the README's "One step, in the order to read it" come from it).

    python -m tools.step_walk                  # the walk from train.py's run, one file:function a line, then the counts
    python -m tools.step_walk --task poetry    # another domain's walk

It runs train.py itself on the packaged model (one step: 1 prompt × G 2, 4 new tokens, into a temporary
directory) under `sys.setprofile` and stops it at the first optimizer step. Counted: the functions and methods
of grpo/, tasks/ and train.py (a function defined inside another is read with it and not counted apart; nor
are comprehensions, lambdas and class bodies).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COUNTED = ("grpo/", "tasks/", "train.py")


class _Stepped(Exception):
    """Raised by the first optimizer step, to end the traced run there."""


def walk(task: str = "math") -> list[tuple[str, str]]:
    """(file, function) in the order first called, from train.py's main to the first optimizer.step()."""
    import torch

    import train
    from grpo.run import release_out_dirs

    seen: dict[tuple[str, str], None] = {}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        path = Path(code.co_filename)
        if not path.is_relative_to(ROOT):
            return
        name = path.relative_to(ROOT).as_posix()
        qualname = getattr(code, "co_qualname", code.co_name)
        is_function = bool(code.co_flags & inspect.CO_OPTIMIZED)  # not a module's or a class's body
        if name.startswith(COUNTED) and is_function and "<" not in qualname:
            seen.setdefault((name, qualname), None)

    def stop(*args: Any, **kwargs: Any) -> None:
        raise _Stepped

    out_dir = Path(tempfile.mkdtemp(prefix="step-walk-")) / "run"
    argv = ["--task", task, "--reward", "logprob", "--device", "cpu", "--steps", "1", "--prompts-per-step", "1",
            "--group-size", "2", "--max-new-tokens", "4", "--save-every", "0", "--out-dir", str(out_dir)]  # fmt: skip
    step = torch.optim.AdamW.step
    torch.optim.AdamW.step = stop  # type: ignore[method-assign]
    sys.setprofile(profile)
    try:
        train.run(argv)
    except _Stepped:
        pass
    finally:
        sys.setprofile(None)
        torch.optim.AdamW.step = step  # type: ignore[method-assign]
        release_out_dirs()  # the run directory's lock, as train.py's main frees it
    return list(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.step_walk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="math", help="the domain of the traced run (default: math)")
    args = parser.parse_args(argv)
    functions = walk(args.task)
    files: dict[str, int] = {}
    for i, (name, qualname) in enumerate(functions, start=1):
        print(f"{i:3d}  {name}:{qualname}")
        files[name] = files.get(name, 0) + 1
    print(f"\n{len(functions)} functions in {len(files)} files:")
    for name, n in files.items():
        print(f"  {n:3d}  {name}")
    algorithm = sum(n for name, n in files.items() if not name.startswith("tasks/"))
    print(f"(of which grpo/ and train.py: {algorithm}; the domain, tasks/: {len(functions) - algorithm})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
