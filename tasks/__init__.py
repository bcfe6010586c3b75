"""Tasks: where the examples, the prompts and the rule-based scores of a domain live."""

from grpo.task import Example, Reward, Task

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


def task_for(options, device: str = "cpu") -> Task:
    """The task a train.py or evaluate.py config names, built from the options that task reads: --data, and
    for jsonl --test-fraction, --system-prompt and --reward-fn. `device`: where poetry's embedding model runs."""
    if options.task == "poetry":
        return get_task("poetry", data=options.data, device=device)
    if options.task == "jsonl":
        return get_task("jsonl", data=options.data, test_fraction=options.test_fraction,
                        system_prompt=options.system_prompt, reward_fn=options.reward_fn,
                        reward_fn_timeout=options.reward_fn_timeout)  # fmt: skip
    return get_task(options.task)


__all__ = ["Example", "Reward", "Task", "get_task", "task_for"]
