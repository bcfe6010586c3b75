"""The plot command: which series it finds, the PNG files it writes, and the hint without matplotlib."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tools import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def metrics_lines() -> list[str]:
    rows = []
    for step in (1, 2, 3):
        row = {
            "step": step,
            "reward_mean": 0.1 * step,
            "reward_std": 0.05,
            "format_mean": 0.2 * step,
            "format_std": 0.1,
            "equation_mean": 0.0,
            "equation_std": 0.0,
            "format_rate": 0.2 * step,
            "kl": 0.001 * step,
            "clip_fraction": 0.0,
            "completion_length_mean": 100.0 - step,
            "completion_length_max": 128.0,
            "ratio_mean": 1.0,  # a _mean without a _std: not a reward part
            "grad_norm": None,
            "finish_reasons": {"length": 3, "stop": 1},
        }
        if step == 2:
            row.update(eval_score=0.25, eval_score_low=0.1, eval_score_high=0.4)
        rows.append(json.dumps(row))
    rows.insert(2, '{"step": 3, "reward_mean": ')  # a line cut short by a crash
    return rows


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "math-rule-test"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(metrics_lines()) + "\n")
    return run


def test_series_found_in_the_metrics(run_dir, capsys):
    rows = plot.read_metrics(run_dir / "metrics.jsonl")
    assert len(rows) == 3
    assert "metrics.jsonl:3: not valid JSON" in capsys.readouterr().err
    assert plot.reward_parts(rows) == ["reward", "format", "equation"]
    assert plot.series(rows, "eval_score") == ([2.0], [0.25])
    assert plot.series(rows, "grad_norm") == ([], [])  # null is not a number
    assert plot.series(rows, "kl") == ([1.0, 2.0, 3.0], [0.001, 0.002, 0.003])


def test_the_logprob_rewards_signals_are_not_reward_parts():
    # a logprob step logs its parts (format, logprob) and, with mean and std alike, signals that are not
    # parts of the reward: the gold's length, the reasoning's, the score before its normalisation
    row = {f"{name}_{stat}": 1.0 for name in ("reward", "format", "logprob", "gold_tokens", "reasoning_tokens",
                                             "logprob_raw", "rule_equation") for stat in ("mean", "std")}  # fmt: skip
    assert plot.reward_parts([row]) == ["reward", "format", "logprob", "rule_equation"]


def test_plot_writes_pngs(run_dir, tmp_path, capsys):
    out = tmp_path / "plots"
    assert plot.main([str(run_dir), "--out", str(out)]) == 0
    for name in ("rewards.png", "training.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert str(out / "rewards.png") in capsys.readouterr().out


def test_plot_defaults_to_the_run_directory(run_dir):
    assert plot.main([str(run_dir / "metrics.jsonl")]) == 0
    assert (run_dir / "training.png").read_bytes().startswith(PNG_MAGIC)


def test_without_matplotlib_the_install_hint(run_dir, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name, *a)
    )
    assert plot.main([str(run_dir)]) == 1
    assert "matplotlib is not installed: pip install 'logprob-grpo[plot]'" in capsys.readouterr().err
    assert not (run_dir / "rewards.png").exists()


def test_missing_metrics(tmp_path, capsys):
    assert plot.main([str(tmp_path)]) == 2
    assert "metrics.jsonl does not exist" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the optional plot extra")
def test_a_one_step_run_draws_its_points(tmp_path, monkeypatch):
    # a line through one point draws nothing: short series get a marker on every point
    import matplotlib.axes

    markers = []
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "plot",
        lambda self, *a, **kw: markers.append(kw.get("marker")) or original(self, *a, **kw),
    )
    (tmp_path / "metrics.jsonl").write_text(metrics_lines()[0] + "\n")
    assert plot.main([str(tmp_path), "--out", str(tmp_path / "plots")]) == 0
    assert markers and all(m == "o" for m in markers)


def write_run(path, rows):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the optional plot extra")
def test_several_runs_one_figure_a_line_each(tmp_path, monkeypatch, capsys):
    import matplotlib.axes

    lines = []  # (label, values) of every line drawn, in order
    original = matplotlib.axes.Axes.plot
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "plot",
        lambda self, x, y, **kw: lines.append((kw.get("label"), list(y))) or original(self, x, y, **kw),
    )
    a = write_run(
        tmp_path / "a", [{"step": s, "kl": 0.1 * s, "reasoning_tokens_mean": 60.0 + s} for s in (1, 2)]
    )
    b = write_run(tmp_path / "b", [{"step": s, "kl": s / 4} for s in (1, 2, 3)])
    out = tmp_path / "docs" / "both.png"
    assert plot.main([f"seed 5={a}", str(b), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert capsys.readouterr().out.strip() == str(out)
    # two panels (reasoning tokens, then KL: RUN_SERIES's order), each with a line per run, labelled;
    # b logged no reasoning length, so its line in that panel is empty
    assert lines == [
        ("seed 5", [61.0, 62.0]),
        ("b", []),
        ("seed 5", [0.1, 0.2]),
        ("b", [0.25, 0.5, 0.75]),
    ]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the optional plot extra")
def test_several_runs_without_a_shared_series_or_with_a_missing_one(tmp_path, capsys):
    a = write_run(tmp_path / "a", [{"step": 1, "reward_mean": 0.5}])
    b = write_run(tmp_path / "b", [{"step": 1, "loss": 0.5}])
    assert plot.main([str(a), str(b), "--out", str(tmp_path)]) == 1
    assert "none of the runs logged a series" in capsys.readouterr().err
    assert not (tmp_path / "runs.png").exists()
    assert plot.main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "nowhere/metrics.jsonl does not exist" in capsys.readouterr().err
