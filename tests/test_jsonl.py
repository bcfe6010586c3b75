"""Bring your own data (`--task jsonl --data FILE`): reading and checking a file, the hashed split, the prompt,
the scores with and without a user's scoring function, and a round trip through train.py and evaluate.py
on the tests' tiny model (whose tokenizer has one token per character, so token counts are lengths)."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import pytest
from conftest import make_model

import evaluate
import train
from grpo.config import Config
from grpo.evaluation import evaluate_model
from grpo.rollout import build_prompt
from grpo.trainer import Trainer
from tasks import get_task
from tasks.base import FORMAT_INSTRUCTIONS
from tasks.jsonl import JsonlTask, exact_match, load_reward_fn
from tasks.jsonl_data import held_out
from tasks.responses import score_responses_file

REPO = Path(__file__).resolve().parents[1]
WELL_FORMED = "<think>it burns</think>\n<answer>{}</answer>"


def write_lines(path, records) -> str:
    """Write JSON lines (a str is written as it is) and return the path as a string."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# ----------------------------------------------------------------------------------------------------
# Reading a file


def test_a_file_becomes_examples_with_their_fields(tmp_path):
    data = write_lines(
        tmp_path / "d.jsonl",
        [
            {"prompt": "What burns at its head?", "answer": "  candle \n", "id": 7, "hint": "wax"},
            "",  # blank lines are skipped
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What has a neck but no head?"},
                ],
                "answer": "bottle",
                "split": "test",
            },
        ],
    )
    task = JsonlTask(data, test_fraction=0.0)  # nothing held out by the hash: only the given split
    (train_example,), (test_example,) = task.examples("train"), task.examples("test")
    assert train_example.id == "7" and train_example.gold == "candle"  # surrounding whitespace dropped
    assert train_example.data == {"prompt": "What burns at its head?", "hint": "wax"}  # extra fields kept
    # no id: the first 12 hex digits of SHA-1 over the messages' sorted-key JSON, "\x1f" and the answer,
    # the same on every run and every machine (pinned: a change of the formula renames every example)
    assert test_example.id == "jsonl-7c9480201522"


def test_a_csv_file_is_read_by_its_suffix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,prompt,answer,split\n,"Two lines:\nwhat am I?",echo,\nb,Cold and white?,snow,test\n')
    task = JsonlTask(str(path), test_fraction=0.0)
    (first,), (second,) = task.examples("train"), task.examples("test")
    assert first.data == {"prompt": "Two lines:\nwhat am I?"} and first.gold == "echo"
    assert first.id.startswith("jsonl-")  # an empty id cell is no id
    assert (second.id, second.gold) == ("b", "snow")


def test_messages_add_the_format_instructions_of_the_built_in_tasks(tmp_path, tokenizer):
    data = write_lines(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Q1?", "answer": "a"},
            {
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q2?"}],
                "answer": "b",
            },  # fmt: skip
        ],
    )
    plain, chat = JsonlTask(data, test_fraction=0.0).examples("train")
    task = JsonlTask(data, test_fraction=0.0)
    assert FORMAT_INSTRUCTIONS.startswith("Reason step by step inside <think> </think> first")
    assert task.messages(plain) == [
        {"role": "system", "content": FORMAT_INSTRUCTIONS},
        {"role": "user", "content": "Q1?"},
    ]
    # the example's own system message first, then the instructions
    assert task.messages(chat)[0] == {"role": "system", "content": "Be brief.\n\n" + FORMAT_INSTRUCTIONS}
    # the prompt as the trainer builds it: the chat template, then the <think> prefill
    assert (
        tokenizer.decode(build_prompt(tokenizer, task.messages(plain)))
        == f"<|system|>{FORMAT_INSTRUCTIONS}\n<|user|>Q1?\n<|assistant|>Let me think it through first.\n<think>"
    )
    own = JsonlTask(data, test_fraction=0.0, system_prompt="Answer in one word.")
    assert own.messages(plain)[0] == {"role": "system", "content": "Answer in one word."}
    assert own.messages(chat)[0] == {"role": "system", "content": "Be brief.\n\nAnswer in one word."}
    assert JsonlTask(data, test_fraction=0.0, system_prompt="").messages(plain) == [
        {"role": "user", "content": "Q1?"}
    ]


