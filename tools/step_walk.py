"""The functions a reader meets in one step: every function of this project that one GRPO step of a
`--reward logprob` run calls by name, in the order first called, from `Trainer.step` to the first
`optimizer.step()`, traced rather than listed by hand. The README's "One step, in the order to read it" is
this walk (a test checks that the two agree).

    python -m tools.step_walk                  # the step's walk, one file:function a line, then the counts
    python -m tools.step_walk --setup          # and, first, what train.py's run calls before the step
    python -m tools.step_walk --task poetry    # another domain's walk
    python -m tools.step_walk --markdown       # the README's list of the step, to paste between its markers

It runs train.py itself on the packaged model (one step: 1 prompt × G 2, 4 new tokens, into a temporary
directory) under `sys.setprofile` and stops it at the first optimizer step. Counted: the functions and methods
of grpo/, tasks/ and train.py (a function defined inside another is read with it and not counted apart; nor
are comprehensions, lambdas and class bodies). A function is met when the project's own code calls it, by name
or through `with` or a module's `__call__`; the methods that transformers calls back (the KV cache's `update`,
…) are the library's side of an interface and are listed apart, with what they alone call (read with them). A domain's helpers (a function of tasks/
called from tasks/) are the domain's reading, not the algorithm's: counted apart too. Of the functions on the
list, the step's machinery (MACHINERY: the decode engine, precision, ranks, timing) is marked and its count given
apart from the algorithm's.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
COUNTED = ("grpo/", "tasks/", "train.py")
STEP = ("grpo/trainer.py", "Trainer.step")  # where the step begins; what runs before it is the set-up
PHASE = ("grpo/trainer.py", "Trainer.phase")  # a block of the step: rollout, reward, reference, update
# The step's machinery: what makes the step fast (the decode engine), exact in mixed precision, spread over ranks,
# or timed. The algorithm reads past it (`with self.phase(...), self.whole(...), self.autocast(...)`; a cache
# made, a decode step called; a gather of the batch's rewards), so a first reading can too: the walk lists it
# with the rest, marked, and counts it apart.
MACHINERY_FILES = ("grpo/decode.py", "grpo/precision.py", "grpo/distributed.py")
MACHINERY = {("grpo/trainer.py", name) for name in ("Trainer.phase", "Trainer.whole", "Trainer.autocast")}
# the frames between a caller and the function it names: `with` (contextlib), a module's __call__, a decorator
PASS_THROUGH = ("contextlib.py", "torch/nn/modules/module.py", "torch/utils/_contextlib.py")


@dataclass(frozen=True)
class Function:
    file: str  # relative to the repository: grpo/rollout.py
    name: str  # qualified: Trainer.step
    part: str  # "setup" (before Trainer.step) or "step"
    phase: str  # the step's phase it is first called in (Trainer.phase's name; "prompts" before the first)
    met: str  # "read" (the project calls it), "callback" (a library does), "domain" (the domain's own helper)
    caller: str | None  # the file whose code first called it (None: a library)

    def __str__(self) -> str:
        return f"{self.file}:{self.name}"


class _Stepped(Exception):
    """Raised by the first optimizer step, to end the traced run there."""


def _relative(path: str) -> str | None:
    """A file's path in the repository when it is one of the counted files, else None."""
    file = Path(path)
    if not file.is_relative_to(ROOT):
        return None
    name = file.relative_to(ROOT).as_posix()
    return name if name.startswith(COUNTED) else None


def _caller(frame: FrameType) -> tuple[str, str] | None:
    """The counted (file, function) whose code called `frame`'s function, past `with`, __call__ and decorators;
    or None (a library called it)."""
    caller = frame.f_back
    while caller is not None and caller.f_code.co_filename.replace("\\", "/").endswith(PASS_THROUGH):
        caller = caller.f_back
    if caller is None or (file := _relative(caller.f_code.co_filename)) is None:
        return None
    return file, getattr(caller.f_code, "co_qualname", caller.f_code.co_name)


def _met(name: str, caller: Function | str | None) -> str:
    """How a reader meets a function of file `name` called by `caller` (the function met before, or a file;
    None: a library) (Function.met): what a callback of the step calls is read with the callback."""
    if caller is None or (
        isinstance(caller, Function) and caller.met == "callback" and caller.part == "step"
    ):
        return "callback"
    file = caller.file if isinstance(caller, Function) else caller
    return "domain" if file.startswith("tasks/") and name.startswith("tasks/") else "read"


