"""Tasks: where the examples, the prompts and the rule-based scores of a domain live."""

from tasks.base import Example, Reward, Task

# the fields by which a record (a line of a completions file) is recognised as an example of each task,
# and those every record must have (poetry's are alternatives, which its own reader checks)
RECORD_FIELDS = {"math": ("nums", "target"), "poetry": ("poem_start", "poem_end", "text")}
REQUIRED_FIELDS = {"math": ("nums", "target"), "poetry": ()}


def get_task(name: str, **kwargs) -> Task:
    """Build a task by name: `math` (Countdown) or `poetry`."""
    if name == "math":
        from tasks.countdown import CountdownTask

        return CountdownTask(**kwargs)
    if name == "poetry":
        from tasks.poetry import PoetryTask

        return PoetryTask(**kwargs)
    raise ValueError(f"unknown task {name!r}: choose 'math' or 'poetry'")


__all__ = ["Example", "Reward", "Task", "get_task"]
