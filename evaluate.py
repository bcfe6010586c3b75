"""Evaluate a policy on the held-out test split, score a file of completions, tabulate or compare reports.

    python evaluate.py --task math --model smollm2-135m --limit 50                 # the packaged baseline
    python evaluate.py --task poetry --model runs/<run>/final --name "Logprob GRPO" --limit 20
    python evaluate.py --task math --model runs/<run>/final --no-likelihood        # rule scores only
    python evaluate.py --task jsonl --data examples/riddles.jsonl --model runs/<run>/final   # your own examples
    python evaluate.py --task math --completions completions.jsonl                 # no policy model loaded
    python evaluate.py --table reports/*.json --names Baseline "Rule-based GRPO" "Logprob GRPO" --out table.md
    python evaluate.py --compare reports/math-baseline.json reports/math-logprob.json --out compare.json

--model reports, beside the task's rule scores, the gold answer's teacher-forced log-probability after each
completion's reasoning and after an empty one (per gold token) and their difference, the reasoning gain: the
quantity --reward logprob trains. --compare pairs two reports of one task by example id and prints, for the
score, every rule part and every log-prob figure, mean(A), mean(B) and the paired difference mean(B − A) with
its 95% CI. Every figure there is higher-is-better, so B − A > 0 means B is better (an interval that excludes
0 is a difference these examples support), except the rows marked "(not a score)": the scored reasoning's
length, the share under 16 tokens, the share that answered before closing </think> and the share whose word
trigrams are under half distinct, beside them because a likelihood gain that comes with shorter or emptier
reasonings is the reasoning getting out of the way. Compare reports
sampled with the same --seed, --temperature, --top-p and --max-new-tokens: the two runs then sample from one
random stream, and the pairing removes more of the noise (different settings only warn).

Every option is in `python evaluate.py --help` (generated from EvalConfig below).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo.config import (
    EXIT_USAGE,
    DType,
    OneLineErrorParser,
    UsageError,
    add_options,
    shared_checks,
    task_choices,
    task_option_problem,
)
from grpo.evaluation import (
    REPETITIVE_TRIGRAMS,
    SHORT_REASONING_TOKENS,
    build_report,
    compare_reports,
    evaluate_model,
    score_records,
)
from grpo.task import Example, Task
from tasks import TASKS
from tasks.base import json_object, json_type

# ----------------------------------------------------------------------------------------------------
# Options of evaluate.py: one flat dataclass, a docstring per field, the CLI generated from it


@dataclass
class EvalConfig:
    # ---------------------------------------------------------------- what to evaluate (one of four modes)
    task: str | None = None
    """Domain, needed with --model and --completions"""
    model: str | None = None
    """Generate one completion per test example and score it. `smollm2-135m` (the packaged default policy), a local Hugging Face directory, a checkpoint written by train.py (runs/<run>/final), or a hub id such as Qwen/Qwen3-1.7B."""
    completions: str | None = None
    """Score a JSONL file instead of generating; no policy model is loaded. One object per line: the example's fields (math: nums, target, optional gold_answer; poetry: author, title, form and poem_start + poem_end, or text; jsonl: prompt or messages, and answer) and `completion`, the whole response from <think> on."""
    table: list[str] | None = None
    """Print the results table (Markdown) of these report JSON files. A run's math and poetry reports share a row when they share a name. Reports with likelihood figures add their columns, as mean [95% CI]."""
    compare: list[str] | None = None
    """Compare two reports of one task example by example, paired by id: for the score, every rule part, the gold answer's log-probs and the </think> rate, mean(A), mean(B) and the paired difference mean(B − A) with its 95% CI, as Markdown. B − A > 0 means B is better, for every figure. The reports must hold the same examples; different sampling settings only warn."""
    names: list[str] | None = None
    """Names for --table's rows or --compare's two columns, one per report file (default: each report's name, else its file name)."""

    # ---------------------------------------------------------------- generation
    limit: int | None = None
    """Evaluate the first N examples of the test split (default: all of it)."""
    greedy: bool = False
    """Greedy decoding (temperature 0): the same completions whatever the seed."""
    temperature: float = 0.6
    """Sampling temperature (Qwen3's recommended thinking-mode setting); ignored with --greedy."""
    top_p: float = 0.95
    """Nucleus sampling: sample from the smallest set of tokens whose probability reaches top_p."""
    max_new_tokens: int = 512
    """Longest completion, in tokens; a completion cut here usually has no <answer> and scores format 0."""
    batch_size: int = 8
    """Test examples generated together (one completion each); lower it to save memory."""
    device: str = "auto"
    """`auto` (cuda, then mps, then cpu), or a torch device such as cpu or cuda:1."""
    dtype: DType = "auto"
    """Weights' dtype. `auto`: as training computes (float32 weights; on a GPU with bf16, generation under bf16 autocast), so that a trained model is evaluated as it was trained, never through a bf16 copy that rounds away most of a small update. `float32`: float32 throughout. `bfloat16`, `float16`: half-precision copies of the weights (half the memory). The likelihood figures are scored in the weights' own precision, never under autocast."""
    autocast: bool | None = None
    """Generate under bf16 autocast over float32 weights. `auto` (with --dtype auto): as in training, on a CUDA GPU with bf16 and on a CPU whose bf16 arithmetic measured faster at start-up."""
    compile: bool | None = None
    """Run each decode step through torch.compile (CUDA graphs on a GPU), as train.py --compile; `auto`: off."""
    data: str | None = None
    """Poetry data (CSV or JSONL), whose test split is evaluated. Default: data/poetry.jsonl, else ../shared/data/public-domain-poems.csv. With --task jsonl: the examples' file, as in training."""
    test_fraction: float = 0.1
    """--task jsonl: the share of the examples without a `split` field held out for testing, by a hash of each prompt. Give the value training used; a smaller one holds out a subset of those examples."""
    system_prompt: str | None = None
    """--task jsonl: the system message training used (default: the built-in format instructions)."""
    reward_fn: str | None = None
    """--task jsonl: a scoring function, `module:function` or `path/to/file.py:function`, as in training; its parts join the report's."""
    reward_fn_timeout: float = 30.0
    """--reward-fn: seconds one call may take; a call that takes longer scores 0 with a warning (it finishes on its own thread, and the run goes on). 0: no limit."""
    seed: int = 0
    """Seed of the sampler."""
    likelihood: bool = True
    """On by default: also score the gold answer's log-probability after each completion's reasoning, and after an empty one, by teacher forcing as --reward logprob does in training (report key `likelihood`: per gold token, and their difference, the reasoning gain). --no-likelihood skips this extra forward pass."""
    scorer: str | None = None
    """Score those log-probabilities with this model instead of the evaluated one: e.g. smollm2-135m, the untrained start, so that two reports differ only by what their reasonings say (what a run trained with --scorer reference optimises). It must share the evaluated model's tokenizer."""

    # ---------------------------------------------------------------- output
    name: str | None = None
    """Name of the run in the report and the table, e.g. "Rule-based GRPO" (default: the model's or the file's name)."""
    out: str | None = None
    """Where to write: the JSON report (default: reports/<task>-<name>.json); with --table, the Markdown table, and with --compare, the comparison, as JSON if PATH ends in .json, else Markdown (default: only printed)."""


