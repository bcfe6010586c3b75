"""Plot a run's metrics.jsonl as PNG files: every reward part, and the signals that say how training goes.

    python -m tools.plot runs/math-rule-20250101-120000            # rewards.png and training.png, in the run
    python -m tools.plot runs/math-rule-20250101-120000 --out plots/
    python -m tools.plot "seed 5=runs/a" "seed 7=runs/b" --out runs.png   # several runs, one line each

rewards.png has one panel per reward series: `reward` and every part the trainer logs as a `<part>_mean`
with its `<part>_std` (format, equation, logprob, similarity, …), the mean as a line and mean ± std as a
band. A `_mean` without a `_std` (completion_length_mean, ratio_mean) is not a reward part, nor is a
signal a logprob run logs beside its parts (gold_tokens, reasoning_tokens, …: grpo.rewards.LOGPROB_SIGNALS). training.png
has the named series that are present: format rate, KL to the reference, clip fraction, completion length,
the fraction of groups with no reward spread, and the held-out figures, only logged on some steps: the score
(`eval_score`) and the gold answer's log-prob per token after the sampled reasoning, both with their CI when
`_low` and `_high` are logged too, and the reasoning gain per token.

Given several runs (each `DIR` or `LABEL=DIR`), it draws one figure, `--out` (a .png path, or runs.png in a
folder), with one line per run in each panel of RUN_SERIES that some run logged: the training-time figures
to set runs side by side (the gold's log-prob per token, the scored reasoning's length and short share, the
answered-early and `</think>` rates, KL).

matplotlib is optional (`pip install 'logprob-grpo[plot]'`); it draws with the Agg backend, so no display
is needed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "matplotlib is not installed: pip install 'logprob-grpo[plot]' (or pip install matplotlib)"

# (key in metrics.jsonl, panel title), drawn on training.png when present
TRAINING_SERIES = (
    ("format_rate", "format rate"),
    ("kl", "KL(π_θ ‖ π_ref), k3 estimate"),
    ("clip_fraction", "clip fraction"),
    ("completion_length_mean", "completion length (tokens)"),
    ("zero_std_fraction", "groups with zero reward std"),
    ("eval_score", "held-out score"),
    ("eval_gold_logprob_per_token", "held-out log P(gold | p, r) per token"),
    ("eval_reasoning_gain_per_token", "held-out reasoning gain per token"),
)
# (key, panel title), one line per run, when several runs are drawn together
RUN_SERIES = (
    ("logprob_per_token_mean", "log P(gold | p, r) per token (rollouts)"),
    ("reasoning_tokens_mean", "scored reasoning (tokens)"),
    ("reasoning_too_short_mean", "reasoning under the length guard"),
    ("early_answer_mean", "answered before </think>"),
    ("think_closed_mean", "</think> closed"),
    ("kl", "KL(π_θ ‖ π_ref), k3 estimate"),
)
FEW = 30  # a series of this many points or fewer is drawn with a marker on each (one point is no line)
# held-out series logged with their 95% CI (`_low`, `_high`), drawn as error bars
WITH_CI = ("eval_score", "eval_gold_logprob_per_token")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl, in order; a line that is not one is skipped with a warning."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            print(f"warning: {path}:{number}: not valid JSON ({err.msg}), skipped", file=sys.stderr)
            continue
        if not isinstance(row, dict):
            print(f"warning: {path}:{number}: not a JSON object, skipped", file=sys.stderr)
            continue
        rows.append(row)
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where `key` is a finite number; the step is `step`, else the line's rank."""
    steps, values = [], []
    for i, row in enumerate(rows, start=1):
        value = _number(row.get(key))
        if value is not None:
            step = _number(row.get("step"))
            steps.append(float(i) if step is None else step)
            values.append(value)
    return steps, values


def by_step(rows: Sequence[dict[str, Any]], key: str) -> dict[float, float]:
    return dict(zip(*series(rows, key), strict=True))


