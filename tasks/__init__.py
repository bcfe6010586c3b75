"""Tasks: where the examples, the prompts and the rule-based scores of a domain live."""

from tasks.base import Example, Reward, Task

# the fields by which a record (a line of a completions file) is recognised as an example of each task,
# and those every record must have (poetry's and jsonl's are alternatives, which their own readers check)
RECORD_FIELDS = {
    "math": ("nums", "target"),
    "poetry": ("poem_start", "poem_end", "text"),
    "jsonl": ("prompt", "messages"),
}
REQUIRED_FIELDS = {"math": ("nums", "target"), "poetry": (), "jsonl": ()}


def get_task(name: str, **kwargs) -> Task:
    """Build a task by name: `math` (Countdown), `poetry` or `jsonl` (prompts and answers from a file)."""
    if name == "math":
        from tasks.countdown import CountdownTask

        return CountdownTask(**kwargs)
    if name == "poetry":
        from tasks.poetry import PoetryTask

        return PoetryTask(**kwargs)
    if name == "jsonl":
        from tasks.jsonl import JsonlTask

        return JsonlTask(**kwargs)
    raise ValueError(f"unknown task {name!r}: choose 'math', 'poetry' or 'jsonl'")


__all__ = ["Example", "Reward", "Task", "get_task"]
