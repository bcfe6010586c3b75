import json
import re
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from grpo.tags import ANSWER_CLOSE
from tools import bench, bench_measure, bench_report, bench_setup

REPO = Path(__file__).resolve().parents[1]


def test_useful_lengths_stop_where_the_rollout_would(tokenizer):
    eos = tokenizer.eos_token_id
    rows = [
        tokenizer.encode("ab") + [eos] + tokenizer.encode("cd"),  # end-of-turn: kept, 3 tokens
        tokenizer.encode("x</answer>yz"),  # `</` + `answer>` is 8 tokens, the stop string spans them
        tokenizer.encode("abcdefghijk"),  # no stop: all 11, as generate's longest row
    ]
    width = max(len(r) for r in rows)  # generate pads finished rows up to the longest
    new = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    assert bench_measure.useful_lengths(tokenizer, new, [eos], [ANSWER_CLOSE]) == [3, 9, 11]
    assert bench_measure.useful_lengths(tokenizer, new[:1], [], []) == [width]


def test_peak_memory_sees_a_tensor_allocated_inside():
    with bench_setup.PeakMemory(torch.device("cpu")) as memory:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del x
    assert 48 * 2**20 < memory.peak < 512 * 2**20
    with bench_setup.PeakMemory(
        torch.device("meta")
    ) as elsewhere:  # no way to measure: None, not a made-up 0
        pass
    assert elsewhere.peak is None
    scoring = {"rows": 2, "positions": 5, "scored_tokens": 4, "micro_batch_size": 8, "group_size": 2}
    scoring |= {
        name: {"tokens_per_s": 1.0, "peak_bytes": None} for name in ("ours", "ours_whole_batch", "naive")
    }
    scoring |= {"memory_vs_naive": None, "speed_vs_naive": 1.0, "max_abs_difference": 0.0}
    text = bench_report.table(
        {"machine": {"cpu": "x"}, "model": "m", "device": "mps", "dtype": "float32", "scoring": scoring}
    )
    assert "peak n/a" in text and "memory ours/naive n/a" in text


def test_unknown_random_init_shape_is_a_clear_error(tokenizer):
    with pytest.raises(SystemExit, match="--random-init takes one of"):
        bench_setup.random_model("qwen9-1t", tokenizer, torch.device("cpu"), torch.float32)