EVAL_METAVARS = {
    "table": "REPORT",
    "compare": ("A", "B"),
    "names": "NAME",
    "completions": "FILE",
    "model": "MODEL",
    "out": "PATH",
}
EVAL_NARGS = {"compare": 2}  # list options take one or more values, unless named here


def build_parser(description: str = "", epilog: str = "", prog: str | None = None) -> argparse.ArgumentParser:
    """`evaluate.py`'s parser, generated from EvalConfig as grpo.config.build_parser is from Config."""
    parser = OneLineErrorParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=28),
    )
    add_options(parser, EvalConfig, metavars=EVAL_METAVARS, nargs=EVAL_NARGS, default_in_help=True,
                choices=task_choices(TASKS))  # fmt: skip
    return parser


# ----------------------------------------------------------------------------------------------------
# Scoring a file of completions


class CompletionsFileError(ValueError):
    """A completions file that cannot be scored as a whole (e.g. it holds the other task's examples)."""


def _looks_like(record: Mapping[str, Any]) -> str | None:
    """The task whose fields (`Task.record_fields`) a record has, or None."""
    found = [name for name, task in TASKS.items() if any(key in record for key in task.record_fields)]
    return found[0] if len(found) == 1 else None


def example_from_record(task: Task, record: Mapping[str, Any]) -> Example:
    """Build an Example of `task` from a record's fields, with the task's own reader (which checks them).

    Raises ValueError, with a message meant for the user, for a missing field or a wrong type.
    """
    missing = [key for key in task.required_fields if key not in record]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(map(repr, missing))}")
    try:
        return task.example_from_record(dict(record))
    except NotImplementedError as err:  # a domain that reads no records: the whole file cannot be scored
        raise CompletionsFileError(str(err)) from None


