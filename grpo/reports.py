"""Reports after they are built: a terminal summary, the poster's table in Markdown, two reports compared
example by example (`compare_reports`) and that comparison's table, and the report files themselves (JSON, as
`grpo.evaluation.build_report` builds them), read back with checks.

evaluate.py is the command line over this module (--table, --compare, and the summary of every mode).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from grpo.evaluation import REPETITIVE_TRIGRAMS, SHORT_REASONING_TOKENS, repetition_figures
from grpo.files import atomic_write_text
from grpo.reasoning import answer_start
from grpo.statistics import paired_difference

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
    """Write `report` as JSON to `path`, whole or not at all (`grpo.files.atomic_write_text`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


# ----------------------------------------------------------------------------------------------------
# Two reports compared example by example

# settings that decide the completions: when they differ, A and B differ in more than their models
SAMPLING_SETTINGS = ("seed", "temperature", "top_p", "greedy", "max_new_tokens")
# the likelihood figures a comparison shows: all higher-is-better (token counts are lengths, not scores)
COMPARED_LIKELIHOOD = (
    "gold_logprob",
    "gold_logprob_per_token",
    "gold_logprob_empty",
    "gold_logprob_empty_per_token",
    "reasoning_gain_per_token",
    "think_closed",
)
# shown beside them, but not scores (neither direction is better in itself): how long the scored reasoning
# is, the share under SHORT_REASONING_TOKENS, the share that answered before closing </think>, the share
# under REPETITIVE_TRIGRAMS distinct (derived from the record for a report written before they were recorded)
COMPARED_DIAGNOSTICS = ("reasoning_tokens", "reasoning_short", "early_answer", "reasoning_repetitive")


class ComparisonError(ValueError):
    """Two reports that cannot be compared example by example."""


def _records_by_id(report: Mapping[str, Any], label: str) -> dict[str, Mapping[str, Any]]:
    records = report.get("records") or []
    if not records:
        raise ComparisonError(f"report {label} has no per-example records to pair")
    by_id = {str(record["id"]): record for record in records}
    if len(by_id) < len(records):
        raise ComparisonError(
            f"report {label} holds an example id more than once, so its examples cannot be paired"
        )
    return by_id


def _figures_of(record: Mapping[str, Any]) -> dict[str, float]:
    """A record's compared figures: the score (its total), each rule part, each compared likelihood figure."""
    figures = {"score": record["total"], **record["parts"]}
    likelihood = record.get("likelihood") or {}
    if likelihood:
        # `completion`: the response's key in reports written before its rename
        response = record.get("response", record.get("completion"))
        likelihood = {**likelihood, **_derived_diagnostics(likelihood, response)}
    compared = (*COMPARED_LIKELIHOOD, *COMPARED_DIAGNOSTICS)
    figures.update((name, likelihood[name]) for name in compared if name in likelihood)
    return figures


def _derived_diagnostics(likelihood: Mapping[str, Any], response: Any) -> dict[str, float | int]:
    """The diagnostics a report written before they were recorded lacks, from what its record holds: the short
    share from the reasoning's length, the early answer and the repetition from the response's text. Only
    the missing ones are derived; a recorded figure is never replaced."""
    derived: dict[str, float | int] = {}
    if "reasoning_short" not in likelihood and "reasoning_tokens" in likelihood:
        derived["reasoning_short"] = int(likelihood["reasoning_tokens"] < SHORT_REASONING_TOKENS)
    if isinstance(response, str):
        if "reasoning_repetitive" not in likelihood:
            derived.update(repetition_figures(response))
        if "early_answer" not in likelihood and "think_closed" in likelihood:
            derived["early_answer"] = int(
                not likelihood["think_closed"] and answer_start(response) is not None
            )
    return derived


def _comparison_warnings(
    a: Mapping[str, Any], b: Mapping[str, Any], pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]
) -> list[str]:
    warnings = []
    settings_a, settings_b = a.get("settings", {}), b.get("settings", {})
    differing = [
        f"{key} {settings_a.get(key)} vs {settings_b.get(key)}"
        for key in SAMPLING_SETTINGS
        if settings_a.get(key) != settings_b.get(key)
    ]
    if differing:
        warnings.append(
            f"the reports were sampled with different settings ({', '.join(differing)}): their completions "
            "differ for that reason too, so the pairing is weaker"
        )
    scorers = [settings.get("scorer", settings.get("model")) for settings in (settings_a, settings_b)]
    if scorers[0] != scorers[1]:
        warnings.append(
            f"the gold log-probs were scored by different models ({scorers[0]} vs {scorers[1]}): their "
            "difference mixes what the reasonings say with how each scorer reads them (evaluate.py --scorer "
            "fixes one)"
        )
    tokens = [((r.get("likelihood") or {}).get("gold_tokens"), (s.get("likelihood") or {}).get("gold_tokens"))
              for r, s in pairs]  # fmt: skip
    if any(None not in counts and counts[0] != counts[1] for counts in tokens):
        warnings.append(
            "the reports tokenise some gold answers into different numbers of tokens (different "
            "tokenizers?): their log-probs are over different tokens"
        )
    return warnings