def test_the_example_file_reads_and_every_riddle_has_a_one_or_two_word_answer():
    task = get_task("jsonl", data=REPO / "examples" / "riddles.jsonl")
    train_examples, test_examples = task.examples("train"), task.examples("test")
    assert len(train_examples) + len(test_examples) == 40
    # 8 lines say "split": "test"; the hash holds out 1 of the other 32 at the default 10%
    assert len(test_examples) == 9
    assert all(1 <= len(ex.gold.split()) <= 2 for ex in train_examples + test_examples)


# ----------------------------------------------------------------------------------------------------
# The split


def questions(n: int, changed: dict[int, str] | None = None) -> list[dict]:
    changed = changed or {}
    return [{"prompt": changed.get(i, f"question {i}"), "answer": f"answer {i}"} for i in range(n)]


def split_of(task: JsonlTask) -> dict[str, str]:
    return {ex.data["prompt"]: split for split in ("train", "test") for ex in task.examples(split)}


def test_the_hashed_split_is_pinned_and_the_same_for_the_same_file(tmp_path):
    data = write_lines(tmp_path / "d.jsonl", questions(20))
    task = JsonlTask(data, test_fraction=0.3)
    # pinned: a new version that split users' files differently would silently move examples between splits
    assert [ex.data["prompt"] for ex in task.examples("test")] == [
        f"question {i}" for i in (2, 8, 9, 11, 13, 17, 18)
    ]
    # the rule, written out once: SHA-256 of the prompt as a number in [0, 1), held out below the fraction
    u = int.from_bytes(hashlib.sha256(b"jsonl-split\x1fquestion 2").digest()[:8], "big") / 2**64
    assert u < 0.3 and held_out("question 2", 0.3) and not held_out("question 2", u)
    assert split_of(JsonlTask(data, test_fraction=0.3)) == split_of(task)
    # a smaller fraction holds out a subset: evaluating at it never scores an example trained on at 0.3
    assert [ex.data["prompt"] for ex in JsonlTask(data, test_fraction=0.1).examples("test")] == [
        "question 8",
        "question 17",
    ]


def test_changing_or_adding_a_line_moves_no_other(tmp_path):
    before = split_of(JsonlTask(write_lines(tmp_path / "a.jsonl", questions(50)), test_fraction=0.3))
    edited = questions(50, changed={5: "a rewritten question"}) + [{"prompt": "a new one", "answer": "x"}]
    after = split_of(
        JsonlTask(write_lines(tmp_path / "b.jsonl", edited[::-1]), test_fraction=0.3)
    )  # reversed
    assert {q: s for q, s in after.items() if q in before} == {
        q: s for q, s in before.items() if q != "question 5"
    }
    assert set(before.values()) == {"train", "test"}  # both sides are populated, so the check can fail


def test_a_given_split_wins_and_one_prompt_stays_on_one_side(tmp_path):
    lines = [
        {"prompt": "question 2", "answer": "a", "split": "train"},  # the hash would hold it out at 0.3
        {"prompt": "question 8", "answer": "first answer"},
        {"prompt": "question 8", "answer": "second answer"},
    ]
    task = JsonlTask(write_lines(tmp_path / "d.jsonl", lines), test_fraction=0.3)
    assert [ex.gold for ex in task.examples("train")] == ["a"]
    assert [ex.gold for ex in task.examples("test")] == ["first answer", "second answer"]


def test_evaluation_compares_prompts_not_the_short_answers_that_repeat(tmp_path, tokenizer, tiny_model):
    lines = [{"prompt": f"Is {n} even?", "answer": "yes" if n % 2 == 0 else "no", "split": split}
             for n, split in ((2, "train"), (3, "train"), (4, "test"), (5, "test"))]  # fmt: skip
    task = JsonlTask(write_lines(tmp_path / "d.jsonl", lines))
    report = evaluate_model(tiny_model, tokenizer, task, max_new_tokens=2, progress=False)
    assert report["n"] == 2  # "yes" and "no" are in both splits: not an overlap
    # a line's own `split` that puts a training prompt (case and spacing aside) in the test split is refused
    # when the file is read, not by evaluation in the middle of a run
    lines.append({"prompt": "is 2  EVEN?", "answer": "yes", "split": "test", "id": "again"})
    with pytest.raises(
        ValueError, match=re.escape("1 test example(s) ('again') have the prompt of a training")
    ):
        JsonlTask(write_lines(tmp_path / "leaky.jsonl", lines))