def parse_completion_line(task: Task, line: str) -> tuple[Example, str]:
    """(example, response) from one JSONL line; ValueError with a one-line reason if it is not usable."""
    record = json_object(line)
    other = _looks_like(record)
    if other is not None and other != task.name:
        raise ValueError(
            f"a {other} record (it has {', '.join(k for k in TASKS[other].record_fields if k in record)})"
        )
    if "completion" not in record:
        raise ValueError("missing field 'completion'")
    if not isinstance(record["completion"], str):
        raise ValueError(f"'completion' must be a string, got {json_type(record['completion'])}")
    return example_from_record(task, record), record["completion"]


def score_completions_file(
    task: Task, path: str | Path, settings: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Score a JSONL file of completions, one object per line; no policy model is loaded.

    Each line holds an example's fields and `completion`, the whole response from `<think>` on (scored
    as written: a completion without the opening tag fails the format part). A line that cannot be used
    (not JSON, a missing field, a wrong type) becomes an entry of the report's `errors`, with its line
    number, and the other lines are still scored. Blank lines are skipped. Raises FileNotFoundError for a
    missing file and CompletionsFileError when every line holds the other task's examples.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"completions file {path} does not exist")
    examples: list[Example] = []
    responses: list[str] = []
    line_numbers: list[int] = []
    errors: list[dict[str, Any]] = []
    kinds: Counter = Counter()  # which task each JSON object looks like
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if isinstance(record, dict):
                kinds[_looks_like(record)] += 1
        except json.JSONDecodeError:
            pass
        try:
            example, response = parse_completion_line(task, line)
        except ValueError as err:
            errors.append({"line": number, "message": str(err)})
            continue
        examples.append(example)
        responses.append(response)
        line_numbers.append(number)
    objects = sum(kinds.values())
    for other, kind in TASKS.items():
        if other != task.name and objects and kinds[other] == objects:
            raise CompletionsFileError(
                f"{path} holds {other} examples (fields {', '.join(kind.record_fields)}), "
                f"not {task.name}: pass --task {other}"
            )
    records = score_records(task, examples, responses)
    for record, number in zip(records, line_numbers, strict=True):
        record["line"] = number
    recorded = {"task": task.name, "completions": str(path), "name": path.stem, **(settings or {})}
    return build_report(task, records, recorded, errors)


# ----------------------------------------------------------------------------------------------------
# Summaries and tables

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


TASK_TITLES = {"math": "Math", "poetry": "Poetry"}
TABLE_TASKS = ("math", "poetry")  # their score columns are always there, as in the poster


def report_name(report: Mapping[str, Any], default: str = "run") -> str:
    return report.get("name") or report.get("settings", {}).get("name") or default


