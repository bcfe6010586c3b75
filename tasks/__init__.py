"""Tasks: where the examples, the prompts and the rule-based scores of a domain live.

`TASKS` is the registry `--task` chooses from. A new domain is a `grpo.task.Task` subclass in its own file here
and one line below: its name, summary, options, CPU defaults and report score come from the class.
"""

from grpo.task import Example, Reward, Task
from tasks.countdown import CountdownTask
from tasks.jsonl import JsonlTask
from tasks.poetry import PoetryTask

# by name, in the order `--task` lists them; the first is the default
TASKS: dict[str, type[Task]] = {
    CountdownTask.name: CountdownTask,
    PoetryTask.name: PoetryTask,
    JsonlTask.name: JsonlTask,
}


def get_task(name: str, **kwargs) -> Task:
    """Build a task by name (`TASKS`), with its constructor's arguments: `get_task("poetry", data=path)`."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}: choose {', '.join(map(repr, TASKS))}")
    return TASKS[name](**kwargs)


def task_for(options, device: str = "cpu") -> Task:
    """The task a train.py or evaluate.py config names, built from the options that task reads
    (`Task.from_options`). `device`: where poetry's embedding model runs."""
    return TASKS[options.task].from_options(options, device=device)


__all__ = ["TASKS", "Example", "Reward", "Task", "get_task", "task_for"]