def test_prompts_that_differ_in_case_or_spacing_land_on_the_same_side():
    from tasks.jsonl_data import held_out

    prompts = [f"Riddle number {n}: what am I?" for n in range(200)]
    sides = [held_out(p, 0.3) for p in prompts]
    assert 20 < sum(sides) < 100  # the hash does split them
    assert [held_out(p.upper(), 0.3) for p in prompts] == sides
    assert [held_out("  " + p.replace(" ", "\t "), 0.3) for p in prompts] == sides


# ----------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the line, exit 2, before any model loads

BAD_LINES = [
    (['{"prompt": "q", "answer": "a"}', '{"prompt": "q2", "answer": '], 2, "not valid JSON (Expecting value"),
    (['["q", "a"]'], 1, "expected a JSON object, got an array"),
    ([{"prompt": "q"}], 1, "missing field 'answer'"),
    ([{"prompt": "q", "answer": "  "}], 1, "'answer' is empty"),
    ([{"prompt": "q", "answer": 42}], 1, "'answer' must be a string, got a number"),
    ([{"prompt": ["q"], "answer": "a"}], 1, "'prompt' must be a string, got an array"),
    ([{"prompt": "", "answer": "a"}], 1, "'prompt' is empty"),
    ([{"question": "q", "answer": "a"}], 1, "needs 'prompt' (a string) or 'messages'"),
    ([{"prompt": "q", "messages": [], "answer": "a"}], 1, "has both 'prompt' and 'messages'"),
    (
        [{"messages": "q", "answer": "a"}],
        1,
        "'messages' must be a non-empty list of chat messages, got a string",
    ),
    (
        [
            {
                "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                "answer": "a",
            }
        ],
        1,
        "the last message must be the user's",
    ),  # fmt: skip
    (
        [{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}], "answer": "a"}],
        1,
        "messages[1]: a system message may only come first",
    ),  # fmt: skip
    ([{"messages": [{"role": "bot", "content": "q"}], "answer": "a"}], 1, 'messages[0] must be {"role"'),
    (
        [{"prompt": "q", "answer": "a"}, {"prompt": "q2", "answer": "b", "split": "dev"}],
        2,
        "'split' must be 'train' or 'test', got \"dev\"",
    ),  # fmt: skip
    (
        [{"prompt": "q", "answer": "a", "id": True}],
        1,
        "'id' must be a non-empty string or a number, got true",
    ),
    (
        [
            {"prompt": "q", "answer": "a", "id": "x"},
            {"prompt": "p", "answer": "b"},
            {"prompt": "r", "answer": "c", "id": "x"},
        ],
        3,
        "id 'x' is also on line 1",
    ),  # fmt: skip
    (
        [{"prompt": "q", "answer": "a"}, {"prompt": "q", "answer": "a"}],
        2,
        "the same prompt and answer as line 1",
    ),
]