def _named_reports(reports) -> Iterable[tuple[str, Mapping[str, Any]]]:
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


def format_table(reports) -> str:
    """The poster's table in Markdown: one row per run, the math and poetry scores, then every part, then
    the likelihood figures (SHOWN_LIKELIHOOD) of a task when any of its reports has them.

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
    tasks = list(TABLE_TASKS) + [t for t in seen if t not in TABLE_TASKS]
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
        return TASK_TITLES.get(task, task.capitalize())

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


def default_run_name(model: str) -> str:
    """`Qwen/Qwen3-1.7B` → `Qwen3-1.7B`; a train.py checkpoint `runs/<run>/final` → `<run>`."""
    path = Path(model.rstrip("/"))
    return path.parent.name if path.name == "final" and path.parent.name else path.name


def slug(name: str) -> str:
    """A file-name-safe form of a run name: `Rule-based GRPO` → `Rule-based-GRPO`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


# ----------------------------------------------------------------------------------------------------
# The four modes


def usage_problem(config: EvalConfig) -> str | None:
    """What is wrong with the combination of options, or None."""
    options = {"--model": config.model, "--completions": config.completions, "--table": config.table,
               "--compare": config.compare}  # fmt: skip
    modes = [flag for flag, value in options.items() if value]
    if not modes:
        return (
            "give --model (generate and score), --completions (score a file), --table (tabulate reports) "
            "or --compare (compare two reports)"
        )
    if len(modes) > 1:
        return f"{' and '.join(modes)} are separate modes; give one of them"
    reports = config.table or config.compare
    if config.names and not reports:
        return "--names goes with --table or --compare"
    if reports and config.names and len(config.names) != len(reports):
        return f"--names gives {len(config.names)} names for {len(reports)} reports"
    if not reports and config.task is None:
        return f"--task is needed with --model and --completions (one of {', '.join(TASKS)})"
    if config.scorer is not None and not (config.model and config.likelihood):
        return "--scorer scores the likelihood figures of --model's completions; it needs --model and --likelihood"
    if config.task is not None:
        problem = task_option_problem(config, TASKS, reward=None, needs_examples=bool(config.model))
        if problem:
            return problem
    checks = [
        (config.limit is None or config.limit >= 1, "--limit must be ≥ 1"),
        (config.batch_size >= 1, "--batch-size must be ≥ 1"),
        *shared_checks(config),  # as train.py's
    ]
    return next((message for ok, message in checks if not ok), None)


def make_task(config: EvalConfig):
    from grpo.models import pick_device
    from tasks import task_for

    return task_for(config, device=str(pick_device(config.device)))


def out_path(config: EvalConfig, name: str) -> Path:
    return Path(config.out or f"reports/{config.task}-{slug(name)}.json")


def run_model(config: EvalConfig) -> tuple[dict, Path]:
    import torch

    from grpo.models import load_models, pick_device
    from grpo.precision import evaluation_precision
    from grpo.rollout import compile_decoding

    task = make_task(config)
    name = config.name or default_run_name(config.model)
    path = out_path(config, name)
    path.parent.mkdir(parents=True, exist_ok=True)  # fail before the slow part
    torch.manual_seed(config.seed)
    # float32 weights under bf16 autocast on a GPU, as training computes (grpo.precision)
    weights, mixed_precision = evaluation_precision(config.dtype, config.autocast, pick_device(config.device))
    policy, _, tokenizer = load_models(config.model, config.device, weights, with_reference=False)
    scorer = None
    if config.scorer is not None:
        scorer, _, scorer_tokenizer = load_models(config.scorer, config.device, weights, with_reference=False)
        if scorer_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise UsageError(f"--scorer {config.scorer} has another tokenizer than {config.model}")
    print(
        f"evaluating {config.model} on {policy.device} in {policy.dtype}"
        f"{' with bf16 autocast' if mixed_precision else ''}",
        file=sys.stderr,
    )
    settings = {
        "name": name,
        "model": config.model,
        "scorer": config.scorer or config.model,
        "device": str(policy.device),
        "dtype": str(policy.dtype).removeprefix("torch."),
        "autocast": mixed_precision,
    }
    settings.update(task.report_settings())  # how the task read its examples: --data, …
    report = evaluate_model(
        policy,
        tokenizer,
        task,
        limit=config.limit,
        temperature=config.temperature,
        top_p=config.top_p,
        greedy=config.greedy,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        seed=config.seed,
        settings=settings,
        likelihood=config.likelihood,
        scorer=scorer,
        autocast=mixed_precision,
        compile=compile_decoding(config.compile, policy.device),
    )
    write_report(report, path)
    return report, path


