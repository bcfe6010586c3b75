"""The house rules a linter does not check: no function of the project's code longer than a screen, and the
README's commands are ones the scripts accept."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONGEST = 60  # lines of a function's body, its docstring left out
# the step itself, read top to bottom beside the README's one-step list: its numbered blocks are the list's
EXEMPT = {("grpo/trainer.py", "Trainer.step")}


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """The lines from a function's first statement after its docstring to its last."""
    body = function.body
    first = body[0]
    if len(body) > 1 and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        first = body[1]
    assert function.end_lineno is not None
    return function.end_lineno - first.lineno + 1


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, function) for every function and method of a module, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, prefix + node.name + ".")


def test_body_lines_counts_from_after_the_docstring():
    tree = ast.parse('def f():\n    """doc\n    more"""\n    a = 1\n\n    return a\n')
    assert body_lines(next(functions(tree))[1]) == 3  # a = 1, the blank line, return a


def test_no_function_is_longer_than_a_screen():
    sources = [*ROOT.glob("grpo/*.py"), *ROOT.glob("tasks/*.py"), *ROOT.glob("tools/*.py"),
               ROOT / "train.py", ROOT / "evaluate.py"]  # fmt: skip
    long = []
    for path in sources:
        name = path.relative_to(ROOT).as_posix()
        for qualname, function in functions(ast.parse(path.read_text())):
            if (name, qualname) not in EXEMPT and body_lines(function) > LONGEST:
                long.append(f"{name}:{qualname} ({body_lines(function)} lines)")
    assert sources and not long, long


def readme_commands(script: str) -> list[list[str]]:
    """The arguments of every `python SCRIPT …` line in the README's bash blocks (a line continued with `\\` read
    as one, a trailing `# …` left out)."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [
        line.split(" #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
    ]
    pattern = re.compile(rf"\S*python3? {re.escape(script)}(.*)")
    return [shlex.split(m.group(1)) for line in lines if (m := pattern.fullmatch(line))]


def test_every_command_the_readme_shows_is_one_the_scripts_accept():
    from evaluate import EvalConfig, build_parser, usage_problem
    from grpo.config import parse_config
    from tasks import TASKS

    # parsed and checked as the scripts do before any model loads; --resume needs a run to read its options
    # from, and --help exits
    trains = [argv for argv in readme_commands("train.py") if not {"--resume", "--help"} & set(argv)]
    evaluations = readme_commands("evaluate.py")
    assert len(trains) >= 10 and len(evaluations) >= 10  # the README's training and evaluation sections
    for argv in trains:
        parse_config(argv, TASKS)  # raises UsageError (one line) on an option or value train.py refuses
    for argv in evaluations:
        config = EvalConfig(**vars(build_parser(prog="evaluate.py").parse_args(argv)))
        assert usage_problem(config) is None, (argv, usage_problem(config))
