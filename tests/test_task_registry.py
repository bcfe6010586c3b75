"""A new domain is one `Task` subclass and one line of `tasks.TASKS`; nothing under grpo/ changes.

The toy domain here, `repeat` (repeat a word), is registered for each test as tasks/__init__.py's line would
register it. It then trains through train.py with its own CPU default, has the options it does not read
refused, refuses what it cannot work with, and is scored from a responses file with its own report score.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import evaluate
import train
from grpo.config import Config, build_parser, parse_config
from grpo.tags import format_reward, parse_response
from grpo.task import Example, Reward, Task
from tasks import TASKS

WORDS = {"train": ["apple", "river", "stone", "cloud"], "test": ["ember", "frost"]}


class RepeatTask(Task):
    name = "repeat"
    summary = "repeat a word"
    cpu_defaults = {"logprob": {"beta": 0.5}}
    record_fields = required_fields = ("word",)

    def examples(self, split):
        return [Example(id=f"{split}-{word}", gold=word) for word in WORDS[split]]

    def messages(self, example):
        return [{"role": "user", "content": f"Repeat the word {example.gold}."}]

    def score(self, example, response):
        fmt = format_reward(response)
        echoed = float(parse_response(response).answer == example.gold)
        return Reward(total=(fmt + echoed) / 2, parts={"format": fmt, "echo": echoed})

    @classmethod
    def option_problem(cls, options, reward, needs_examples):
        if options.max_new_tokens < 4:
            return "--task repeat needs --max-new-tokens ≥ 4 to write its word"
        return None

    def example_from_record(self, record):
        return Example(id=str(record.get("id", record["word"])), gold=str(record["word"]))

    def report_score(self, part_means, total_mean):
        return part_means.get("echo")  # the share of words echoed, not the mean total


@pytest.fixture(autouse=True)
def repeat_registered(monkeypatch):
    monkeypatch.setitem(TASKS, "repeat", RepeatTask)  # what one line of tasks/__init__.py does


def train_main(capsys, *argv) -> tuple[int, str]:
    code = train.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_the_toy_domain_trains_through_train_py_with_its_own_cpu_default(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "run"
    code, err = train_main(
        capsys, "--task", "repeat", "--reward", "logprob", "--model", tiny_model_dir, "--device", "cpu",
        "--steps", "1", "--prompts-per-step", "1", "--group-size", "2", "--max-new-tokens", "4",
        "--save-every", "0", "--out-dir", out,
    )  # fmt: skip
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "repeat" and config["beta"] == 0.5  # its cpu_defaults, not Config's 0.02
    (metrics,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # the task's rule parts are watched beside the logprob reward, each a mean of 0/1 values
    assert 0 <= metrics["rule_echo_mean"] <= 1 and 0 <= metrics["rule_format_mean"] <= 1
    # an option given explicitly still wins over the task's default
    echo = ["--task", "repeat", "--reward", "logprob", "--device", "cpu", "--out-dir", str(tmp_path / "r2")]
    assert parse_config([*echo, "--beta", "0.1"], TASKS).beta == 0.1
    assert parse_config(echo[:2] + echo[4:], TASKS).beta == Config.beta  # no default of its own for rule


def test_the_domain_refuses_what_it_cannot_work_with_before_any_model_loads(tmp_path, capsys):
    code, err = train_main(
        capsys, "--task", "repeat", "--model", tmp_path / "no-model", "--max-new-tokens", "1",
        "--out-dir", tmp_path / "r",
    )  # fmt: skip
    assert (
        code == train.EXIT_USAGE
        and err == "error: --task repeat needs --max-new-tokens ≥ 4 to write its word\n"
    )


def test_options_other_domains_read_are_refused_and_help_lists_the_domain(tmp_path, capsys):
    code, err = train_main(capsys, "--task", "repeat", "--data", "d.csv", "--out-dir", tmp_path / "r")
    assert code == train.EXIT_USAGE
    assert "--data is read by --task poetry and --task jsonl; --task repeat does not read it" in err
    help_text = " ".join(build_parser(TASKS).format_help().split())
    assert "`repeat` (repeat a word)" in help_text


def test_the_toy_domain_is_scored_from_a_completions_file_with_its_own_report_score(tmp_path, capsys):
    lines = [
        {"word": "ember", "response": "<think>easy</think><answer>ember</answer>"},  # format 1, echo 1
        {"word": "frost", "response": "<think>hmm</think><answer>frozen</answer>"},  # format 1, echo 0
    ]
    path = tmp_path / "completions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "report.json"
    assert evaluate.main(["--task", "repeat", "--responses", str(path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["task"] == "repeat" and report["n"] == 2
    assert report["score"] == 0.5  # report_score: the echo part's mean
    assert report["total"]["mean"] == 0.75  # (1 + 1)/2 and (1 + 0)/2, so the score is not the total


def test_no_module_of_grpo_names_a_task():
    """No string in grpo/'s code (docstrings aside) is the name of a registered domain."""
    names = set(TASKS)
    for path in sorted((Path(__file__).parents[1] / "grpo").glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        named = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
        }
        assert not named, f"{path} names the task(s) {sorted(named)}"


def test_no_import_circle_among_the_modules_of_grpo_and_tasks():
    """Every `from X import …` of grpo/ and tasks/, at the top, in a function or under TYPE_CHECKING, makes an
    edge; the graph has no cycle (so each module reads after the ones it imports)."""
    root = Path(__file__).parents[1]
    paths = {p.relative_to(root).with_suffix("").as_posix().replace("/", "."): p
             for p in [*root.glob("grpo/*.py"), *root.glob("tasks/*.py")]}  # fmt: skip
    modules = {name.removesuffix(".__init__"): path for name, path in paths.items()}
    imports: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
                imports[name] |= {t for t in targets if t in modules and t != name}

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        for other in sorted(imports[name]):
            if other in path:
                return [*path[path.index(other) :], other]
            found = cycle_from(other, [*path, other])
            if found:
                return found
        return None

    assert len(modules) > 20  # the walk saw the package
    for name in modules:
        assert cycle_from(name, [name]) is None, " → ".join(cycle_from(name, [name]) or [])
