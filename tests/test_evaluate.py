"""Evaluation: intervals and scores computed by hand, responses files with known scores, reports of a tiny
model and their gold-answer likelihoods, the train/test overlap guard, the poster's table, paired comparisons
of two reports and the command line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import EchoTask, config, make_model, make_trainer

import evaluate
from evaluate import POSTER_TABLE, EvalConfig, build_parser, default_run_name
from grpo.cli import field_docs
from grpo.evaluation import (
    LIKELIHOOD_FIGURES,
    SplitOverlapError,
    build_report,
    distinct_trigrams,
    evaluate_model,
    repetition_figures,
)
from grpo.reports import format_summary
from grpo.reports import format_table as table_of
from grpo.rewards import answer_separator
from grpo.rollout import build_prompt
from grpo.statistics import mean_ci, paired_difference
from grpo.tags import THINK_CLOSE, THINK_OPEN
from grpo.task import Example, Reward, Task
from tasks.countdown import CountdownTask
from tasks.poetry import PoetryTask
from tasks.responses import score_responses_file


def format_table(reports) -> str:
    """The table as `evaluate.py --table` builds it: the poster's math and poetry columns always there."""
    return table_of(reports, always=POSTER_TABLE)


# ----------------------------------------------------------------------------------------------------
# Intervals and scores


def test_mean_ci_of_a_bernoulli_sample_is_the_wald_interval():
    ci = mean_ci([1] * 30 + [0] * 70)
    # 0.3 ± t_{0.975, 99} · sqrt(0.3 · 0.7 / 100) = 0.3 ± 1.9842169 · 0.0458258 = 0.3 ± 0.0909282
    assert ci["n"] == 100
    assert ci["mean"] == pytest.approx(0.3, abs=1e-12)
    assert ci["low"] == pytest.approx(0.2090718, abs=1e-6)
    assert ci["high"] == pytest.approx(0.3909282, abs=1e-6)


def test_mean_ci_of_other_values_uses_the_sample_std():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    # s² = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; t_{0.975, 3} · sqrt(5/3) / 2 = 3.1824463 · 0.6454972 = 2.0542603
    assert ci["mean"] == 2.5
    assert ci["low"] == pytest.approx(2.5 - 2.0542603, abs=1e-6)
    assert ci["high"] == pytest.approx(2.5 + 2.0542603, abs=1e-6)


@pytest.mark.parametrize("df, t", [(1, 12.7062), (2, 4.3027), (5, 2.5706), (30, 2.0423), (120, 1.9799)])
def test_student_t_quantiles_are_the_tables(df, t):
    from grpo.statistics import student_t_quantile

    assert student_t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)  # any table of t_{0.975}
    assert student_t_quantile(0.975, 10**6) == pytest.approx(1.95996, abs=1e-4)  # the normal's


def test_mean_ci_edges():
    assert mean_ci([]) == {"mean": None, "low": None, "high": None, "n": 0}
    assert mean_ci([0.4]) == {"mean": 0.4, "low": None, "high": None, "n": 1}  # one value: no interval
    assert mean_ci([1, 1, 1]) == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3}  # Wald: zero width at 1


def test_task_score_is_the_posters():
    countdown = CountdownTask(n_train=0, n_test=0)
    assert countdown.report_score({"format": 0.313, "equation": 0.289}, 0.9) == pytest.approx(0.301)
    assert countdown.report_score({"format": 0.5}, 0.5) is None
    # poetry's, as any task's that does not say otherwise, is the mean total
    assert PoetryTask.report_score is Task.report_score
    assert Task().report_score({"format": 1.0, "similarity": 0.2}, 0.55) == 0.55


# ----------------------------------------------------------------------------------------------------
# A hand-written math responses file

PERFECT = "<think>1 * 2 = 2, 2 * 3 = 6, 6 * 4 = 24</think>\n<answer>1 * 2 * 3 * 4</answer>"
BAD_FORMAT = "<think>add, then multiply</think> so the answer is <answer>(1 + 2 + 3) * 4</answer>"
WRONG = "I do not know."
MATH_LINES = [
    json.dumps({"nums": [1, 2, 3, 4], "target": 24, "response": PERFECT}),  # format 1, equation 1
    json.dumps({"nums": [1, 2, 3, 4], "target": 24, "response": BAD_FORMAT}),  # format 0, equation 1
    # `completion`, the key's name before its rename, is read as `response`
    json.dumps({"nums": [4, 3, 2, 1], "target": 10, "gold_answer": "1 + 2 + 3 + 4", "completion": WRONG}),
    '{"nums": [1, 2, 3, 4], "target": 24, "response": "<think>',  # line 4: broken JSON
    "",  # a blank line is skipped, not an error
    json.dumps({"nums": [1, 2, 3, 4], "response": PERFECT}),  # line 6: no target
    json.dumps({"nums": [1, 2, 3, 4], "target": 24, "response": 24}),  # line 7: not a string
]


@pytest.fixture
def math_file(tmp_path):
    path = tmp_path / "math-completions.jsonl"
    path.write_text("\n".join(MATH_LINES) + "\n")
    return path


