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
score, every rule part and every log-prob figure, mean(A), mean(B) and the paired difference mean(B − A)
with its 95% CI. Every figure there is higher-is-better, without exception, so B − A > 0 means B is better;
an interval that excludes 0 is a difference these examples support. Compare reports sampled with the same
--seed, --temperature, --top-p and --max-new-tokens: the two runs then sample from one random stream, and
the pairing removes more of the noise (different settings only warn).

Every option is in `python evaluate.py --help` (generated from grpo/evaluation.py's EvalConfig).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grpo.evaluation import (
    ComparisonError,
    CompletionsFileError,
    EvalConfig,
    ReportFileError,
    build_parser,
    compare_reports,
    default_run_name,
    format_comparison,
    format_summary,
    format_table,
    load_report,
    report_name,
    score_completions_file,
    slug,
    write_report,
)

EXIT_USAGE = 2  # as argparse and train.py: a usage error, an input (file, model) that cannot be used


class UsageError(ValueError):
    """Inputs that do not go together (e.g. two reports of one task under one row name)."""


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
        return "--task math or --task poetry is needed with --model and --completions (or --task jsonl --data FILE)"
    if config.data is not None and config.task not in ("poetry", "jsonl"):
        return "--data is the poetry data, or the examples of --task jsonl; --task math makes its own"
    if config.task == "jsonl" and config.model and config.data is None:
        return "--task jsonl evaluates the test split of your examples: give them with --data FILE"
    if config.scorer is not None and not (config.model and config.likelihood):
        return "--scorer scores the likelihood figures of --model's completions; it needs --model and --likelihood"
    if config.task != "jsonl" and (config.reward_fn is not None or config.system_prompt is not None):
        return "--reward-fn and --system-prompt go with --task jsonl"
    checks = [
        (config.limit is None or config.limit >= 1, "--limit must be ≥ 1"),
        (config.batch_size >= 1, "--batch-size must be ≥ 1"),
        (config.max_new_tokens >= 1, "--max-new-tokens must be ≥ 1"),
        (config.temperature >= 0, "--temperature must be ≥ 0 (0 is greedy)"),
        (0 < config.top_p <= 1, "--top-p must be in (0, 1]"),
        (0 <= config.test_fraction < 1, "--test-fraction must be in [0, 1)"),
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

    from grpo.evaluation import evaluate_model
    from grpo.models import load_models

    task = make_task(config)
    name = config.name or default_run_name(config.model)
    path = out_path(config, name)
    path.parent.mkdir(parents=True, exist_ok=True)  # fail before the slow part
    torch.manual_seed(config.seed)
    policy, _, tokenizer = load_models(config.model, config.device, config.dtype, with_reference=False)
    scorer = None
    if config.scorer is not None:
        scorer, _, scorer_tokenizer = load_models(
            config.scorer, config.device, config.dtype, with_reference=False
        )
        if scorer_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise UsageError(f"--scorer {config.scorer} has another tokenizer than {config.model}")
    print(f"evaluating {config.model} on {policy.device} in {policy.dtype}", file=sys.stderr)
    settings = {
        "name": name,
        "model": config.model,
        "scorer": config.scorer or config.model,
        "device": str(policy.device),
        "dtype": str(policy.dtype).removeprefix("torch."),
    }
    if config.task in ("poetry", "jsonl"):
        settings["data"] = str(task.data_path)
    if config.task == "jsonl":
        settings.update(test_fraction=config.test_fraction, system_prompt=task.system_prompt,
                        reward_fn=config.reward_fn)  # fmt: skip
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
    except (
        FileNotFoundError,
        IsADirectoryError,
        CompletionsFileError,
        ReportFileError,
        ComparisonError,
        UsageError,
    ) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, RuntimeError, ValueError) as err:  # a model that cannot be found or is damaged, …
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
    sys.exit(main())
