"""The flat Config, its generated CLI, its preset and its validation."""

from __future__ import annotations

import dataclasses
import functools
import re

import pytest

from grpo import config as grpo_config
from grpo.cli import field_docs
from grpo.config import PRESETS, Config, UsageError, use_reasoning_mask
from tasks import TASKS

# train.py's parser and parse, over the project's domains
build_parser = functools.partial(grpo_config.build_parser, TASKS)
parse_config = functools.partial(grpo_config.parse_config, tasks=TASKS)

FIELDS = [f.name for f in dataclasses.fields(Config)]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------------------------------
# Docstrings and --help


def test_every_field_has_a_docstring():
    docs = field_docs(Config)
    assert sorted(docs) == sorted(FIELDS)
    for name in FIELDS:
        assert docs[name].strip(), name
    # the docstring is the literal under the field, whitespace collapsed
    assert (
        docs["group_size"]
        == "G: completions sampled per prompt; each is compared with the mean of its group."
    )


def test_help_lists_every_flag_with_its_docstring(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    help_text = build_parser().format_help()
    options = help_text.split("options:", 1)[1]  # past the usage block, which also lists the flags
    squeezed = "".join(options.split())  # argparse wraps lines (and breaks at hyphens)
    docs = field_docs(Config)
    for name in FIELDS:
        # each option's entry starts a line: "  --task {math,poetry}  Domain ..." or "  --one-think, --no-one-think"
        assert re.search(rf"^ +{re.escape(flag(name))}(?=[ ,\n])", options, re.MULTILINE), name
        assert "".join(docs[name].split()) in squeezed, name
    # booleans get both spellings
    assert "--no-one-think" in options and "--no-reasoning-mask" in options


# --------------------------------------------------------------------------------------------------
# Parsing


def test_parse_config_defaults_are_the_dataclass_defaults():
    config = parse_config(["--device", "cpu"])
    # out_dir is the one default filled in at parse time: a fresh, dated directory per run
    assert config.out_dir.startswith("runs/math-rule-")
    config.out_dir = None
    assert config == Config(
        device="cpu", task="math"
    )  # --task's default is the registry's first (tasks.TASKS)
    assert (config.task, config.reward, config.group_size, config.lr) == ("math", "rule", 4, 1e-5)
    assert config.one_think is True and config.reasoning_mask is None and config.preset is None


def test_a_gpu_run_gets_the_poster_scale_unless_told_otherwise():
    # on_gpu reads the flag; no GPU is needed to parse "--device cuda"
    config = parse_config(["--device", "cuda"])
    assert (config.steps, config.prompts_per_step, config.max_new_tokens) == (100, 16, 1024)
    assert (config.lr, config.beta) == (1e-6, 0.001)
    assert parse_config(["--device", "cuda:1", "--prompts-per-step", "4"]).prompts_per_step == 4
    cpu = parse_config(["--device", "cpu"])
    assert (cpu.steps, cpu.prompts_per_step, cpu.max_new_tokens) == (25, 4, 96)
    # the preset wins over the GPU defaults, the command line over both
    assert parse_config(["--device", "cuda", "--preset", "poster"]).lr == 5e-7


def test_a_logprob_run_on_a_cpu_gets_the_measured_recipe():
    for task in ("math", "poetry"):
        config = parse_config(["--device", "cpu", "--task", task, "--reward", "logprob"])
        assert (config.lr, config.unclosed, config.scale_advantages) == (3e-5, "bar_early_answer", True)
        assert config.min_reasoning_tokens == 16  # the length guard stays on
    # each option can still be set on the command line; the jsonl task and a GPU run keep the class defaults
    given = parse_config(["--device", "cpu", "--reward", "logprob", "--unclosed", "score", "--lr", "1e-5"])
    assert (given.unclosed, given.lr, given.scale_advantages) == ("score", 1e-5, True)
    jsonl = ["--device", "cpu", "--task", "jsonl", "--data", "x.jsonl", "--reward", "logprob"]
    for argv in (jsonl, ["--device", "cuda", "--reward", "logprob"]):
        config = parse_config(argv)
        assert (config.unclosed, config.scale_advantages) == ("score", False)
    # the poster's recipe is the poster's on a CPU too
    poster = parse_config(["--device", "cpu", "--reward", "logprob", "--preset", "poster"])
    assert (poster.unclosed, poster.scale_advantages, poster.min_reasoning_tokens, poster.lr) == (
        "score",
        False,
        0,
        5e-7,
    )


def test_poetry_on_a_cpu_trains_at_its_own_learning_rate():
    assert parse_config(["--device", "cpu", "--task", "poetry"]).lr == 3e-5
    assert parse_config(["--device", "cpu", "--task", "math"]).lr == 1e-5
    assert parse_config(["--device", "cpu", "--task", "poetry", "--lr", "2e-6"]).lr == 2e-6
    assert parse_config(["--device", "cuda", "--task", "poetry"]).lr == 1e-6
    assert parse_config(["--device", "cpu", "--task", "poetry", "--preset", "poster"]).lr == 5e-7


def test_flags_parse_into_their_fields():
    config = parse_config(
        [
            "--group-size",
            "8",
            "--lr",
            "3e-6",
            "--batch-norm",
            "zscore",
            "--data",
            "poems.csv",
            "--task",
            "poetry",
        ]
    )
    assert config.group_size == 8 and isinstance(config.group_size, int)
    assert config.lr == 3e-6
    assert config.batch_norm == "zscore"
    assert config.data == "poems.csv"


def test_no_one_think_sets_false():
    assert parse_config(["--no-one-think"]).one_think is False
    assert parse_config(["--one-think"]).one_think is True


def test_reasoning_mask_flags_and_default():
    assert parse_config([]).reasoning_mask is None
    assert parse_config(["--reasoning-mask"]).reasoning_mask is True
    assert parse_config(["--no-reasoning-mask"]).reasoning_mask is False


def test_use_reasoning_mask_defaults_by_reward():
    assert use_reasoning_mask(parse_config(["--reward", "logprob"])) is True
    assert use_reasoning_mask(parse_config(["--reward", "rule"])) is False
    # explicit flags win either way
    assert use_reasoning_mask(parse_config(["--reward", "logprob", "--no-reasoning-mask"])) is False
    assert use_reasoning_mask(parse_config(["--reward", "rule", "--reasoning-mask"])) is True


def test_poster_preset():
    config = parse_config(["--preset", "poster"])
    assert config.model == "Qwen/Qwen3-1.7B"
    assert config.lr == 5e-7
    assert config.max_new_tokens == 1024
    assert config.lr_schedule == "cosine" and config.warmup_ratio == 0.03
    assert config.dtype == "auto" and config.autocast  # fp32 master weights, bf16 compute
    for name, value in PRESETS["poster"].items():
        assert getattr(config, name) == value, name


def test_an_explicit_option_wins_over_the_preset():
    config = parse_config(["--preset", "poster", "--lr", "1e-5"])
    assert config.lr == 1e-5
    assert config.model == "Qwen/Qwen3-1.7B"  # the rest of the preset still applies
    # order on the command line does not matter
    assert parse_config(["--lr", "1e-5", "--preset", "poster"]).lr == 1e-5


def test_an_explicit_option_equal_to_the_default_wins_over_the_preset():
    # 96 is Config's default; the preset's is 1024. The Config docstring: "Options given explicitly still win."
    assert parse_config(["--preset", "poster", "--max-new-tokens", "96"]).max_new_tokens == 96


# --------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--group-size", "1"], "--group-size must be ≥ 2"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--clip-eps", "1"], "--clip-eps must be in [0, 1)"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--temperature", "0"], "--temperature 0 makes every completion"),
        (["--temperature", "0", "--reward", "logprob"], "--temperature 0 makes every completion"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--beta", "nan"], "--beta must be a finite number"),
        (["--data", "poems.csv", "--task", "math"], "--data is read by --task poetry"),
    ],
)
def test_invalid_values_are_refused_with_a_message(argv, message):
    with pytest.raises(UsageError) as error:
        parse_config(argv)
    assert message in str(error.value)