def reward_parts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Names X logged as both X_mean and X_std, but for the logprob reward's signals (gold_tokens, …: not parts
    of the reward, grpo.rewards.LOGPROB_SIGNALS): `reward` first, then the parts in the order first logged."""
    from grpo.rewards import LOGPROB_SIGNALS

    names = dict.fromkeys(
        key.removesuffix("_mean")
        for row in rows
        for key in row
        if key.endswith("_mean")
        and key.removesuffix("_mean") + "_std" in row
        and key.removesuffix("_mean") not in LOGPROB_SIGNALS
    )
    return sorted(names, key=lambda name: name != "reward")  # stable: the rest keep their order


def _grid(plt, n: int, title: str):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    fig.suptitle(title)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(rows: Sequence[dict[str, Any]], out_dir: str | Path, title: str = "") -> list[Path]:
    """Write rewards.png and training.png (each only when it has something to show); return their paths."""
    plt = _pyplot()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    parts = reward_parts(rows)
    if parts:
        fig, axes = _grid(
            plt, len(parts), f"{title} rewards (mean ± std over the step's completions)".strip()
        )
        for ax, name in zip(axes, parts, strict=True):
            steps, means = series(rows, f"{name}_mean")
            ax.plot(steps, means, lw=1.2, marker="o" if len(steps) <= FEW else None, ms=3)
            band = by_step(rows, f"{name}_std")
            if all(s in band for s in steps):
                low = [m - band[s] for s, m in zip(steps, means, strict=True)]
                high = [m + band[s] for s, m in zip(steps, means, strict=True)]
                ax.fill_between(steps, low, high, alpha=0.2, lw=0)
            ax.set_title(name, fontsize=10)
            _step_axis(ax, rows)
        fig.tight_layout()
        written.append(_save(plt, fig, out_dir / "rewards.png"))

    present = [(key, label) for key, label in TRAINING_SERIES if series(rows, key)[0]]
    if present:
        fig, axes = _grid(plt, len(present), f"{title} training".strip())
        for ax, (key, label) in zip(axes, present, strict=True):
            steps, values = series(rows, key)
            dots = key.startswith("eval_") or len(steps) <= FEW
            ax.plot(steps, values, lw=1.2, marker="o" if dots else None, ms=3)
            if key == "completion_length_mean" and series(rows, "completion_length_max")[0]:
                ax.plot(*series(rows, "completion_length_max"), lw=0.8, ls="--", label="max",
                        marker="o" if dots else None, ms=2)  # fmt: skip
                ax.legend(fontsize=8)
            if key in WITH_CI:  # sparse points: the CI as error bars, where it is logged
                low, high = by_step(rows, f"{key}_low"), by_step(rows, f"{key}_high")
                if all(s in low and s in high for s in steps):
                    below = [v - low[s] for s, v in zip(steps, values, strict=True)]
                    above = [high[s] - v for s, v in zip(steps, values, strict=True)]
                    ax.errorbar(steps, values, yerr=[below, above], fmt="none", capsize=3)
            ax.set_title(label, fontsize=10)
            _step_axis(ax, rows)
        fig.tight_layout()
        written.append(_save(plt, fig, out_dir / "training.png"))
    return written


def plot_runs(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path, title: str = ""
) -> Path | None:
    """One figure of (label, rows) runs: a panel per RUN_SERIES key that some run logged, a line per run in
    it. Returns the PNG's path, or None (nothing written) when no run logged any of them."""
    plt = _pyplot()

    present = [(key, label) for key, label in RUN_SERIES if any(series(rows, key)[0] for _, rows in runs)]
    if not present:
        return None
    fig, axes = _grid(plt, len(present), title)
    for ax, (key, label) in zip(axes, present, strict=True):
        for name, rows in runs:
            steps, values = series(rows, key)
            ax.plot(steps, values, lw=1.2, marker="o" if 0 < len(steps) <= FEW else None, ms=2.5, label=name)
        ax.set_title(label, fontsize=10)
        _step_axis(ax, [row for _, rows in runs for row in rows])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(plt, fig, path)


def _step_axis(ax, rows: Sequence[dict[str, Any]]) -> None:
    """The same step range on every panel, so that a sparse series (eval_score) lines up with the rest."""
    from matplotlib.ticker import MaxNLocator

    steps = series(rows, "step")[1] or [1.0, float(len(rows))]
    if min(steps) < max(steps):
        ax.set_xlim(min(steps), max(steps))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def _save(plt, fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plot", description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir",
        nargs="+",
        help="a run directory written by train.py (or its metrics.jsonl); several (DIR or LABEL=DIR): one figure",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="where the PNG files go (default: the run directory); with several runs, a .png path or a folder "
        "for runs.png (default: runs.png here)",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    if len(args.run_dir) > 1:
        return _plot_several(args.run_dir, args.out)
    metrics, rows, failed = _load(args.run_dir[0])
    if failed:
        return failed
    out_dir = Path(args.out) if args.out else metrics.parent
    written = plot_run(rows, out_dir, title=metrics.parent.name)
    if not written:
        print(f"error: {metrics} has none of the series this command plots", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def _load(spec: str) -> tuple[Path, list[dict[str, Any]], int]:
    """(metrics.jsonl, its rows, 0), or an exit status (2: no such file, 1: no metrics) with the error said."""
    run = Path(spec)
    metrics = run if run.is_file() else run / "metrics.jsonl"
    if not metrics.is_file():
        print(f"error: {metrics} does not exist (is {run} a run directory?)", file=sys.stderr)
        return metrics, [], 2
    rows = read_metrics(metrics)
    if not rows:
        print(f"error: {metrics} holds no metrics", file=sys.stderr)
        return metrics, [], 1
    return metrics, rows, 0


def _plot_several(specs: Sequence[str], out: str | None) -> int:
    runs = []
    for spec in specs:
        label, _, where = spec.partition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        metrics, rows, failed = _load(where)
        if failed:
            return failed
        runs.append((label or metrics.parent.name, rows))
    path = Path(out or "runs.png")
    if path.suffix.lower() != ".png":
        path = path / "runs.png"
    written = plot_runs(runs, path)
    if written is None:
        print("error: none of the runs logged a series this command plots together", file=sys.stderr)
        return 1
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
