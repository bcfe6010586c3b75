"""Bring your own data: prompts with reference answers, one per line of a JSONL or CSV file.

The logprob reward needs nothing but a gold answer per prompt, so any such file is a task, including one
no rule could judge. `--task jsonl --data FILE` reads one example per line (or CSV row, by the suffix .csv):

    {"prompt": "I grow shorter as I work ...", "answer": "candle"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."}],
     "answer": "candle", "id": "riddle-07", "split": "test"}

The file's format, how it is read and split: tasks/jsonl_data.py.

Prompt. The system message is the built-in tasks' format instructions (`FORMAT_INSTRUCTIONS`) or
`system_prompt`, after the example's own system message when it has one; the trainer prefills `<think>`.

Rule score. The format reward, and `exact_match` (the answer equals the gold, case and whitespace ignored),
an extra part that is watched, never counted in the total: a free-text answer is rarely word for word the
gold. Without a scoring function the total is the format reward alone, so `--reward rule` is refused
(`JsonlTask.option_problem`). A scoring function `(example, response) -> number or dict of parts` (`--reward-fn`) makes
the total (format + its score) / 2, as Countdown's (format + equation) / 2; a dict's score is the mean of its
parts. It gets the line's fields (with `id` and `answer`) and the response from `<think>` on. One that raises
or returns anything else scores 0 on that response, with a warning: a bug in it costs a reward, not a run.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from grpo.tags import format_reward, parse_response
from grpo.task import Example, Reward, Task
from tasks.base import FORMAT_INSTRUCTIONS
from tasks.jsonl_data import SPLITS, TEST_FRACTION, build_splits, parse_record, prompt_key, read_examples

# the part a scoring function's number is logged as; the names its dict of parts may not take
FUNCTION_PART = "reward_fn"
REWARD_FN_TIMEOUT = 30.0  # seconds one call of a --reward-fn may take before it scores 0
RESERVED_PARTS = ("format", "exact_match", "score", "total")

RewardFunction = Callable[[dict[str, Any], str], Any]


# ---------------------------------------------------------------- a user's scoring function


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def load_reward_fn(spec: str) -> RewardFunction:
    """The function of `module:function` or `path/to/file.py:function`; ValueError saying why it cannot be."""
    module_name, colon, function_name = spec.rpartition(":")
    if not (colon and module_name and function_name):
        raise ValueError(f"--reward-fn {spec!r}: expected module:function or path/to/file.py:function")
    from_file = module_name.endswith(".py") or "/" in module_name or os.sep in module_name
    if from_file and not Path(module_name).is_file():
        raise ValueError(f"--reward-fn {spec}: {module_name} does not exist")
    try:
        if from_file:
            module_spec = importlib.util.spec_from_file_location(
                f"reward_fn_{Path(module_name).stem}", module_name
            )
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # as an import would: dataclasses and pickle look there
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as err:  # the user's module failed to import, for a reason of its own: name it
        hint = "; a file is given as path/to/file.py:function" if isinstance(err, ModuleNotFoundError) else ""
        raise ValueError(
            f"--reward-fn {spec}: importing {module_name} failed ({_one_line(err)}){hint}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"--reward-fn {spec}: {module_name} has no function {function_name!r}")
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        raise ValueError(
            f"--reward-fn {spec}: {function_name} must take two arguments, (example, response)"
        ) from None
    except ValueError:
        pass  # no signature to read (a builtin): it is judged by what it returns
    return function


def exact_match(answer: str | None, gold: str) -> float:
    """1.0 when the answer is the gold, with case and runs of whitespace ignored, else 0.0."""
    if answer is None:
        return 0.0
    return float(" ".join(answer.casefold().split()) == " ".join(gold.casefold().split()))


# ---------------------------------------------------------------- the task


class JsonlTask(Task):
    """Prompts and gold answers from a file (see the module docstring); `data` None: no examples, for
    scoring the records of a responses file only.

    reward_fn: a scoring function, or its `module:function` / `path/to/file.py:function`.
    """

    name = "jsonl"
    summary = "your own prompts and answers, from --data"
    overlap_field = "prompt"
    options = (
        "data",
        "test_fraction",
        "system_prompt",
        "reward_fn",
        "reward_fn_timeout",
        "max_answer_tokens",
    )
    record_fields = ("prompt", "messages")  # either one: parse_record checks

    @classmethod
    def from_options(cls, options: Any, device: str = "cpu") -> JsonlTask:
        return cls(data=options.data, test_fraction=options.test_fraction, system_prompt=options.system_prompt,
                   reward_fn=options.reward_fn, reward_fn_timeout=options.reward_fn_timeout)  # fmt: skip

    @classmethod
    def option_problem(cls, options: Any, reward: str | None, needs_examples: bool) -> str | None:
        if needs_examples and options.data is None:
            verb = "trains on" if reward is not None else "evaluates the test split of"
            return f"--task jsonl {verb} your examples: give them with --data FILE (.jsonl or .csv)"
        if reward == "rule" and options.reward_fn is None:
            return (
                "--reward rule needs a scoring function, and --task jsonl has none of its own: use --reward "
                "logprob (it needs only the answers), or give one with --reward-fn module:function"
            )
        return None

    def __init__(
        self,
        data: str | os.PathLike | None = None,
        test_fraction: float = TEST_FRACTION,
        system_prompt: str | None = None,
        reward_fn: str | RewardFunction | None = None,
        reward_fn_timeout: float = REWARD_FN_TIMEOUT,
    ):
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
        self.data_path = None if data is None else Path(data)
        self.test_fraction = test_fraction
        self.reward_fn_timeout = reward_fn_timeout  # seconds a call may take (0: no limit)
        self._caller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-fn")
        self.system_prompt = FORMAT_INSTRUCTIONS if system_prompt is None else system_prompt
        examples = [] if data is None else read_examples(data)  # the file's errors first, then the function's
        self.reward_fn = load_reward_fn(reward_fn) if isinstance(reward_fn, str) else reward_fn
        self.reward_fn_spec = (
            reward_fn if reward_fn is None or isinstance(reward_fn, str) else repr(reward_fn)
        )
        self._splits = build_splits(examples, test_fraction)
        self.skipped_long_answers = 0
        self._function_parts: dict[str, None] = {}  # names of the function's parts seen so far, in order
        self._warned: set[str] = set()

    def examples(self, split: str) -> list[Example]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: choose 'train' or 'test'")
        return self._splits[split]

    def report_settings(self) -> dict[str, Any]:
        return {**super().report_settings(), "test_fraction": self.test_fraction,
                "system_prompt": self.system_prompt, "reward_fn": self.reward_fn_spec}  # fmt: skip

    def skip_long_answers(self, tokenizer, max_tokens: int) -> int:
        """Drop the training examples whose answer is longer than `max_tokens` tokens; return how many.

        The logprob reward scores every gold token after every completion, so one long answer sets the
        width of a whole batch's scoring pass. Counted in the policy's tokens, as that reward encodes them.
        """
        train = self._splits["train"]
        short_enough = [
            ex for ex in train if len(tokenizer.encode(ex.gold, add_special_tokens=False)) <= max_tokens
        ]
        self._splits["train"] = short_enough
        self.skipped_long_answers += len(train) - len(short_enough)
        return len(train) - len(short_enough)

    def messages(self, example: Example) -> list[dict[str, str]]:
        data = example.data
        if "prompt" in data:
            turns = [{"role": "user", "content": data["prompt"]}]
        else:
            turns = [dict(message) for message in data["messages"]]
        system = self.system_prompt
        if turns[0]["role"] == "system":
            # the example's own system message, then the format instructions
            own = turns.pop(0)["content"]
            system = f"{own}\n\n{system}" if system else own
        return ([{"role": "system", "content": system}] if system else []) + turns

    def overlap_key(self, example: Example) -> str:
        return prompt_key(example.data)

    def score(self, example: Example, response: str) -> Reward:
        return self.score_batch([example], [response])[0]

    def score_batch(self, examples: Sequence[Example], responses: Sequence[str]) -> list[Reward]:
        responses = [response if isinstance(response, str) else "" for response in responses]
        scored = [self._function_parts_of(ex, r) for ex, r in zip(examples, responses, strict=True)]
        for parts in scored:
            self._function_parts.update(dict.fromkeys(parts or ()))
        rewards = []
        for example, response, parts in zip(examples, responses, scored, strict=True):
            fmt = format_reward(response)
            shown = {"format": fmt, "exact_match": exact_match(parse_response(response).answer, example.gold)}
            if self.reward_fn is None:
                rewards.append(Reward(total=fmt, parts=shown))
                continue
            # every response carries every part seen (metrics average parts by name): a missing one is 0
            shown.update((name, (parts or {}).get(name, 0.0)) for name in self._function_parts)
            # the mean of the parts, each divided first: a mean of finite numbers cannot overflow (their sum
            # can: math.fsum raises OverflowError for 1e308 + 1e308)
            function_score = math.fsum(v / len(parts) for v in parts.values()) if parts else 0.0
            rewards.append(Reward(total=(fmt + function_score) / 2, parts=shown))
        return rewards

    def _function_parts_of(self, example: Example, response: str) -> dict[str, float] | None:
        """The scoring function's parts for one response; None (it scores 0) when it raised or returned
        something that is not a finite number or a dict of them."""
        if self.reward_fn is None:
            return None
        # a deep copy: the function may edit it, nested messages included, without changing later prompts
        fields = copy.deepcopy({**example.data, "id": example.id, "answer": example.gold})
        call = self._caller.submit(self.reward_fn, fields, response)
        try:
            value = call.result(timeout=self.reward_fn_timeout or None)
        except FutureTimeout:
            # a Python call cannot be stopped from outside: it is left to finish on its own thread, and the
            # next calls go to a fresh one, so that one call that never returns cannot hang the run
            self._caller.shutdown(wait=False)
            self._caller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reward-fn")
            self._warn(
                f"--reward-fn took longer than --reward-fn-timeout {self.reward_fn_timeout:g} s", example.id
            )
            return None
        except Exception as err:  # the user's code: any error scores 0, never stops a run
            self._warn(f"--reward-fn raised {_one_line(err)}", example.id)
            return None
        parts = dict(value) if isinstance(value, Mapping) else {FUNCTION_PART: value}
        usable = bool(parts) and all(
            isinstance(name, str)
            and name not in RESERVED_PARTS
            and isinstance(number, numbers.Real)
            and math.isfinite(number)
            for name, number in parts.items()
        )
        if not usable:
            shown = repr(value)
            self._warn(
                f"--reward-fn returned {shown[:80]}{'…' if len(shown) > 80 else ''}: expected a finite "
                f"number or a dict of them (part names other than {', '.join(RESERVED_PARTS)})",
                example.id,
            )
            return None
        return {name: float(number) for name, number in parts.items()}

    def _warn(self, problem: str, example_id: str) -> None:
        # once per distinct problem: a function that always fails would otherwise warn on every response
        if problem not in self._warned:
            self._warned.add(problem)
            message = f"{problem} on example {example_id!r}; scored 0 (the same problem is not warned again)"
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    @staticmethod
    def example_from_record(record: dict[str, Any]) -> Example:
        """An Example from a responses file's line (its fields, as in the data file); ValueError if unusable."""
        return parse_record(record)[0]