@pytest.mark.slow
def test_bench_runs_end_to_end_on_a_random_model(tmp_path):
    config = tmp_path / "config.json"
    LlamaConfig(
        vocab_size=49152,  # the packaged tokenizer's
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
    ).to_json_file(config)
    out = tmp_path / "bench.json"
    report = bench.main(
        ["--random-init", str(config), "--batches", "4,8", "--group-size", "2", "--max-new-tokens", "4"]
        + [
            "--fixed-tokens",
            "3",
            "--step-shape",
            "1,2,2",
            "--bf16",
            "on",
            "--compile-shape",
            "4,3",
            "--ops-batch",
            "4",
        ]
        + ["--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [r["batch"] for r in report["rollout"]] == [4, 8]
    for r in report["rollout"] + [report["fixed_decode"]]:
        assert 0 < r["ours"]["useful_tokens"] <= r["ours"]["computed_tokens"]
        assert r["generate"]["useful_tokens"] <= r["generate"]["computed_tokens"]
        assert r["rollout_vs_generate"] > 0
    for r in report["rollout"]:  # the previous sampler on the same prompts and seed; ours again under bf16
        assert 0 < r["previous"]["useful_tokens"] == r["previous"]["computed_tokens"]
        assert r["rollout_vs_previous"] > 0
        assert 0 < r["ours_bf16"]["useful_tokens"] <= r["ours_bf16"]["computed_tokens"]
        assert r["bf16_vs_previous"] == pytest.approx(
            r["ours_bf16"]["useful_tokens_per_s"] / r["previous"]["useful_tokens_per_s"]
        )
    ops = report[
        "ops"
    ]  # the static step reads the tokens every CHECK_EVERY steps, the previous one every step
    assert ops["ours"]["aten_ops_per_step"] > 0 and ops["previous"]["host_reads_of_tokens"] == 1
    assert ops["ours"]["host_reads_of_tokens"] == 1 / 8 and ops["ours"]["item_reads_per_step"] == 0
    compiled = report["compile"]
    assert (
        compiled["batch"] == 4 and compiled["compiled_tokens_per_s"] > 0 and compiled["compiled_vs_eager"] > 0
    )
    fixed = report["fixed_decode"]  # no stops: both compute and keep batch × length tokens
    assert fixed["ours"]["useful_tokens"] == fixed["generate"]["useful_tokens"] == 4 * 3
    assert report["scoring"]["max_abs_difference"] < 1e-4
    assert [
        (r["group_size"], r["max_new_tokens"], r["autocast_bf16"], r["sampler"]) for r in report["step"]
    ] == [
        (2, 2, False, "ours"),
        (2, 2, False, "previous"),
        (2, 2, True, "ours"),
    ]
    assert report["step_vs_previous"] > 0
    fp32, previous, bf16 = (r["total_seconds"] for r in report["step"])
    assert report["bf16_speedup"] == pytest.approx(fp32 / bf16)
    assert report["bf16_vs_previous"] == pytest.approx(previous / bf16)
    printed = bench_report.table(report)
    assert "bf16/prev" in printed and "bf16 autocast step:" in printed
    assert [(r["group_size"], r["max_new_tokens"]) for r in report["scaling"]] == [(2, 2), (4, 2), (2, 4)]
    assert report["scaling"][1]["completion_tokens"] == 2 * report["scaling"][0]["completion_tokens"]
    assert set(report["scaling_ratios"]) == {"double_group", "double_length"}


def test_the_step_walk_counts_the_returns_to_a_file_left_earlier():
    from tools.step_walk import Function, returns

    files = ["a.py", "b.py", "a.py", "a.py", "c.py", "b.py", "b.py"]  # back to a.py once, to b.py once
    walked = [Function(file, f"f{i}", "step", "rollout", "read", None) for i, file in enumerate(files)]
    assert returns(walked) == 2
    assert returns(walked[:2]) == 0


def test_the_step_walk_reads_what_a_callback_of_the_step_calls_with_the_callback():
    from tools.step_walk import Function, _met

    update = Function("grpo/decode.py", "Layer.update", "step", "rollout", "callback", None)
    setup_entry = Function("train.py", "run", "setup", "prompts", "callback", None)  # called by the tool
    assert _met("grpo/decode.py", update) == "callback"
    assert _met("grpo/trainer.py", setup_entry) == "read"  # the set-up's own entry is not a library's
    assert _met("grpo/rollout.py", None) == "callback"
    assert _met("tasks/arithmetic.py", "tasks/countdown.py") == "domain"
    assert _met("grpo/tags.py", "tasks/countdown.py") == "read"


@pytest.mark.slow
def test_the_step_walk_traces_train_py_to_the_first_optimizer_step_and_is_the_readmes():
    from tools.step_walk import PHASES, is_machinery, reading, returns, walk

    functions = walk("math")
    assert (functions[0].file, functions[0].name) == ("train.py", "run")
    assert len({str(f) for f in functions}) == len(functions)  # each once, at its first call
    order = [str(f) for f in functions]
    # the step's phases in the order Trainer.step runs them, and nothing after the loss of the first update
    phases = ["grpo/trainer.py:Trainer.step", "grpo/rollout.py:rollout", "grpo/rewards.py:logprob_rewards",
              "grpo/loss.py:group_advantages", "grpo/trainer.py:Trainer.policy_update",
              "grpo/loss.py:grpo_loss"]  # fmt: skip
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases)
    assert not any("<" in f.name for f in functions)  # comprehensions, lambdas, class bodies
    assert all(f.file.startswith(("grpo/", "tasks/", "train.py")) for f in functions)
    # what runs before Trainer.step is the set-up; in the step, each block's functions come in its order
    step = order.index("grpo/trainer.py:Trainer.step")
    assert {f.part for f in functions[:step]} == {"setup"} and {f.part for f in functions[step:]} == {"step"}
    blocks = [list(PHASES).index(f.phase) for f in functions[step:]]
    assert blocks == sorted(blocks) and functions[order.index("grpo/loss.py:grpo_loss")].phase == "update"
    # the kv cache's update is transformers' call, Countdown's parser the domain's own: neither is on the list
    met = {str(f): f.met for f in functions}
    assert met["grpo/decode.py:PreallocatedLayer.update"] == "callback"
    # and what only the cache's update calls is read with it
    assert met["grpo/decode.py:PreallocatedLayer.lazy_initialization"] == "callback"
    assert met["tasks/arithmetic.py:equation_reward"] == "domain"
    assert met["tasks/countdown.py:CountdownTask.score"] == "read"

    # the README's "One step, in the order to read it" lists exactly the reader's walk, in its order
    readme = (REPO / "README.md").read_text()
    listed = readme.split("<!-- step walk:", 1)[1].split("<!-- end of the step walk -->", 1)[0]
    assert re.findall(r"`([\w/]+\.py:[\w.]+)`", listed) == [str(f) for f in reading(functions)]
    for shown in (reading(functions), [f for f in reading(functions) if not is_machinery(f)]):
        counted = len(shown), len({f.file for f in shown}), returns(shown)
        said = f"{counted[0]} functions in {counted[1]} files, {counted[2]} returns to a file left earlier"
        assert said in " ".join(readme.split())  # (the README may break the line anywhere)
    # the machinery is set in italics, the algorithm not
    italic = set(re.findall(r"\*`([\w/]+\.py:[\w.]+)`\*", listed))
    assert italic == {str(f) for f in reading(functions) if is_machinery(f)} and italic


def test_learn_check_over_seeds_is_a_t_interval_over_the_runs():
    from tools.learn_check import over_runs, parse_args

    # the README's five runs: mean 0.1262; squared deviations sum to 5.7988e-3, s² = 1.4497e-3,
    # s/√5 = 0.0170276, t_{0.975, 4} = 2.776445: ± 0.047276 → [0.078924, 0.173476]
    runs = over_runs([0.129, 0.079, 0.120, 0.118, 0.185])
    assert runs["n"] == 5 and runs["mean"] == pytest.approx(0.1262, abs=1e-12)
    assert runs["low"] == pytest.approx(0.078924, abs=1e-5) and runs["high"] == pytest.approx(
        0.173476, abs=1e-5
    )
    assert over_runs([0.1])["low"] is None  # one run: no spread over runs to judge by
    assert parse_args(["--seeds", "0", "3"]).seeds == [0, 3] and parse_args([]).seeds is None
    with pytest.raises(SystemExit):
        parse_args(["--seed", "1", "--seeds", "0", "1"])


def test_learn_check_over_seeds_passes_on_the_runs_mean_not_on_each_run(monkeypatch, capsys):
    import tools.learn_check as learn_check

    # seed 1 fails alone (its interval reaches below 0), yet the three runs' mean is surely above 0:
    # differences 0.12, 0.08, 0.13: mean 0.11, s = 0.026458, ± 4.302653 · 0.026458/√3 = 0.065723
    rows = {0: 0.12, 1: 0.08, 2: 0.13}
    monkeypatch.setattr(
        learn_check,
        "one_run",
        lambda args, seed: {"difference": rows[seed], "low": -0.01 if seed == 1 else 0.02},
    )
    assert learn_check.main(["--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        "over 3 runs passed: mean difference +0.110 [+0.044, +0.176]" in out and "2 of 3 runs passed" in out
    )
    rows.update({1: -0.2})  # a run that went the other way: the mean's interval now reaches below 0
    assert learn_check.main(["--seeds", "0", "1", "2"]) == 1
    assert "FAILED" in capsys.readouterr().out