def walk(task: str = "math") -> list[Function]:
    """Every function of the project called from train.py's run to the first optimizer.step(), once each, in
    the order first called."""
    import torch

    import train
    from grpo.run_dir import release_out_dirs

    seen: dict[tuple[str, str], Function] = {}
    part, phase = ["setup"], ["prompts"]
    done: set[CodeType] = (
        set()
    )  # code not counted, or counted already: one set lookup a call (the run is long)

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code in done:
            return
        code = frame.f_code
        name = _relative(code.co_filename)
        qualname = getattr(code, "co_qualname", code.co_name)
        is_function = bool(code.co_flags & inspect.CO_OPTIMIZED)  # not a module's or a class's body
        if name is None or not is_function or "<" in qualname:
            done.add(code)
            return
        if (name, qualname) == PHASE:  # watched at every call: each names the block it opens
            phase[0] = frame.f_locals["name"]
        elif (name, qualname) in seen:
            done.add(code)
        if (name, qualname) in seen:
            return
        if (name, qualname) == STEP:
            part[0] = "step"
        called_by = _caller(frame)
        caller = None if called_by is None else seen.get(called_by, called_by[0])
        met = _met(name, caller)
        seen[name, qualname] = Function(
            name, qualname, part[0], phase[0], met, None if called_by is None else called_by[0]
        )

    def stop(*args: Any, **kwargs: Any) -> None:
        sys.setprofile(None)  # what unwinds from here (the run's `with` blocks) is not the step
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
    return list(seen.values())


def reading(functions: list[Function]) -> list[Function]:
    """The step as a reader meets it: the functions of the step that the project's code calls."""
    return [f for f in functions if f.part == "step" and f.met == "read"]


# Trainer.step's numbered blocks, by the name its phase blocks take (the first block times nothing)
PHASES = {"prompts": "0. Prompts", "rollout": "1. Rollout", "reward": "2–3. Rewards and advantages",
          "reference": "4. Reference", "update": "5. Update"}  # fmt: skip


def is_machinery(function: Function) -> bool:
    """Whether `function` is the step's machinery (MACHINERY) rather than its algorithm."""
    return function.file in MACHINERY_FILES or (function.file, function.name) in MACHINERY


def markdown(functions: list[Function]) -> str:
    """The README's list of the step: one line per block of Trainer.step, its functions in the order first
    called, each as `file:function`, the machinery's in italics."""
    steps = reading(functions)
    lines = []
    for phase, title in PHASES.items():
        names = ", ".join(f"*`{f}`*" if is_machinery(f) else f"`{f}`" for f in steps if f.phase == phase)
        lines.append(textwrap.fill(f"- {title}: {names}", width=110, subsequent_indent="  ",
                                   break_long_words=False, break_on_hyphens=False))  # fmt: skip
    return "\n".join(lines)


def counts(functions: list[Function]) -> str:
    """`N functions in F files`."""
    return f"{len(functions)} functions in {len({f.file for f in functions})} files"


def returns(functions: list[Function]) -> int:
    """How often the list goes back to a file it left earlier: a reader's page-turns back."""
    back, left = 0, set()
    for before, f in itertools.pairwise(functions):
        if f.file != before.file:
            left.add(before.file)
            back += f.file in left
    return back


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.step_walk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="math", help="the domain of the traced run (default: math)")
    parser.add_argument(
        "--setup", action="store_true", help="also list what train.py's run calls before the step"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="the README's list of the step, and only that"
    )
    args = parser.parse_args(argv)
    functions = walk(args.task)
    if args.markdown:
        print(markdown(functions))
        return 0
    setup = [f for f in functions if f.part == "setup"]
    if args.setup:
        print(f"set-up, train.py's run to Trainer.step: {counts(setup)}")
        for f in setup:
            print(f"       {f}")
        print()
    steps = reading(functions)
    print(f"one step, Trainer.step to the first optimizer.step(): {counts(steps)}, {returns(steps)} returns to a "
          "file left earlier")  # fmt: skip
    algorithm = [f for f in steps if not is_machinery(f)]
    print(f"of which the algorithm: {counts(algorithm)}, {returns(algorithm)} returns; the machinery (marked *): "
          f"{len(steps) - len(algorithm)}")  # fmt: skip
    for i, f in enumerate(steps, start=1):
        print(f"{i:3d}  {f.phase:<9}  {'*' if is_machinery(f) else ' '} {f}")
    for kind, what in (
        ("domain", "the domain's own helpers"),
        ("callback", "called back by transformers/torch"),
    ):
        apart = [f for f in functions if f.part == "step" and f.met == kind]
        print(f"\napart, {what}: {len(apart)}" + "".join(f"\n       {f}" for f in apart))
    print(f"\nthe set-up before it: {counts(setup)} (--setup lists them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