def train_errors(argv, capsys) -> tuple[int, str]:
    code = train.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def refused(tmp_path, capsys, data, *extra) -> str:
    """train.py's error for `data`, with a model that does not exist: a refusal that names the data came
    before any model (or tokenizer) loaded."""
    argv = ["--task", "jsonl", "--data", data, "--reward", "logprob", "--model", tmp_path / "no-model",
            "--out-dir", tmp_path / "run", *extra]  # fmt: skip
    code, err = train_errors(argv, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "no-model" not in err, err  # the data was refused first
    return err.strip()


@pytest.mark.parametrize("lines, line, message", BAD_LINES)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, capsys, lines, line, message):
    data = write_lines(tmp_path / "d.jsonl", lines)
    err = refused(tmp_path, capsys, data)
    assert err.startswith(f"error: --task jsonl: {data}:{line}: ") and message in err, err


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", "", "the file is empty"),
        ("blank.jsonl", "\n  \n", "the file is empty"),
        ("latin1.jsonl", b'{"prompt": "caf\xe9", "answer": "a"}\n', "not UTF-8 text"),
        ("d.csv", "prompt,gold\nq,a\n", "missing CSV column(s) answer (found: prompt, gold)"),
        ("bad.csv", "prompt,answer,split\nq,a,train\nr,b,validation\n", "bad.csv:3: 'split' must be"),
        ("wide.csv", "prompt,answer\nq,a,extra\n", "wide.csv:2: more values than the 2 columns"),
        ("all-test.jsonl", '{"prompt": "q", "answer": "a", "split": "test"}\n', "none is left to train on"),
    ],
)
def test_an_unusable_file_is_refused(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = refused(tmp_path, capsys, path)
    assert err.startswith(f"error: --task jsonl: {path}") and message in err, err


def test_a_missing_file_and_a_missing_data_option_are_refused(tmp_path, capsys):
    err = refused(tmp_path, capsys, tmp_path / "nope.jsonl")
    assert f"data file {tmp_path / 'nope.jsonl'} does not exist" in err
    code, err = train_errors(
        ["--task", "jsonl", "--reward", "logprob", "--out-dir", tmp_path / "run"], capsys
    )
    assert code == 2 and "--task jsonl trains on your examples: give them with --data FILE" in err


# ----------------------------------------------------------------------------------------------------
# Rewards


@pytest.fixture
def riddles(tmp_path):
    lines = [{"prompt": "What burns at its head?", "answer": "candle", "id": "c", "hint": "wax"},
             {"prompt": "What is cold and white?", "answer": "snow", "id": "s"}]  # fmt: skip
    return write_lines(tmp_path / "riddles.jsonl", lines)


def test_rule_reward_without_a_scoring_function_is_refused(tmp_path, capsys, riddles):
    err = refused(tmp_path, capsys, riddles, "--reward", "rule")
    assert "--reward rule needs a scoring function" in err
    assert "use --reward logprob" in err and "--reward-fn module:function" in err


def test_exact_match_ignores_case_and_whitespace():
    assert exact_match("  The\n Candle ", "the candle") == 1.0
    assert exact_match("candles", "candle") == 0.0
    assert exact_match("a candle", "candle") == 0.0  # exact: a scoring function can be kinder
    assert exact_match(None, "candle") == 0.0


def test_without_a_scoring_function_the_total_is_the_format_reward(riddles):
    task = JsonlTask(riddles, test_fraction=0.0)
    candle = task.examples("train")[0]
    scores = task.score_batch(
        [candle] * 3, [WELL_FORMED.format(" CANDLE "), WELL_FORMED.format("wax"), "<think>no answer"]
    )
    assert [r.parts for r in scores] == [
        {"format": 1.0, "exact_match": 1.0},
        {"format": 1.0, "exact_match": 0.0},
        {"format": 0.0, "exact_match": 0.0},
    ]
    assert [r.total for r in scores] == [1.0, 1.0, 0.0]  # exact match is watched, not counted


def test_a_scoring_function_gets_the_fields_and_makes_the_rule_reward(riddles):
    seen = []

    def half_if_wax(example, completion):
        seen.append((example, completion))
        example["answer"] = "changed"  # the task's copy is not the function's
        return 0.5 if "wax" in completion else 0.0

    task = JsonlTask(riddles, test_fraction=0.0, reward_fn=half_if_wax)
    candle = task.examples("train")[0]
    (reward,) = task.score_batch([candle], [WELL_FORMED.format("wax")])
    assert seen == [
        (
            {"prompt": "What burns at its head?", "hint": "wax", "id": "c", "answer": "changed"},
            WELL_FORMED.format("wax"),
        )  # fmt: skip
    ]
    assert candle.gold == "candle"
    assert reward.parts == {"format": 1.0, "exact_match": 0.0, "reward_fn": 0.5}
    assert reward.total == 0.75  # (format 1 + the function's 0.5) / 2


def test_a_dict_of_parts_is_logged_and_averaged(riddles):
    def parts(example, completion):
        return {"named": 1.0, "short": 0} if example["answer"] in completion else {"named": 0.0}

    task = JsonlTask(riddles, test_fraction=0.0, reward_fn=parts)
    candle = task.examples("train")[0]
    hit, miss = task.score_batch([candle, candle], [WELL_FORMED.format("candle"), "<think>snow"])
    assert hit.parts == {"format": 1.0, "exact_match": 1.0, "named": 1.0, "short": 0.0}
    assert hit.total == 0.75  # (1 + mean(1, 0)) / 2
    # every response of a batch has every part (the trainer averages them by name); a missing one is 0
    assert miss.parts == {"format": 0.0, "exact_match": 0.0, "named": 0.0, "short": 0.0}
    assert miss.total == 0.0


def test_parts_whose_sum_overflows_still_average(riddles):
    # 1e308 + 1e308 overflows (math.fsum raises OverflowError); their mean does not
    task = JsonlTask(
        riddles, test_fraction=0.0, reward_fn=lambda example, completion: {"a": 1e308, "b": 1e308}
    )
    (reward,) = task.score_batch(task.examples("train")[:1], [WELL_FORMED.format("candle")])
    assert reward.total == (1.0 + 1e308) / 2 and math.isfinite(reward.total)


@pytest.mark.parametrize(
    "returned, problem",
    [
        (float("nan"), "--reward-fn returned nan"),
        (None, "--reward-fn returned None"),
        ("1.0", "--reward-fn returned '1.0'"),
        ({}, "--reward-fn returned {}"),
        ({"format": 1.0}, "--reward-fn returned {'format': 1.0}"),  # a reserved name
        ({"a": "high"}, "--reward-fn returned {'a': 'high'}"),
        (ZeroDivisionError("division by zero"), "--reward-fn raised ZeroDivisionError: division by zero"),
    ],
)
def test_a_scoring_function_that_raises_or_returns_garbage_scores_zero(riddles, returned, problem):
    def broken(example, completion):
        if example["id"] == "s":
            return 1.0
        if isinstance(returned, Exception):
            raise returned
        return returned

    task = JsonlTask(riddles, test_fraction=0.0, reward_fn=broken)
    candle, snow = task.examples("train")
    with pytest.warns(RuntimeWarning, match=re.escape(problem) + ".* on example 'c'; scored 0"):
        bad, good = task.score_batch([candle, snow], [WELL_FORMED.format("x")] * 2)
    assert bad.parts["reward_fn"] == 0.0 and bad.total == 0.5  # format 1, the function's score 0
    assert good.parts["reward_fn"] == 1.0 and good.total == 1.0


def test_the_example_scoring_function_names_the_gold_word():
    from examples.riddle_reward import score

    candle = {"prompt": "?", "answer": "candle", "id": "x"}
    assert score(candle, WELL_FORMED.format("It is a candle.")) == {"named": 1.0, "short": 1.0}
    assert score(candle, WELL_FORMED.format("a candlestick, or perhaps a lamp")) == {
        "named": 0.0,
        "short": 0.0,
    }
    assert score({**candle, "answer": "ice"}, WELL_FORMED.format("a nice one")) == {
        "named": 0.0,
        "short": 1.0,
    }
    assert score(candle, "<think>candle") == {"named": 0.0, "short": 0.0}  # no answer block
    loaded = load_reward_fn(f"{REPO / 'examples' / 'riddle_reward.py'}:score")
    assert loaded(candle, WELL_FORMED.format("candle")) == {"named": 1.0, "short": 1.0}


def test_a_scoring_function_loads_by_module_or_by_file(tmp_path, monkeypatch):
    (tmp_path / "my_scores.py").write_text("def length(example, completion):\n    return len(completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    by_module = load_reward_fn("my_scores:length")
    by_file = load_reward_fn(f"{tmp_path / 'my_scores.py'}:length")
    assert by_module({}, "abc") == by_file({}, "abc") == 3
    sys.modules.pop("my_scores", None)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:score", "importing no_such_module_xyz failed (ModuleNotFoundError"),
        ("{dir}/absent.py:score", "absent.py does not exist"),
        ("{dir}/scores.py:nothing", "scores.py has no function 'nothing'"),
        ("{dir}/scores.py:one_argument", "one_argument must take two arguments, (example, response)"),
        ("{dir}/broken.py:score", "importing {dir}/broken.py failed (NameError: name 'oops' is not defined)"),
        ("scores", "expected module:function or path/to/file.py:function"),
    ],
)
def test_a_scoring_function_that_cannot_load_is_refused_before_a_model_loads(
    tmp_path, capsys, riddles, spec, message
):
    (tmp_path / "scores.py").write_text("def one_argument(example):\n    return 1.0\n")
    (tmp_path / "broken.py").write_text("oops\n")
    spec, message = spec.format(dir=tmp_path), message.format(dir=tmp_path)
    err = refused(tmp_path, capsys, riddles, "--reward", "rule", "--reward-fn", spec)
    assert err.startswith("error: --task jsonl: --reward-fn") and message in err, err


def test_jsonl_options_are_refused_with_other_tasks(tmp_path, capsys):
    argv = [
        "--task",
        "math",
        "--reward-fn",
        "m:f",
        "--model",
        tmp_path / "no-model",
        "--out-dir",
        tmp_path / "r",
    ]
    code, err = train_errors(argv, capsys)
    assert code == 2 and "--reward-fn is read by --task jsonl; --task math does not read it" in err
    # the same for an option that has a default: another value than it is refused
    code, err = train_errors([*argv[:2], "--test-fraction", "0.2", *argv[4:]], capsys)
    assert code == 2 and "--test-fraction is read by --task jsonl; --task math does not read it" in err
    assert Config(task="jsonl", data="d.jsonl", reward="logprob").test_fraction == 0.1


# ----------------------------------------------------------------------------------------------------
# Over-long answers and prompts: skipped and counted


def test_long_prompts_are_skipped_by_the_trainer_and_counted(tmp_path, tokenizer):
    lines = [{"prompt": "q" + "x" * (300 if i % 2 else 0), "answer": str(i)} for i in range(4)]
    task = JsonlTask(write_lines(tmp_path / "d.jsonl", lines), test_fraction=0.0)
    cfg = Config(task="jsonl", data="d", reward="logprob", prompts_per_step=2, group_size=2, beta=0.0,
                 max_prompt_tokens=250, out_dir=str(tmp_path / "run"))  # fmt: skip
    trainer = Trainer(cfg, make_model(tokenizer), None, tokenizer, task)
    assert sorted(ex.gold for ex in trainer.next_examples()) == ["0", "2"]
    # every example popped from the epoch's order that is not in the batch was a long one
    assert trainer.skipped_long_prompts == 4 - len(trainer.order) - 2 > 0


def test_long_answers_are_counted_in_the_policys_tokens(tmp_path, tokenizer):
    lines = [{"prompt": f"q{i}", "answer": "y" * n} for i, n in enumerate((3, 4, 5, 9))]
    task = JsonlTask(write_lines(tmp_path / "d.jsonl", lines), test_fraction=0.0)
    # one token per character: the answers of 5 and 9 characters are longer than 4 tokens
    assert task.skip_long_answers(tokenizer, 4) == 2
    assert [len(ex.gold) for ex in task.examples("train")] == [3, 4] and task.skipped_long_answers == 2


def test_a_file_whose_every_answer_is_too_long_is_refused_before_the_models_load(
    tmp_path, capsys, tiny_model_dir
):
    data = write_lines(tmp_path / "d.jsonl", [{"prompt": "q", "answer": "a long answer"}])
    (tiny_model_dir / "model.safetensors").unlink()  # only the tokenizer can load
    argv = ["--task", "jsonl", "--data", data, "--reward", "logprob", "--model", tiny_model_dir,
            "--max-answer-tokens", "12", "--out-dir", tmp_path / "run"]  # fmt: skip
    code, err = train_errors(argv, capsys)
    assert code == 2 and "every training example" in err and "longer than --max-answer-tokens 12" in err


# ----------------------------------------------------------------------------------------------------
# A round trip: train.py, then evaluate.py on the result, then its records as a responses file

QUICK = ["--max-new-tokens", "4", "--prompts-per-step", "1", "--group-size", "2", "--micro-batch-size", "2",
         "--lr", "1e-3", "--steps", "2", "--save-every", "0", "--max-prompt-tokens", "2000"]  # fmt: skip
ROUND_TRIP = [
    {"prompt": "cat?", "answer": "cat", "id": "t1"},
    {"prompt": "dog?", "answer": "dog", "id": "t2"},
    {"prompt": "long?", "answer": "a much longer answer", "id": "t3"},  # 20 tokens: skipped at 10
    {"prompt": "owl?", "answer": "owl", "id": "e1", "split": "test"},
    {"prompt": "bee?", "answer": "honey bee", "id": "e2", "split": "test"},
]


def test_train_and_evaluate_round_trip(tmp_path, capsys, tiny_model_dir, monkeypatch):
    data = write_lines(tmp_path / "d.jsonl", ROUND_TRIP)
    out = tmp_path / "run"
    argv = ["--task", "jsonl", "--data", data, "--reward", "logprob", "--model", tiny_model_dir,
            "--out-dir", out, "--max-answer-tokens", "10", "--test-fraction", "0.0", *QUICK]  # fmt: skip
    code, err = train_errors(argv, capsys)
    assert code == 0, err
    assert "skipped 1 of 3 training examples whose answer is longer than --max-answer-tokens 10" in err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_long_answers"] for m in metrics] == [1, 1]
    # the rule parts are watched in a logprob run
    assert all({"rule_format_mean", "rule_exact_match_mean", "logprob_mean"} <= m.keys() for m in metrics)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["example"] for s in samples} <= {"t1", "t2"}  # never the skipped one, never a test one
    # a sample's reward parts, and apart from them what the step logged beside them (the rule, the gold's length)
    assert all(set(s["parts"]) == {"format", "logprob"} for s in samples)
    assert all({"rule_exact_match", "gold_tokens"} <= set(s["signals"]) for s in samples)
    assert "--data " + data + " --test-fraction 0.0 --limit 50" in err  # what to evaluate next, split alike

    report_path = tmp_path / "report.json"
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "jsonl", "--data", data, "--test-fraction", "0", "--model", str(out / "final"),
            "--greedy", "--max-new-tokens", "4", "--out", str(report_path)]  # fmt: skip
    assert evaluate.main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["task"] == "jsonl" and report["n"] == 2 and report["settings"]["data"] == data
    assert [r["id"] for r in report["records"]] == ["e1", "e2"]
    assert set(report["parts"]) == {"format", "exact_match"}
    # the gold likelihood figures, over the test answers' tokens (one per character here)
    assert [r["likelihood"]["gold_tokens"] for r in report["records"]] == [3, 9]
    assert report["likelihood"]["gold_logprob_per_token"]["n"] == 2
    assert "exact_match" in capsys.readouterr().out

    # the report's records are a responses file of this task, and score the same
    completions = tmp_path / "completions.jsonl"
    completions.write_text("".join(json.dumps(r) + "\n" for r in report["records"]))
    again = score_responses_file(JsonlTask(), completions)
    assert again["n_errors"] == 0 and [r["id"] for r in again["records"]] == ["e1", "e2"]
    assert [r["parts"] for r in again["records"]] == [r["parts"] for r in report["records"]]