def test_math_responses_file_scores(math_file):
    report = score_responses_file(CountdownTask(n_train=0, n_test=0), math_file)
    assert report["task"] == "math" and report["name"] == "math-completions"
    assert report["n"] == 3 and report["n_errors"] == 3
    assert [r["line"] for r in report["records"]] == [1, 2, 3]
    assert [r["parts"] for r in report["records"]] == [
        {"format": 1.0, "equation": 1.0},
        {"format": 0.0, "equation": 1.0},
        {"format": 0.0, "equation": 0.0},
    ]
    assert [r["total"] for r in report["records"]] == [1.0, 0.5, 0.0]
    fmt, equation = report["parts"]["format"], report["parts"]["equation"]
    assert fmt["mean"] == pytest.approx(1 / 3) and equation["mean"] == pytest.approx(2 / 3)
    # Wald: t_{0.975, 2} · sqrt((1/3)(2/3)/3) = 4.3026527 · 0.2721655 = 1.1710339
    assert fmt["low"] == pytest.approx(1 / 3 - 1.1710339, abs=1e-6)
    assert equation["high"] == pytest.approx(2 / 3 + 1.1710339, abs=1e-6)
    assert report["score"] == pytest.approx(0.5)  # (1/3 + 2/3) / 2
    assert report["total"]["mean"] == pytest.approx(0.5)  # the same number: total = (format + equation) / 2
    assert [e["line"] for e in report["errors"]] == [4, 6, 7]
    messages = [e["message"] for e in report["errors"]]
    assert messages[0].startswith("not valid JSON")
    assert messages[1] == "missing field(s) 'target'"
    assert messages[2] == "'response' must be a string, got a number"
    assert report["records"][2]["gold"] == "1 + 2 + 3 + 4"  # given, not solved again


def test_wrong_task_for_a_responses_file(math_file, tmp_path, poetry_data, capsys):
    code = evaluate.main(["--task", "poetry", "--data", str(poetry_data), "--responses", str(math_file)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "holds math examples" in err and "--task math" in err and "\n" not in err


# ----------------------------------------------------------------------------------------------------
# Reports of a tiny model


def test_report_of_a_tiny_model_is_complete_and_deterministic(tokenizer, tiny_model, tmp_path):
    task = CountdownTask(n_train=20, n_test=5)
    options = dict(limit=3, greedy=True, max_new_tokens=6, batch_size=2, progress=False)
    report = evaluate_model(tiny_model, tokenizer, task, **options)
    assert report["n"] == 3 and report["n_errors"] == 0
    assert [r["id"] for r in report["records"]] == [ex.id for ex in task.examples("test")[:3]]
    assert [r["index"] for r in report["records"]] == [0, 1, 2]
    for record in report["records"]:
        assert record["response"].startswith("<think>")
        assert set(record["parts"]) == {"format", "equation"}
        assert all(0.0 <= v <= 1.0 for v in record["parts"].values())
        assert 1 <= record["completion_tokens"] <= 6
    settings = report["settings"]
    assert settings["greedy"] is True and settings["temperature"] == 0.0
    assert (settings["limit"], settings["max_new_tokens"], settings["batch_size"]) == (3, 6, 2)
    assert settings["split"] == "test" and settings["split_size"] == 5
    assert sum(report["finish_reasons"].values()) == 3
    again = evaluate_model(tiny_model, tokenizer, task, **options)
    assert again["records"] == report["records"]
    assert not tiny_model.training  # left in the mode it came in


def test_sampling_is_seeded(tokenizer, tiny_model):
    task = CountdownTask(n_train=4, n_test=2)
    options = dict(limit=2, greedy=False, temperature=1.0, max_new_tokens=5, progress=False)
    first = evaluate_model(tiny_model, tokenizer, task, seed=1, **options)
    second = evaluate_model(tiny_model, tokenizer, task, seed=1, **options)
    assert [r["response"] for r in first["records"]] == [r["response"] for r in second["records"]]
    other = evaluate_model(tiny_model, tokenizer, task, seed=2, **options)
    assert [r["response"] for r in other["records"]] != [r["response"] for r in first["records"]]


def test_records_score_again_as_a_responses_file(tokenizer, tiny_model, tmp_path):
    task = CountdownTask(n_train=4, n_test=3)
    report = evaluate_model(tiny_model, tokenizer, task, greedy=True, max_new_tokens=5, progress=False)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in report["records"]))
    again = score_responses_file(task, path)
    assert again["n_errors"] == 0
    assert [r["total"] for r in again["records"]] == [r["total"] for r in report["records"]]
    assert [r["id"] for r in again["records"]] == [r["id"] for r in report["records"]]


# ----------------------------------------------------------------------------------------------------
# The gold answer's likelihood, as training's logprob reward scores it