def test_valid_edges_are_accepted():
    assert parse_config(["--group-size", "2", "--top-p", "1", "--clip-eps", "0"]).group_size == 2
    assert parse_config(["--temperature", "0.01", "--reward", "logprob"]).temperature == 0.01


@pytest.mark.parametrize(
    "argv",
    [["--task", "chess"], ["--loss-aggregation", "mean"], ["--group-size", "four"], ["--dtype", "foo"]],
)
def test_argparse_rejects_bad_choices_and_types(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2  # argparse's usage error
    assert "invalid" in capsys.readouterr().err


def test_autocast_with_bf16_weights_is_refused():
    with pytest.raises(UsageError, match="--autocast keeps float32 weights"):
        parse_config(["--autocast", "--dtype", "bfloat16"])
    assert parse_config(["--autocast"]).autocast


def test_the_choices_of_each_option_are_its_literal_type_and_every_task_name_builds_a_task():

    from tasks import get_task

    actions = {a.dest: a for a in build_parser()._actions}
    assert actions["loss_aggregation"].choices == ("sequence", "token", "constant")
    assert actions["batch_norm"].choices == ("none", "zscore", "minmax")
    assert actions["unclosed"].choices == ("score", "bar_early_answer", "batch_min")
    assert actions["preset"].choices == ("poster",) and actions["preset"].default is None
    assert actions["task"].choices == ("math", "poetry", "jsonl") and actions["task"].default == "math"
    assert all(task.name == name for name, task in TASKS.items())  # the registry's key is the task's name
    assert get_task("math").name == "math"  # the others need a data file; an unknown name is refused:
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")


def test_auto_on_off_options():
    # --autocast and --compile take auto, on or off; alone they mean on, --no-x means off, unset is auto
    assert parse_config([]).autocast is None and parse_config([]).compile is None
    assert parse_config(["--autocast"]).autocast is True
    assert parse_config(["--autocast", "off"]).autocast is False
    assert parse_config(["--autocast", "auto"]).autocast is None
    assert parse_config(["--no-autocast"]).autocast is False
    assert parse_config(["--compile", "on"]).compile is True
    assert parse_config(["--compile", "--seed", "3"]).compile is True
    with pytest.raises(SystemExit):
        parse_config(["--compile", "maybe"])
    with pytest.raises(SystemExit):
        parse_config(["--no-compile", "on"])


def test_compile_is_refused_with_fsdp():
    with pytest.raises(UsageError, match="--compile captures the decode step"):
        parse_config(["--compile", "on", "--fsdp"])