def compare_reports(
    a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str] = ("A", "B")
) -> dict[str, Any]:
    """Pair two reports' records by example id and compare every figure: mean(A), mean(B), mean(B − A).

    The figures: `score` (each example's total, whose mean is the task score), each rule part, and each
    COMPARED_LIKELIHOOD figure; every one is higher-is-better, so B − A > 0 favours B. The COMPARED_DIAGNOSTICS
    (reasoning length, short, early-answer and repetitive shares) follow, marked `diagnostic`. A figure is compared
    over the examples where both records have it. Raises ComparisonError for reports of different tasks
    or of different examples; different sampling settings only add a warning to the result's `warnings`.
    """
    if a["task"] != b["task"]:
        raise ComparisonError(f"the reports are of different tasks ({a['task']} and {b['task']})")
    a_records, b_records = _records_by_id(a, names[0]), _records_by_id(b, names[1])
    only_a, only_b = sorted(a_records.keys() - b_records.keys()), sorted(b_records.keys() - a_records.keys())
    if only_a or only_b:
        sides = ((names[0], only_a), (names[1], only_b))
        found = [f"{len(ids)} only in {name} ({', '.join(map(repr, ids[:3]))})" for name, ids in sides if ids]
        raise ComparisonError(
            f"the reports do not hold the same example ids: {' and '.join(found)}; evaluate both with the "
            "same test split and --limit"
        )
    pairs = [(a_records[i], b_records[i]) for i in a_records]  # in A's order
    figure_pairs = [(_figures_of(r), _figures_of(s)) for r, s in pairs]  # per example: (A's, B's)
    rows = []
    for figure in dict.fromkeys(name for fa, fb in figure_pairs for name in (*fa, *fb)):
        paired = [(fa[figure], fb[figure]) for fa, fb in figure_pairs if figure in fa and figure in fb]
        if not paired:
            continue
        values_a, values_b = zip(*paired, strict=True)
        difference = paired_difference(values_a, values_b)
        rows.append(
            {
                "figure": figure,
                "mean_a": math.fsum(values_a) / len(values_a),
                "mean_b": math.fsum(values_b) / len(values_b),
                "difference": difference["mean"],  # mean(B − A)
                "low": difference["low"],
                "high": difference["high"],
                "n": difference["n"],
                "diagnostic": figure in COMPARED_DIAGNOSTICS,  # a length or a rate, not higher-is-better
            }
        )
    return {
        "task": a["task"],
        "a": {"name": names[0]},
        "b": {"name": names[1]},
        "n": len(pairs),
        "warnings": _comparison_warnings(a, b, pairs),
        "figures": rows,
    }
