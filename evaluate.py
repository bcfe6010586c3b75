"""Evaluate a policy on the held-out test split, score a file of completions, tabulate or compare reports.

    python evaluate.py --task math --model smollm2-135m --limit 50                 # the packaged baseline
    python evaluate.py --task poetry --model runs/<run>/final --name "Logprob GRPO" --limit 20
    python evaluate.py --task math --model runs/<run>/final --no-likelihood        # rule scores only
    python evaluate.py --task jsonl --data examples/riddles.jsonl --model runs/<run>/final   # your own examples
    python evaluate.py --task math --responses responses.jsonl                     # no policy model loaded
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
from dataclasses import dataclass
from pathlib import Path

from grpo.cli import OneLineErrorParser, add_options
from grpo.config import (
    EXIT_USAGE,
    SharedOptions,
    UsageError,
    shared_checks,
    task_choices,
    task_option_problem,
)
from grpo.evaluation import evaluate_model
from grpo.reports import (
    compare_reports,
    format_comparison,
    format_summary,
    format_table,
    load_report,
    report_name,
    write_report,
)
from tasks import TASKS
from tasks.responses import ResponsesFileError, score_responses_file

# the tasks whose score columns --table always shows, with their titles: the poster's two
POSTER_TABLE = {"math": "Math", "poetry": "Poetry"}

# ----------------------------------------------------------------------------------------------------
# Options of evaluate.py: one dataclass (what it shares with train.py inherited from grpo.config.SharedOptions), a
# docstring per field, the CLI generated from it


@dataclass
class EvalConfig(SharedOptions):
    # ---------------------------------------------------------------- what to evaluate (one of four modes)
    model: str | None = None
    """Generate one completion per test example and score it. `smollm2-135m` (the packaged default policy), a local Hugging Face directory, a checkpoint written by train.py (runs/<run>/final), or a hub id such as Qwen/Qwen3-1.7B."""
    responses: str | None = None
    """Score a JSONL file instead of generating; no policy model is loaded. One object per line: the example's fields (math: nums, target, optional gold_answer; poetry: author, title, form and poem_start + poem_end, or text; jsonl: prompt or messages, and answer) and `response`, what the model wrote from <think> on (`completion`, the key's name before, is read too). --completions, the option's name before, still works."""
    table: list[str] | None = None
    """Print the results table (Markdown) of these report JSON files. A run's math and poetry reports share a row when they share a name. Reports with likelihood figures add their columns, as mean [95% CI]."""
    compare: list[str] | None = None
    """Compare two reports of one task example by example, paired by id: for the score, every rule part, the gold answer's log-probs and the </think> rate, mean(A), mean(B) and the paired difference mean(B − A) with its 95% CI, as Markdown. B − A > 0 means B is better for each of these; the diagnostics after them (reasoning length; short, early-answer and repetitive shares) are marked as not scores. The reports must hold the same examples; different sampling settings only warn."""
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
    "responses": "FILE",
    "model": "MODEL",
    "out": "PATH",
}
EVAL_NARGS = {"compare": 2}  # list options take one or more values, unless named here
EVAL_ALIASES = {"responses": ["--completions"]}  # its name before the rename (the file holds responses)


def build_parser(description: str = "", epilog: str = "", prog: str | None = None) -> argparse.ArgumentParser:
    """`evaluate.py`'s parser, generated from EvalConfig as grpo.config.build_parser is from Config."""
    parser = OneLineErrorParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, max_help_position=28),
    )
    add_options(parser, EvalConfig, metavars=EVAL_METAVARS, nargs=EVAL_NARGS, default_in_help=True,
                choices=task_choices(TASKS), aliases=EVAL_ALIASES)  # fmt: skip
    return parser


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
    options = {"--model": config.model, "--responses": config.responses, "--table": config.table,
               "--compare": config.compare}  # fmt: skip
    modes = [flag for flag, value in options.items() if value]
    if not modes:
        return (
            "give --model (generate and score), --responses (score a file), --table (tabulate reports) "
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
        return f"--task is needed with --model and --responses (one of {', '.join(TASKS)})"
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
    """Evaluate --model: its report, and the path main writes it to."""
    import torch

    from grpo.decode import compile_decoding
    from grpo.models import load_models, pick_device
    from grpo.precision import evaluation_precision

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
    return report, path


def run_responses(config: EvalConfig) -> tuple[dict, Path]:
    """Score the --responses file: its report, and the path main writes it to."""
    responses_file = Path(config.responses)
    if not responses_file.is_file():  # before the task is built: poetry reads its data first
        raise FileNotFoundError(f"responses file {responses_file} does not exist")
    task = make_task(config)
    name = config.name or responses_file.stem
    path = out_path(config, name)
    report = score_responses_file(task, responses_file, settings={"name": name})
    if report["n"] == 0:  # no report of nothing: --table would show it as a row of dashes
        details = [f"line {e['line']}: {e['message']}" for e in report.get("errors", [])[:3]]
        raise ResponsesFileError(
            f"no example of {responses_file} could be scored ({report['n_errors']} unusable lines"
            f"{': ' + '; '.join(details) if details else ', the file is empty'}); no report written"
        )
    return report, path


def run_table(config: EvalConfig) -> str:
    reports = [load_report(path) for path in config.table]
    names = config.names or [report_name(r, Path(p).stem) for r, p in zip(reports, config.table, strict=True)]
    try:
        table = format_table(list(zip(names, reports, strict=True)), always=POSTER_TABLE)
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
        report, path = run_model(config) if config.model else run_responses(config)
    # a file that is missing or unusable (ResponsesFileError, ReportFileError, ComparisonError: all
    # ValueErrors), inputs that do not go together (UsageError), a model that cannot be found or is damaged
    except (OSError, RuntimeError, ValueError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(format_summary(report))  # before the report is written: a write that fails still leaves the figures
    try:
        write_report(report, path)
    except OSError as err:  # a full disk, a directory made read-only during the run
        print(f"evaluate.py: error: the report could not be written to {path} ({err}); its summary is above",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    print(f"report written to {path}", file=sys.stderr)
    if report["n"] == 0:  # nothing to report on is a failure, not a score
        print(
            f"evaluate.py: error: no example was scored ({report['n_errors']} unusable lines)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    from grpo.cli import one_line_warnings

    one_line_warnings()
    sys.exit(main())