def test_a_rule_run_trains_on_the_scoring_function(tmp_path, capsys, tiny_model_dir):
    (tmp_path / "score_len.py").write_text(
        "def short(example, completion):\n    return 1.0 / len(completion)\n"
    )
    data = write_lines(tmp_path / "d.jsonl", ROUND_TRIP[:2])
    out = tmp_path / "run"
    argv = ["--task", "jsonl", "--data", data, "--reward", "rule", "--reward-fn",
            f"{tmp_path / 'score_len.py'}:short", "--model", tiny_model_dir, "--out-dir", out,
            "--test-fraction", "0", "--beta", "0", *QUICK]  # fmt: skip
    code, err = train_errors(argv, capsys)
    assert code == 0, err
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for s in samples:
        parts = s["parts"]
        assert parts["reward_fn"] == pytest.approx(1.0 / len(s["response"]))
        assert s["reward"] == pytest.approx((parts["format"] + parts["reward_fn"]) / 2)


def test_a_hand_written_responses_file(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    lines = [
        {"prompt": "What burns?", "answer": "Candle", "response": WELL_FORMED.format(" candle ")},
        {"messages": [{"role": "user", "content": "Cold?"}], "answer": "snow", "response": "<think>hm"},
        {"prompt": "q", "response": "x"},  # no answer
        {"nums": [1, 2, 3, 4], "target": 10, "response": "x"},  # another task's record
    ]
    write_lines(path, lines)
    assert (
        evaluate.main(["--task", "jsonl", "--responses", str(path), "--out", str(tmp_path / "r.json")]) == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["parts"] for r in report["records"]] == [
        {"format": 1.0, "exact_match": 1.0},
        {"format": 0.0, "exact_match": 0.0},
    ]
    assert [(e["line"], e["message"]) for e in report["errors"]] == [
        (3, "missing field 'answer'"),
        (4, "a math record (it has nums, target)"),
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "jsonl", "--model", "m"], "--task jsonl evaluates the test split of your examples"),
        (
            ["--task", "math", "--model", "m", "--reward-fn", "a:b"],
            "--reward-fn is read by --task jsonl; --task math does not read it",
        ),
        (
            ["--task", "jsonl", "--data", "d", "--model", "m", "--test-fraction", "1"],
            "--test-fraction must be",
        ),
    ],
)
def test_evaluate_usage_errors(argv, message, capsys):
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_csv_with_a_5_mb_field_reads_and_a_broken_one_is_one_line(tmp_path, capsys):
    big = tmp_path / "big.csv"
    big.write_text('prompt,answer\n"' + "long " * 1_000_000 + 'what am I?",candle\n')  # a 5 MB prompt
    (example,) = JsonlTask(str(big), test_fraction=0.0).examples("train")
    assert len(example.data["prompt"]) > 5_000_000
    # a quote that never closes is named as bad CSV, not as an empty answer
    broken = tmp_path / "broken.csv"
    broken.write_text('prompt,answer\nq1,a1\n"q2 never closed,a2\n')
    err = refused(tmp_path, capsys, broken)
    assert "broken.csv: not valid CSV after line 2 (unexpected end of data)" in err


