"""Reports as people read them: a terminal summary, the poster's table in Markdown, a comparison table, and
the report files themselves (JSON, as `grpo.evaluation.build_report` builds them), read back with checks.

evaluate.py is the command line over this module (--table, --compare, and the summary of every mode).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from grpo.evaluation import REPETITIVE_TRIGRAMS, SHORT_REASONING_TOKENS

Report = Mapping[str, Any]
# the forms a table's reports come in: {row name: report or [reports]}, [(row name, report)] or [report]
Reports = Mapping[str, Report | Iterable[Report]] | Iterable[tuple[str, Report] | Report]

# the likelihood figures that tables and summaries show, with their labels
SHOWN_LIKELIHOOD = {
    "gold_logprob_per_token": "gold log-prob/token",
    "gold_logprob_empty_per_token": "gold log-prob/token, empty reasoning",
    "reasoning_gain_per_token": "reasoning gain/token",
}
# what the likelihood figures are read by: a gain that comes with shorter reasonings is not elicited reasoning
SHOWN_REASONING = {
    "reasoning_tokens": "scored reasoning, tokens",
    "reasoning_short": f"reasoning under {SHORT_REASONING_TOKENS} tokens",
    "early_answer": "answered before </think>",
    "reasoning_repetitive": f"reasoning under {REPETITIVE_TRIGRAMS:.0%} distinct trigrams",
}


def format_summary(report: Mapping[str, Any]) -> str:
    """A few lines for a terminal: the score, every part and the total, each with its 95% CI, then the
    likelihood figures when the report has them."""

    def number(x: float | None, sign: str = "") -> str:
        return "–" if x is None else f"{x:{sign}.3f}"

    def line(label: str, ci: Mapping[str, Any], width: int = 12, sign: str = "") -> str:
        interval = f"95% CI [{number(ci['low'])}, {number(ci['high'])}]"
        return f"  {label:<{width}} {number(ci['mean'], sign)}  {interval}"

    head = f"{report['task']}: {report.get('name') or 'run'}, {report['n']} examples scored"
    if report.get("n_errors"):
        head += f", {report['n_errors']} lines with errors"
    lines = [head, f"  {'score':<12} {number(report['score'])}"]
    lines += [line(name, ci) for name, ci in report["parts"].items()]
    lines.append(line("total", report["total"]))
    if report.get("likelihood"):
        lines.append("  log P(gold | prompt, reasoning), teacher-forced, in nats:")
        shown = {**SHOWN_LIKELIHOOD, "think_closed": "</think> closed", **SHOWN_REASONING}
        likelihood = report["likelihood"]
        lines += [
            line(f"  {label}", likelihood[name], 38, " ")
            for name, label in shown.items()
            if name in likelihood
        ]
    for error in report.get("errors", [])[:5]:
        lines.append(f"  line {error['line']}: {error['message']}")
    return "\n".join(lines)


def report_name(report: Mapping[str, Any], default: str = "run") -> str:
    return report.get("name") or report.get("settings", {}).get("name") or default


def _named_reports(reports: Reports) -> Iterable[tuple[str, Report]]:
    """(row name, report) pairs from {name: report or [reports]}, [(name, report)] or [report]."""
    if isinstance(reports, Mapping):
        for name, value in reports.items():
            for report in [value] if isinstance(value, Mapping) else value:
                yield name, report
        return
    for i, item in enumerate(reports):
        if isinstance(item, Mapping):
            yield report_name(item, f"run {i + 1}"), item
        else:
            name, report = item
            yield name, report


def format_table(reports: Reports, always: Mapping[str, str] = MappingProxyType({})) -> str:
    """The poster's table in Markdown: one row per run, each task's score, then every part, then the
    likelihood figures (SHOWN_LIKELIHOOD) of a task when any of its reports has them.

    `always`: {task: title} of the tasks whose score columns are there whatever the reports (evaluate.py's
    POSTER_TABLE: math and poetry, as in the poster), first and in this order; another task is titled by its
    name, capitalised.

    `reports`: {row name: [reports]}, [(row name, report)] or [report] (named by their `name`). A math
    report fills a row's math columns and a poetry report its poetry columns, so a run's two reports
    share a row; two reports of the same task in one row are an error. Numbers have 3 decimals, a
    likelihood figure is "mean [low, high]" (its 95% CI), and "–" marks what a row lacks (e.g. a report
    written before evaluation scored the likelihood).
    """
    rows: dict[str, dict[str, Mapping[str, Any]]] = {}  # row name → task → report
    for name, report in _named_reports(reports):
        task = report["task"]
        if task in rows.setdefault(name, {}):
            raise ValueError(f"two {task} reports for the row {name!r}; give each run its own name")
        rows[name][task] = report
    seen = list(dict.fromkeys(task for row in rows.values() for task in row))
    tasks = list(always) + [t for t in seen if t not in always]
    part_columns = [  # (task, part) in the order the reports list their parts
        (task, part)
        for task in tasks
        for part in dict.fromkeys(p for row in rows.values() if task in row for p in row[task]["parts"])
    ]
    likelihood_columns = [  # (task, figure) for the tasks some of whose reports have the figures
        (task, figure)
        for task in tasks
        if any(row[task].get("likelihood") for row in rows.values() if task in row)
        for figure in SHOWN_LIKELIHOOD
    ]

    def title(task: str) -> str:
        return always.get(task, task.capitalize())

    def cell(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    def ci_cell(ci: Mapping[str, Any] | None) -> str:
        if not ci or ci.get("mean") is None:
            return "–"
        return f"{ci['mean']:.3f} [{cell(ci.get('low'))}, {cell(ci.get('high'))}]"

    header = ["Run"] + [f"{title(t)} Score" for t in tasks] + [f"{title(t)} {p}" for t, p in part_columns]
    header += [f"{title(t)} {SHOWN_LIKELIHOOD[f]}" for t, f in likelihood_columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for name, row in rows.items():
        # a report that scored only some lines of its file says so beside its name: its means are of those
        skipped = sum(report.get("n_errors", 0) for report in row.values())
        scored = sum(report.get("n", 0) for report in row.values())
        label = f"{name} ({skipped} of {skipped + scored} lines unscored)" if skipped else name
        cells = [label] + [cell(row[t]["score"] if t in row else None) for t in tasks]
        for task, part in part_columns:
            ci = row[task]["parts"].get(part) if task in row else None
            cells.append(cell(ci["mean"] if ci else None))
        for task, figure in likelihood_columns:
            cells.append(ci_cell((row[task].get("likelihood") or {}).get(figure) if task in row else None))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_comparison(comparison: Mapping[str, Any]) -> str:
    """A comparison as a Markdown table: one row per figure, mean(A), mean(B), B − A, its 95% CI and n."""

    def signed(x: float) -> str:
        return f"{x:+.3f}"

    name_a, name_b = comparison["a"]["name"], comparison["b"]["name"]
    lines = [
        f"| Figure ({comparison['task']}) | A: {name_a} | B: {name_b} | B − A | 95% CI | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in comparison["figures"]:
        interval = "n < 2" if row["low"] is None else f"[{signed(row['low'])}, {signed(row['high'])}]"
        figure = row["figure"] + (" (not a score)" if row.get("diagnostic") else "")
        cells = [figure, f"{row['mean_a']:.3f}", f"{row['mean_b']:.3f}", signed(row["difference"])]
        lines.append("| " + " | ".join([*cells, interval, str(row["n"])]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Files


class ReportFileError(ValueError):
    """A file that is not a report written by evaluate.py."""


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report {path} does not exist")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportFileError(f"{path} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(report, dict) or not {"task", "score", "parts"} <= report.keys():
        raise ReportFileError(f"{path} is not a report written by evaluate.py (no task, score and parts)")
    for i, record in enumerate(report.get("records") or []):
        problem = record_problem(record)
        if problem:
            raise ReportFileError(f"{path}: record {i} {problem}; it is not a record written by evaluate.py")
    return report


def record_problem(record: Any) -> str | None:
    """What makes a report's record unusable for a comparison or a table, or None."""
    if not isinstance(record, dict):
        return f"is {type(record).__name__} {str(record)[:40]!r}, not an object"
    if "id" not in record:
        return "has no id"
    if not isinstance(record.get("parts", {}), dict) or not isinstance(record.get("likelihood") or {}, dict):
        return "has parts or likelihood figures that are not an object"
    numbers = {
        "total": record.get("total"),
        **(record.get("parts") or {}),
        **(record.get("likelihood") or {}),
    }
    for name, value in numbers.items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"has {name} = {str(value)[:40]!r}, not a number"
    return None


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path