def teacher_forced_logprob(model, ids: list[int], scored: range) -> float:
    """log P of the tokens at positions `scored` of one unpadded row, by one plain forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)  # (L, V)
    return sum(float(logp[t - 1, ids[t]]) for t in scored)


def test_likelihood_figures_are_the_gold_answers_teacher_forced_log_probs(tokenizer, tiny_model):
    task = CountdownTask(n_train=4, n_test=3)
    report = evaluate_model(
        tiny_model, tokenizer, task, greedy=True, max_new_tokens=8, batch_size=3, progress=False
    )
    examples = task.examples("test")
    figures = [r["likelihood"] for r in report["records"]]
    # each expectation by hand, one row at a time and one plain forward pass: the row is the prompt, then the
    # reasoning, "</think>", the separator, "<answer>", the gold and "</answer>", each piece encoded apart as
    # the model would write them, and the gold is scored where it stands
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    opener = encode(THINK_CLOSE) + encode(answer_separator(tokenizer)) + encode("<answer>")
    checked = 0
    for f, record, example in zip(figures, report["records"], examples, strict=True):
        prompt = build_prompt(tokenizer, task.messages(example))
        reasoning = record["response"].removeprefix(THINK_OPEN)
        if "<" in reasoning or record["finish_reason"] != "length":
            continue  # a tag or an end-of-turn token: left to the reasoning span's own tests
        checked += 1
        scored_reasoning = len(encode(reasoning)) + len(encode(THINK_CLOSE))  # never closed: </think> added
        assert (f["think_closed"], f["early_answer"], f["reasoning_tokens"]) == (0, 0, scored_reasoning)
        gold = encode(example.gold)
        for key, before in (("gold_logprob", encode(reasoning)), ("gold_logprob_empty", [])):
            ids = prompt + before + opener + gold + encode("</answer>")
            gold_at = len(prompt) + len(before) + len(opener)
            expected = teacher_forced_logprob(tiny_model, ids, range(gold_at, gold_at + len(gold)))
            assert f[key] == pytest.approx(expected, rel=1e-4), key
    assert checked >= 2  # (the tiny model's greedy completions here: 8 characters, no tag)
    for f, record in zip(figures, report["records"]):
        assert f | repetition_figures(record["response"]) == f  # the repetition of what was written
    for f, example in zip(figures, examples):
        assert f["gold_tokens"] == len(example.gold)  # the test tokenizer: one token per character
        assert f["gold_logprob_per_token"] == f["gold_logprob"] / f["gold_tokens"]
        assert f["gold_logprob_empty_per_token"] == f["gold_logprob_empty"] / f["gold_tokens"]
        gain = f["gold_logprob_per_token"] - f["gold_logprob_empty_per_token"]
        assert f["reasoning_gain_per_token"] == pytest.approx(gain, abs=1e-12)
        assert f["gold_logprob"] < 0 and f["gold_logprob_empty"] < 0
    # the report: every figure's mean with its 95% CI over the 3 examples
    assert set(report["likelihood"]) == set(LIKELIHOOD_FIGURES)
    per_token = report["likelihood"]["gold_logprob_per_token"]
    assert per_token == mean_ci(f["gold_logprob_per_token"] for f in figures)
    assert per_token["n"] == 3 and per_token["low"] < per_token["mean"] < per_token["high"]
    assert report["settings"]["likelihood"] is True
    assert "gold log-prob/token" in format_summary(report)


def test_a_scorer_judges_the_same_completions(tokenizer, tiny_model):
    task = CountdownTask(n_train=4, n_test=3)
    options = dict(temperature=1.0, max_new_tokens=6, batch_size=2, seed=1, progress=False)
    own = evaluate_model(tiny_model, tokenizer, task, **options)
    other = make_model(tokenizer, seed=7).train()
    judged = evaluate_model(tiny_model, tokenizer, task, scorer=other, **options)
    # the completions are the evaluated model's, the log-probs the scorer's
    assert [r["response"] for r in judged["records"]] == [r["response"] for r in own["records"]]
    mine = [r["likelihood"]["gold_logprob"] for r in own["records"]]
    theirs = [r["likelihood"]["gold_logprob"] for r in judged["records"]]
    assert all(abs(a - b) > 1e-3 for a, b in zip(mine, theirs))
    # the scorer's own figures on those completions: what it gives when it is also the sampler's twin
    twin = make_model(tokenizer, seed=7)
    twin.load_state_dict(tiny_model.state_dict())
    again = evaluate_model(tiny_model, tokenizer, task, scorer=twin, **options)
    assert [r["likelihood"]["gold_logprob"] for r in again["records"]] == pytest.approx(mine, rel=1e-9)
    assert other.training  # the scorer is given back in the mode it came in


def test_likelihood_draws_nothing_from_the_sampler(tokenizer, tiny_model):
    task = CountdownTask(n_train=4, n_test=3)
    # sampled, in two batches: scoring the first batch must not move the second batch's random numbers
    options = dict(temperature=1.0, max_new_tokens=5, batch_size=2, seed=1, progress=False)
    scored = evaluate_model(tiny_model, tokenizer, task, **options)
    plain = evaluate_model(tiny_model, tokenizer, task, likelihood=False, **options)
    assert [r["response"] for r in scored["records"]] == [r["response"] for r in plain["records"]]
    assert "likelihood" not in plain and all("likelihood" not in r for r in plain["records"])
    assert all("likelihood" in r for r in scored["records"])


def test_trainer_logs_the_held_out_likelihood(tmp_path, tokenizer):
    from grpo.run import held_out_evaluation

    trainer = make_trainer(config(tmp_path, beta=0.0, eval_limit=2), tokenizer, make_model)
    logged = held_out_evaluation(trainer)
    c = trainer.config
    report = evaluate_model(
        trainer.policy,
        tokenizer,
        EchoTask(),
        limit=2,
        max_new_tokens=c.max_new_tokens,
        batch_size=c.micro_batch_size,
        seed=c.seed,
        progress=False,
    )
    likelihood = report["likelihood"]
    assert logged["eval_score"] == report["score"]
    assert logged["eval_gold_logprob_per_token"] == likelihood["gold_logprob_per_token"]["mean"]
    assert logged["eval_gold_logprob_per_token_low"] == likelihood["gold_logprob_per_token"]["low"]
    assert logged["eval_gold_logprob_per_token_high"] == likelihood["gold_logprob_per_token"]["high"]
    assert logged["eval_gold_logprob_empty_per_token"] == likelihood["gold_logprob_empty_per_token"]["mean"]
    assert logged["eval_reasoning_gain_per_token"] == likelihood["reasoning_gain_per_token"]["mean"]


class LeakyTask(Task):
    """Letters as examples; the test split shares an id, or only a gold answer, with the train split."""

    name = "leaky"

    def __init__(self, shared: str):
        self.shared = shared

    def examples(self, split):
        if split == "train":
            return [Example(id="a", gold="alpha"), Example(id="b", gold="beta")]
        if self.shared == "id":
            return [Example(id="x", gold="xi"), Example(id="b", gold="other")]
        return [Example(id="x", gold="xi"), Example(id="y", gold="  Beta ")]

    def messages(self, example):
        return [{"role": "user", "content": example.gold}]

    def score(self, example, response):
        return Reward(total=0.0, parts={})


@pytest.mark.parametrize(
    "shared, reported", [("id", "1 example id(s) ('b')"), ("gold", "1 test example(s) ('y')")]
)
def test_overlapping_splits_are_refused(tokenizer, tiny_model, shared, reported):
    with pytest.raises(SplitOverlapError, match=re.escape(reported)):
        evaluate_model(tiny_model, tokenizer, LeakyTask(shared), max_new_tokens=2, progress=False)


def test_ids_seen_in_training_count_too(tokenizer, tiny_model):
    task = CountdownTask(n_train=2, n_test=2)
    seen = [task.examples("test")[1].id]
    with pytest.raises(SplitOverlapError):
        evaluate_model(tiny_model, tokenizer, task, train_ids=seen, max_new_tokens=2, progress=False)


# ----------------------------------------------------------------------------------------------------
# The poster's table


def hand_report(task, name, score, parts):
    return {"task": task, "name": name, "score": score, "parts": {k: {"mean": v} for k, v in parts.items()}}


MATH_PARTS = ("format", "equation")
POETRY_PARTS = ("format", "similarity", "form", "rhyme", "syllables")
REPORTS = [
    hand_report("math", "Baseline", 0.301, dict(zip(MATH_PARTS, (0.313, 0.289)))),
    hand_report("poetry", "Baseline", 0.4125, dict(zip(POETRY_PARTS, (0.5, 0.25, 0.0, 1.0, 0.6)))),
    hand_report("math", "Rule-based GRPO", 0.75, dict(zip(MATH_PARTS, (1.0, 0.5)))),
    hand_report("poetry", "Logprob GRPO", 0.5, dict(zip(POETRY_PARTS, (1.0, 0.5, 0.25, 0.0, 0.3333)))),
]
HEADER = (
    "| Run | Math Score | Poetry Score | Math format | Math equation | Poetry format | Poetry similarity "
    "| Poetry form | Poetry rhyme | Poetry syllables |"
)
ROWS = [
    "| Baseline | 0.301 | 0.412 | 0.313 | 0.289 | 0.500 | 0.250 | 0.000 | 1.000 | 0.600 |",
    "| Rule-based GRPO | 0.750 | – | 1.000 | 0.500 | – | – | – | – | – |",
    "| Logprob GRPO | – | 0.500 | – | – | 1.000 | 0.500 | 0.250 | 0.000 | 0.333 |",
]


def test_table_merges_a_runs_reports_into_one_row():
    table = format_table(REPORTS)
    lines = table.split("\n")
    assert lines[0] == HEADER
    assert lines[1] == "|---|" + "---:|" * 9
    assert lines[2:] == ROWS
    # the same table from {row: [reports]} and from (row, report) pairs
    grouped = {"Baseline": REPORTS[:2], "Rule-based GRPO": [REPORTS[2]], "Logprob GRPO": [REPORTS[3]]}
    assert format_table(grouped) == table
    assert format_table([(r["name"], r) for r in REPORTS]) == table
    with pytest.raises(ValueError, match="two math reports"):
        format_table([("Baseline", REPORTS[0]), ("Baseline", REPORTS[2])])


def test_table_of_math_reports_only_keeps_both_score_columns():
    table = format_table(
        [("Baseline", build_report(CountdownTask(n_train=0, n_test=0), [], {"name": "Baseline"}))]
    )
    assert table.split("\n")[0] == "| Run | Math Score | Poetry Score |"
    assert table.split("\n")[2] == "| Baseline | – | – |"


def test_table_command(tmp_path, capsys):
    paths = []
    for i, report in enumerate(REPORTS):
        paths.append(tmp_path / f"report-{i}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "tables" / "table.md"
    names = ["Baseline", "Baseline", "Rule-based GRPO", "Logprob GRPO"]
    assert evaluate.main(["--table", *map(str, paths), "--names", *names, "--out", str(out)]) == 0
    assert out.read_text() == format_table(REPORTS) + "\n"
    assert ROWS[1] in capsys.readouterr().out
    assert evaluate.main(["--table", *map(str, paths), "--names", "one"]) == 2
    assert "--names gives 1 names for 4 reports" in capsys.readouterr().err
    assert evaluate.main(["--table", str(tmp_path / "missing.json")]) == 2
    assert "missing.json does not exist" in capsys.readouterr().err


def test_table_shows_likelihood_figures_where_a_report_has_them():
    old = hand_report("math", "Baseline", 0.301, dict(zip(MATH_PARTS, (0.313, 0.289))))  # written before them
    new = hand_report("math", "Logprob GRPO", 0.25, dict(zip(MATH_PARTS, (0.5, 0.0))))
    new["likelihood"] = {
        "gold_logprob_per_token": {"mean": -1.5, "low": -2.0, "high": -1.0},
        "gold_logprob_empty_per_token": {"mean": -1.75, "low": -2.25, "high": -1.25},
        "reasoning_gain_per_token": {"mean": 0.25, "low": 0.125, "high": 0.375},
    }
    lines = format_table([old, new]).split("\n")
    assert lines[0] == (
        "| Run | Math Score | Poetry Score | Math format | Math equation | Math gold log-prob/token "
        "| Math gold log-prob/token, empty reasoning | Math reasoning gain/token |"
    )
    assert lines[2] == "| Baseline | 0.301 | – | 0.313 | 0.289 | – | – | – |"
    assert lines[3] == (
        "| Logprob GRPO | 0.250 | – | 0.500 | 0.000 | -1.500 [-2.000, -1.000] | -1.750 [-2.250, -1.250] "
        "| 0.250 [0.125, 0.375] |"
    )
    assert "gold log-prob" not in format_table([old])  # no report has them: no columns


def test_summary_shows_likelihood_figures_where_the_report_has_them():
    figures = {"gold_logprob_per_token": -2.0, "gold_logprob_empty_per_token": -2.5, "think_closed": 1}
    records = [
        {"total": 0.5, "parts": {"format": 1.0}, "likelihood": dict.fromkeys(LIKELIHOOD_FIGURES, 0) | figures}
    ]
    summary = format_summary(build_report(CountdownTask(n_train=0, n_test=0), records, {"name": "one"}))
    assert "    gold log-prob/token                  -2.000  95% CI [–, –]" in summary  # n = 1: no interval
    assert "    </think> closed                       1.000  95% CI [–, –]" in summary
    assert "log P(gold" not in format_summary(build_report(CountdownTask(n_train=0, n_test=0), [], {}))


# ----------------------------------------------------------------------------------------------------
# Two reports compared example by example


def test_paired_difference_by_hand():
    # d = [1, 2, 3]: mean 2, s = 1, half-width t_{0.975, 2} · 1 / sqrt(3) = 4.3026527 / 1.7320508 = 2.4841377
    d = paired_difference([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert d["mean"] == 2.0 and d["n"] == 3
    assert d["low"] == pytest.approx(2 - 2.4841377, abs=1e-6)
    assert d["high"] == pytest.approx(2 + 2.4841377, abs=1e-6)
    # differences of 0/1 values use s too, never the Wald interval: d = [1, 0, 0], s = sqrt(1/3)
    d = paired_difference([0, 1, 1], [1, 1, 1])
    assert d["high"] - d["mean"] == pytest.approx(4.3026527 / 3, abs=1e-6)
    # one pair says nothing of the spread: no interval (a zero-width one would read as "supported")
    assert paired_difference([0.2], [0.5]) == {"mean": pytest.approx(0.3), "low": None, "high": None, "n": 1}
    assert paired_difference([], []) == {"mean": None, "low": None, "high": None, "n": 0}


def compare_report(name, rows, task="math", **settings):
    """A hand-written report: rows of (id, total, format, gold log-prob per token)."""
    records = [
        {"id": i, "total": total, "parts": {"format": fmt}, "likelihood": {"gold_logprob_per_token": logp}}
        for i, total, fmt, logp in rows
    ]
    sampling = {"seed": 0, "temperature": 0.6, "top_p": 0.95, "greedy": False, "max_new_tokens": 512}
    settings = sampling | settings
    return {"task": task, "name": name, "score": None, "parts": {}, "settings": settings, "records": records}


# paired by id (B lists them in another order): total d = [0.5, 0, 0], format d = [1, 0, 0], log-prob d = [1, 2, 3]
A_ROWS = [("e1", 0.0, 0.0, -3.0), ("e2", 0.5, 1.0, -4.0), ("e3", 1.0, 1.0, -5.0)]
B_ROWS = [("e3", 1.0, 1.0, -2.0), ("e1", 0.5, 1.0, -2.0), ("e2", 0.5, 1.0, -2.0)]
COMPARISON = [
    "| Figure (math) | A: Baseline | B: Logprob GRPO | B − A | 95% CI | n |",
    "|---|---:|---:|---:|---:|---:|",
    # d̄ = 1/6, s/√3 = sqrt(1/12)/sqrt(3) = 1/6: 1/6 ± t_{0.975, 2}/6 = 1/6 ± 0.7171088 = [−0.550, +0.884]
    "| score | 0.500 | 0.667 | +0.167 | [-0.550, +0.884] | 3 |",
    # d̄ = 1/3, s/√3 = sqrt(1/3)/sqrt(3) = 1/3: 1/3 ± t/3 = 1/3 ± 1.4342176 = [−1.101, +1.768]
    "| format | 0.667 | 1.000 | +0.333 | [-1.101, +1.768] | 3 |",
    # d̄ = 2, s = 1: 2 ± t/√3 = 2 ± 2.4841377 = [−0.484, +4.484]
    "| gold_logprob_per_token | -4.000 | -2.000 | +2.000 | [-0.484, +4.484] | 3 |",
]


def write_reports(tmp_path, a, b):
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, report in zip(paths, (a, b)):
        path.write_text(json.dumps(report))
    return [str(path) for path in paths]


def test_compare_command_pairs_examples_by_id(tmp_path, capsys):
    paths = write_reports(
        tmp_path, compare_report("Baseline", A_ROWS), compare_report("Logprob GRPO", B_ROWS)
    )
    out = tmp_path / "compare.json"
    assert evaluate.main(["--compare", *paths, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().split("\n") == COMPARISON
    assert "warning" not in captured.err
    comparison = json.loads(out.read_text())
    assert comparison["n"] == 3 and comparison["a"] == {"name": "Baseline", "path": paths[0]}
    score, fmt, logp = comparison["figures"]
    assert (score["mean_a"], score["difference"]) == (pytest.approx(0.5), pytest.approx(1 / 6))
    t = 4.3026527  # t_{0.975, 2}
    assert score["high"] == pytest.approx(1 / 6 + t / 6)
    assert fmt["low"] == pytest.approx(1 / 3 - t / 3)
    assert logp == {
        "figure": "gold_logprob_per_token",
        "mean_a": -4.0,
        "mean_b": -2.0,
        "difference": 2.0,
        "low": pytest.approx(2 - t / 3**0.5),
        "high": pytest.approx(2 + t / 3**0.5),
        "n": 3,
        "diagnostic": False,
    }
    markdown = tmp_path / "compare.md"
    assert evaluate.main(["--compare", *paths, "--names", "A", "B", "--out", str(markdown)]) == 0
    assert markdown.read_text().split("\n")[0] == "| Figure (math) | A: A | B: B | B − A | 95% CI | n |"
    assert markdown.read_text().split("\n")[2:] == [*COMPARISON[2:], ""]


def test_compare_warns_when_the_scorers_differ(tmp_path, capsys):
    # a report without `scorer` was scored by its own model
    a = compare_report("A", A_ROWS, model="smollm2-135m")
    same = compare_report("B", B_ROWS, model="runs/x/final", scorer="smollm2-135m")
    own = compare_report("B", B_ROWS, model="runs/x/final")
    assert evaluate.main(["--compare", *write_reports(tmp_path, a, same)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert evaluate.main(["--compare", *write_reports(tmp_path, a, own)]) == 0
    assert "scored by different models (smollm2-135m vs runs/x/final)" in capsys.readouterr().err


def test_compare_warns_when_sampling_settings_differ(tmp_path, capsys):
    paths = write_reports(
        tmp_path, compare_report("A", A_ROWS), compare_report("B", B_ROWS, seed=1, top_p=1.0)
    )
    assert evaluate.main(["--compare", *paths]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "seed 0 vs 1" in err and "top_p 0.95 vs 1.0" in err


@pytest.mark.parametrize(
    "b, message",
    [
        (compare_report("B", [*B_ROWS, ("e4", 1, 1, -2)]), "the same example ids: 1 only in B ('e4');"),
        (compare_report("B", B_ROWS[:2]), "ids: 1 only in A ('e2');"),
        (compare_report("B", B_ROWS, task="poetry"), "different tasks (math and poetry)"),
        (compare_report("B", []), "report B has no per-example records"),
    ],
)
def test_compare_refuses_reports_that_do_not_pair(tmp_path, capsys, b, message):
    paths = write_reports(tmp_path, compare_report("A", A_ROWS), b)
    assert evaluate.main(["--compare", *paths]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert message in err and "\n" not in err and captured.out == ""


# ----------------------------------------------------------------------------------------------------
# The command line


def test_help_lists_every_option_with_its_docstring(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    squeezed = "".join(build_parser().format_help().split())
    for name, doc in field_docs(EvalConfig).items():
        assert "--" + name.replace("_", "-") in squeezed
        assert "".join(doc.split()) in squeezed, name


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give --model"),
        (["--task", "math", "--model", "m", "--responses", "f"], "separate modes"),
        (["--model", "m"], "--task is needed with --model and --responses (one of math, poetry, jsonl)"),
        (
            ["--task", "math", "--model", "m", "--data", "d.csv"],
            "--data is read by --task poetry and --task jsonl; --task math does not read it",
        ),
        (["--task", "math", "--model", "m", "--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--compare", "a.json", "b.json", "--table", "c.json"], "--table and --compare are separate modes"),
        (["--compare", "a.json", "b.json", "--names", "one"], "--names gives 1 names for 2 reports"),
        (["--compare", "a.json", "nope.json"], "report a.json does not exist"),
        (["--task", "math", "--responses", "nope.jsonl"], "responses file nope.jsonl does not exist"),
        (["--task", "math", "--responses", "f", "--scorer", "m"], "--scorer scores the likelihood figures"),
        (["--task", "math", "--model", "m", "--scorer", "m", "--no-likelihood"], "it needs --model and"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_unknown_task_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--task", "chess", "--model", "m"])
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().split("\n")) == 1


@pytest.mark.parametrize("flag", ["--responses", "--completions"])  # --completions: the option's name before
def test_responses_command_writes_the_report(math_file, tmp_path, capsys, flag):
    out = tmp_path / "out" / "report.json"
    assert evaluate.main(["--task", "math", flag, str(math_file), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["score"] == pytest.approx(0.5) and report["n_errors"] == 3
    assert report["settings"]["responses"] == str(math_file)
    summary = capsys.readouterr().out
    assert "score        0.500" in summary and "line 4: not valid JSON" in summary


def test_a_report_that_cannot_be_written_keeps_the_old_one_and_prints_the_figures(
    math_file, tmp_path, capsys, monkeypatch
):
    import errno
    from pathlib import Path

    out = tmp_path / "report.json"
    out.write_text('{"an": "earlier report"}\n')
    real = Path.write_text

    def disk_full(self, text, *args, **kwargs):  # the disk fills up halfway through the report
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert evaluate.main(["--task", "math", "--responses", str(math_file), "--out", str(out)]) == 2
    monkeypatch.undo()
    captured = capsys.readouterr()
    assert "score        0.500" in captured.out  # the figures were printed before the write
    assert f"error: the report could not be written to {out} ([Errno 28] No space left" in captured.err
    assert out.read_text() == '{"an": "earlier report"}\n'  # not torn, not lost
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_model_command_on_a_saved_tiny_model(tokenizer, tiny_model, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "runs" / "tiny" / "final"
    tiny_model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    monkeypatch.chdir(tmp_path)
    argv = ["--task", "math", "--model", str(checkpoint), "--limit", "2", "--greedy", "--max-new-tokens", "3"]
    assert evaluate.main([*argv, "--device", "cpu"]) == 0
    report = json.loads((tmp_path / "reports" / "math-tiny.json").read_text())  # named after the run
    assert report["n"] == 2 and report["name"] == "tiny"
    assert report["settings"]["model"] == str(checkpoint) and report["settings"]["dtype"] == "float32"
    assert report["likelihood"]["gold_logprob_per_token"]["n"] == 2
    assert "math: tiny, 2 examples scored" in capsys.readouterr().out
    assert evaluate.main([*argv, "--no-likelihood", "--out", "plain.json"]) == 0
    assert "likelihood" not in json.loads((tmp_path / "plain.json").read_text())


def test_default_run_names():
    assert default_run_name("Qwen/Qwen3-1.7B") == "Qwen3-1.7B"
    assert default_run_name("runs/math-rule-20250101-120000/final/") == "math-rule-20250101-120000"
    assert default_run_name("smollm2-135m") == "smollm2-135m"


# ----------------------------------------------------------------------------------------------------
# Poetry (loads the sentence-embedding model: a few seconds)

# made up for the test: 4 lines, so the start is line 1 and the gold ending lines 2–4
START = "The river runs beneath the hill"
ENDING = (
    "And turns the wheel of the old mill,\nIt sings all night and never stops,\nUntil the morning dew drops."
)


@pytest.fixture
def poetry_data(tmp_path):
    path = tmp_path / "poems.jsonl"
    rows = [
        {"author": "A. Nonymous", "title": "River", "form": "quatrain", "text": START + "\n" + ENDING,
         "split": "train"},
        {"author": "B. Nonymous", "title": "Hill", "text": "One\nTwo\nThree\nFour", "split": "test"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_poetry_responses_file(poetry_data, tmp_path):
    from tasks.poetry import PoetryTask

    poem = {
        "author": "A. Nonymous",
        "title": "River",
        "form": "quatrain",
        "poem_start": START,
        "poem_end": ENDING,
    }
    lines = [
        {**poem, "response": f"<think>rhymed couplets</think>\n<answer>\n{ENDING}\n</answer>"},  # the gold
        {**poem, "response": "<think>no idea</think><answer></answer>"},  # only the format part
        {**poem, "poem_start": 7, "response": "<think></think>"},
        {"author": "A. Nonymous", "response": "<think></think>"},
    ]
    path = tmp_path / "poems-completions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = score_responses_file(PoetryTask(data=poetry_data), path)
    assert report["n"] == 2
    assert report["records"][0]["parts"] == pytest.approx(dict.fromkeys(POETRY_PARTS, 1.0))
    assert report["records"][1]["parts"] == {"format": 1.0} | dict.fromkeys(POETRY_PARTS[1:], 0.0)
    assert report["records"][1]["total"] == pytest.approx(0.1)  # the format weight
    assert report["score"] == pytest.approx((1.0 + 0.1) / 2)
    assert report["parts"]["similarity"]["mean"] == pytest.approx(0.5)
    assert report["errors"] == [
        {"line": 3, "message": "'poem_start' must be a string, got a number"},
        {"line": 4, "message": "missing field(s): 'poem_start' and 'poem_end', or 'text'"},
    ]


def test_a_file_where_no_line_is_usable_is_an_error(tmp_path, capsys):
    useless = tmp_path / "useless.jsonl"
    useless.write_text('not json\n{"nums": [1, 2, 3, 4]}\n')
    code = evaluate.main(["--task", "math", "--responses", str(useless), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "could be scored (2 unusable lines: line 1: not valid JSON" in err
    assert not (tmp_path / "r.json").exists()  # no report of nothing (--table would show a row of dashes)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert (
        evaluate.main(["--task", "math", "--responses", str(empty), "--out", str(tmp_path / "e.json")]) == 2
    )
    assert (
        "the file is empty); no report written" in capsys.readouterr().err
        and not (tmp_path / "e.json").exists()
    )


def test_the_table_marks_a_report_that_skipped_lines(math_file, tmp_path):
    out = tmp_path / "partial.json"
    assert evaluate.main(["--task", "math", "--responses", str(math_file), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    table = format_table([("Partial", report)])
    assert f"| Partial ({report['n_errors']} of {report['n'] + report['n_errors']} lines unscored) |" in table


def test_a_damaged_model_is_an_input_error(tokenizer, tiny_model, tmp_path, capsys):
    tiny_model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 64)
    code = evaluate.main(
        ["--task", "math", "--model", str(tmp_path / "m"), "--limit", "1", "--out", str(tmp_path / "r.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is damaged" in err and "model.safetensors" in err


@pytest.mark.parametrize("autocast", [False, True])
def test_eval_every_and_evaluate_py_agree_on_the_same_examples_and_seeds(tmp_path, tiny_model_dir, autocast):
    # the held-out figures a run logs (--eval-every, the fp32 policy in memory) and evaluate.py's of the
    # same weights (loaded from disk as float32, never a bf16 copy) are the same numbers, under autocast too
    import json

    from grpo.config import Config
    from grpo.models import load_models
    from grpo.run import held_out_evaluation
    from grpo.trainer import Trainer
    from tasks import get_task

    cfg = Config(task="math", reward="logprob", model=str(tiny_model_dir), eval_limit=3, max_new_tokens=6,
                 micro_batch_size=3, seed=4, autocast=autocast, out_dir=str(tmp_path / "run"))  # fmt: skip
    policy, reference, tokenizer = load_models(str(tiny_model_dir), "cpu", "auto")
    trainer = Trainer(cfg, policy, reference, tokenizer, get_task("math"))
    logged = held_out_evaluation(trainer)
    out = tmp_path / "report.json"
    flags = ["--limit", "3", "--max-new-tokens", "6", "--batch-size", "3", "--seed", "4"]
    flags += ["--autocast"] if autocast else []
    assert evaluate.main(["--task", "math", "--model", str(tiny_model_dir), *flags, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["autocast"] is autocast and report["settings"]["dtype"] == "float32"
    likelihood = report["likelihood"]
    assert logged["eval_score"] == report["score"]
    assert logged["eval_gold_logprob_per_token"] == likelihood["gold_logprob_per_token"]["mean"]
    assert logged["eval_reasoning_gain_per_token"] == likelihood["reasoning_gain_per_token"]["mean"]


def test_compare_shows_the_reasoning_length_and_short_share_as_diagnostics(tmp_path, capsys):
    # a gain in the gold's likelihood that comes with reasonings falling under 16 tokens is the reasoning
    # getting out of the way: the comparison shows both, the lengths marked as not scores
    a, b = compare_report("start", A_ROWS), compare_report("trained", B_ROWS)
    for report, lengths in ((a, {"e1": 60, "e2": 40, "e3": 50}), (b, {"e1": 10, "e2": 40, "e3": 20})):
        for record in report["records"]:
            n = lengths[record["id"]]
            record["likelihood"].update(reasoning_tokens=n, reasoning_short=int(n < 16), early_answer=0)
    assert evaluate.main(["--compare", *write_reports(tmp_path, a, b)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    # lengths d = [−50, 0, −30]: d̄ = −80/3; the short share d = [1, 0, 0]: 1/3
    assert lines[-3].startswith("| reasoning_tokens (not a score) | 50.000 | 23.333 | -26.667 |")
    assert lines[-2].startswith("| reasoning_short (not a score) | 0.000 | 0.333 | +0.333 |")
    assert lines[-1].startswith("| early_answer (not a score) | 0.000 | 0.000 | +0.000 |")


@pytest.mark.parametrize(
    "records, said",
    [
        ([1, 2], "record 0 is int '1', not an object"),
        ([{"id": "e1", "total": "high", "parts": {}}], "record 0 has total = 'high', not a number"),
        (
            [{"id": "e1", "total": 0.5, "parts": {"format": None}}],
            "record 0 has format = 'None', not a number",
        ),
    ],
)
def test_compare_names_a_damaged_record_in_one_line(tmp_path, capsys, records, said):
    good = compare_report("start", A_ROWS)
    bad = dict(compare_report("trained", B_ROWS), records=records)
    assert evaluate.main(["--compare", *write_reports(tmp_path, good, bad)]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_distinct_trigrams_by_hand():
    # "a b c a b c": abc, bca, cab, abc: 3 distinct of 4
    assert distinct_trigrams("a b c a b c") == 0.75
    assert distinct_trigrams("go go go go go") == 1 / 3  # ggg three times
    assert (
        distinct_trigrams("two words") == 1.0 and distinct_trigrams("") == 1.0
    )  # no trigram: nothing repeated
    assert distinct_trigrams("a  b\nc\ta b c") == 0.75  # words are split on any whitespace


def test_repetition_is_of_the_scored_reasoning():
    loop = " ".join(["I think"] * 10)  # 20 words, 18 trigrams, 2 distinct: 1/9
    # closed: the reasoning ends at </think>, whatever follows
    closed = repetition_figures(f"<think> a b c d </think> <answer>{loop}</answer>")
    assert closed == {"reasoning_distinct_trigrams": 1.0, "reasoning_repetitive": 0}
    # unclosed: up to its first answer tag, as the reward scores it; then the whole text
    early = repetition_figures(f"<think> a b c d <answer> {loop}")
    assert early == {"reasoning_distinct_trigrams": 1.0, "reasoning_repetitive": 0}
    rambling = repetition_figures(f"<think>{loop}")  # "<think>I" think I think …: 18 trigrams, 3 distinct
    assert rambling == {"reasoning_distinct_trigrams": 3 / 18, "reasoning_repetitive": 1}
    # the threshold: exactly half distinct is not repetitive, under half is
    assert repetition_figures("go go go go")["reasoning_repetitive"] == 0  # ggg twice: 1/2
    assert repetition_figures("go go go go go")["reasoning_repetitive"] == 1


def test_compare_derives_the_diagnostics_a_report_written_before_them_lacks(tmp_path, capsys):
    # a report from before the short, early-answer and repetition figures: they come from its records'
    # reasoning length, </think> and the response's text, as evaluate.py now records them (under `completion`,
    # the key such reports wrote the response under)
    a, b = compare_report("start", A_ROWS), compare_report("trained", B_ROWS)
    written = {  # id: (completion, reasoning tokens, closed)
        "e1": ("<think> a b c d e </think>", 60, 1),
        "e2": ("<think> a b c <answer>7</answer>", 10, 0),
        "e3": ("<think> no end in sight", 30, 0),
    }
    looped = "<think>" + " go" * 30  # 29 trigrams: (<think> go go) once, (go go go) 28 times: 2/29 distinct
    for report in (a, b):
        for record in report["records"]:
            text, n, closed = written[record["id"]]
            record["completion"] = looped if report is b and record["id"] == "e3" else text
            record["likelihood"].update(reasoning_tokens=n, think_closed=closed)
    assert evaluate.main(["--compare", *write_reports(tmp_path, a, b)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert lines[-3].startswith("| reasoning_short (not a score) | 0.333 | 0.333 | +0.000 |")  # e2: 10 < 16
    assert lines[-2].startswith(
        "| early_answer (not a score) | 0.333 | 0.333 | +0.000 |"
    )  # e2 answered unclosed
    assert lines[-1].startswith(
        "| reasoning_repetitive (not a score) | 0.000 | 0.333 | +0.333 |"
    )  # e3 looped