def test_a_reward_function_past_its_time_limit_scores_0_with_a_warning_and_the_run_goes_on(riddles):
    import time

    def slow(example, completion):
        time.sleep(5 if "snow" in completion else 0)
        return 1.0

    task = JsonlTask(riddles, test_fraction=0.0, reward_fn=slow, reward_fn_timeout=0.2)
    candle = task.examples("train")[0]
    started = time.perf_counter()
    with pytest.warns(RuntimeWarning, match=r"took longer than --reward-fn-timeout 0.2 s"):
        stuck, fine = task.score_batch([candle, candle], ["<think>snow", WELL_FORMED.format("candle")])
    assert time.perf_counter() - started < 3  # not the 5 s the stuck call takes
    assert stuck.parts["reward_fn"] == 0.0 and fine.parts["reward_fn"] == 1.0  # the next call ran on


def test_a_reward_function_that_edits_the_example_changes_no_later_prompt(tmp_path):
    chat = [{"role": "user", "content": "What has a neck but no head?"}]
    data = write_lines(tmp_path / "d.jsonl", [{"messages": chat, "answer": "bottle"}])

    def vandal(example, completion):
        example["messages"][-1]["content"] = "edited"  # a nested edit: a shallow copy would pass it on
        return 0.0

    task = JsonlTask(data, test_fraction=0.0, reward_fn=vandal)
    (bottle,) = task.examples("train")
    before = task.messages(bottle)
    task.score_batch([bottle], ["<think>x"])
    assert task.messages(bottle) == before and before[-1]["content"] == "What has a neck but no head?"