def run_completions(config: EvalConfig) -> tuple[dict, Path]:
    completions = Path(config.completions)
    if not completions.is_file():  # before the task is built: poetry reads its data first
        raise FileNotFoundError(f"completions file {completions} does not exist")
    task = make_task(config)
    name = config.name or completions.stem
    path = out_path(config, name)
    report = score_completions_file(task, completions, settings={"name": name})
    if report["n"] == 0:  # no report of nothing: --table would show it as a row of dashes
        details = [f"line {e['line']}: {e['message']}" for e in report.get("errors", [])[:3]]
        raise CompletionsFileError(
            f"no example of {completions} could be scored ({report['n_errors']} unusable lines"
            f"{': ' + '; '.join(details) if details else ', the file is empty'}); no report written"
        )
    write_report(report, path)
    return report, path


def run_table(config: EvalConfig) -> str:
    reports = [load_report(path) for path in config.table]
    names = config.names or [report_name(r, Path(p).stem) for r, p in zip(reports, config.table, strict=True)]
    try:
        table = format_table(list(zip(names, reports, strict=True)))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(table + "\n", encoding="utf-8")
    return table


def run_compare(config: EvalConfig) -> str:
    """The comparison table of --compare's two reports; warnings go to stderr, --out gets a copy."""
    reports = [load_report(path) for path in config.compare]
    names = config.names or [
        report_name(r, Path(p).stem) for r, p in zip(reports, config.compare, strict=True)
    ]
    comparison = compare_reports(*reports, names=names)
    comparison["a"]["path"], comparison["b"]["path"] = config.compare
    for warning in comparison["warnings"]:
        print(f"evaluate.py: warning: {warning}", file=sys.stderr)
    table = format_comparison(comparison)
    if config.out:
        path = Path(config.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(comparison, indent=2, ensure_ascii=False) if path.suffix == ".json" else table
        path.write_text(text + "\n", encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    paragraphs = __doc__.split("\n\n")
    parser = build_parser(description=paragraphs[0], epilog="\n\n".join(paragraphs[1:3]), prog="evaluate.py")
    config = EvalConfig(**vars(parser.parse_args(argv)))
    problem = usage_problem(config)
    if problem:
        print(f"evaluate.py: error: {problem} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if config.table or config.compare:
            table = run_table(config) if config.table else run_compare(config)
            print(table)
            if config.out:
                print(f"{'table' if config.table else 'comparison'} written to {config.out}", file=sys.stderr)
            return 0
        report, path = run_model(config) if config.model else run_completions(config)
    # a file that is missing or unusable (CompletionsFileError, ReportFileError, ComparisonError: all
    # ValueErrors), inputs that do not go together (UsageError), a model that cannot be found or is damaged
    except (OSError, RuntimeError, ValueError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(format_summary(report))
    print(f"report written to {path}", file=sys.stderr)
    if report["n"] == 0:  # nothing to report on is a failure, not a score
        print(
            f"evaluate.py: error: no example was scored ({report['n_errors']} unusable lines)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    from grpo.config import one_line_warnings

    one_line_warnings()
    sys.exit(main())
