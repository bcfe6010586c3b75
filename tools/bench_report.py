"""`make bench`'s report as Markdown: the table its run prints (tools/bench.py measures; this only formats)."""

from __future__ import annotations


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"+{n / 2**20:,.0f} MiB"


def ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def table(report: dict) -> str:
    """The report as the table printed before the JSON: one block per section the report holds."""
    lines = [
        f"machine: {report['machine']['cpu']}"
        + (f", {report['machine']['gpu']}" if "gpu" in report["machine"] else "")
    ]
    lines.append(f"model: {report['model']} on {report['device']} in {report['dtype']}")
    if report.get("rollout"):
        lines += rollout_lines(report["rollout"])
    if report.get("ops"):
        lines += ops_lines(report["ops"])
    if report.get("compile"):
        lines.append(compile_line(report["compile"]))
    if report.get("fixed_decode"):
        lines.append(fixed_decode_line(report["fixed_decode"]))
    if report.get("scoring"):
        lines += scoring_lines(report["scoring"])
    # the scaling's first step is the step section's base: listed once
    steps = report.get("step", []) + [r for r in report.get("scaling", []) if r not in report.get("step", [])]
    if steps:
        lines += step_lines(steps) + bf16_lines(report)
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def rollout_lines(rollouts: list[dict]) -> list[str]:
    lines = [
        "",
        "rollout: useful tokens/s of ours (static), the previous sampler and generate (computed tokens)",
    ]
    bf16 = any("ours_bf16" in r for r in rollouts)
    lines.append(
        f"{'batch':>6} {'ours':>8} {'previous':>9} {'generate':>9} {'ours/prev':>10} {'ours/gen':>9}"
        + (f" {'ours bf16':>10} {'bf16/prev':>10}" if bf16 else "")
    )
    for r in rollouts:
        o, p, g = r["ours"], r.get("previous"), r["generate"]
        b = r.get("ours_bf16")
        lines.append(
            f"{r['batch']:>6} {o['useful_tokens_per_s']:>8.1f} "
            f"{p['useful_tokens_per_s'] if p else float('nan'):>9.1f} {g['useful_tokens_per_s']:>9.1f} "
            f"{r.get('rollout_vs_previous', float('nan')):>10.2f} {r['rollout_vs_generate']:>9.2f}"
            + (f" {b['useful_tokens_per_s']:>10.1f} {r['bf16_vs_previous']:>10.2f}" if b else "")
            + f"   ({o['computed_tokens']} / {p['computed_tokens'] if p else '-'} / {g['computed_tokens']})"
        )
    return lines


def ops_lines(o: dict) -> list[str]:
    lines = [
        f"ops per decode step, {o['model']} at batch {o['batch']}{' under bf16 autocast' if o['autocast_bf16'] else ''}:"
    ]
    for name in ("ours", "previous"):
        r = o[name]
        lines.append(
            f"  {name:>8}: {r['aten_ops_per_step']:,.0f} aten ops, {r['casts_per_step']:,.0f} casts, "
            f"{r['item_reads_per_step']:.2f} .item() reads and {r['host_reads_of_tokens']:.3g} reads of the tokens"
        )
    return lines


def compile_line(c: dict) -> str:
    return (
        f"compiled decode step, batch {c['batch']} × {c['max_new_tokens']}: {c['compiled_tokens_per_s']:.1f} tok/s "
        f"against {c['eager_tokens_per_s']:.1f} eager ({c['compiled_vs_eager']:.2f}×), after "
        f"{c['compile_seconds']:.0f} s of compiling"
    )


def fixed_decode_line(r: dict) -> str:
    return (
        f"fixed-length decode, batch {r['batch']} × {r['max_new_tokens']}: ours "
        f"{r['ours']['computed_tokens_per_s']:.1f} tok/s, generate {r['generate']['computed_tokens_per_s']:.1f} "
        f"tok/s, ratio {r['rollout_vs_generate']:.2f}"
    )


def scoring_lines(s: dict) -> list[str]:
    lines = [
        "",
        f"log-prob scoring, {s['rows']} rows × {s['positions']} positions ({s['scored_tokens']} scored)",
    ]
    labels = {
        "ours": f"ours, {s['micro_batch_size']} rows at a time, prompt once per group (as trained)",
        "ours_whole_batch": "ours, the whole batch at once",
        "naive": "naive log_softmax of the whole batch",
    }
    width = max(len(label) for label in labels.values())
    for name, label in labels.items():
        lines.append(
            f"  {label:<{width}}: {s[name]['tokens_per_s']:>9.1f} tok/s, peak {mib(s[name]['peak_bytes'])}"
        )
    lines.append(
        f"  memory ours/naive {ratio(s['memory_vs_naive'])}, speed ours/naive {s['speed_vs_naive']:.2f}, "
        f"max |difference| {s['max_abs_difference']:.1e}"
    )
    return lines


def step_lines(steps: list[dict]) -> list[str]:
    lines = ["", "GRPO step (logprob reward), seconds"]
    lines.append(
        f"{'prompts×G×T':>13} {'sampler':>9} {'bf16':>5} {'tokens':>7} {'rollout':>8} {'reward':>7} {'ref':>6} "
        f"{'update':>7} {'total':>7}"
    )
    for r in steps:
        s = r["seconds"]
        shape = f"{r['prompts']}×{r['group_size']}×{r['max_new_tokens']}"
        lines.append(
            f"{shape:>13} {r.get('sampler', 'ours'):>9} {'yes' if r['autocast_bf16'] else 'no':>5} "
            f"{r['completion_tokens']:>7} {s['rollout']:>8.1f} {s['reward']:>7.1f} {s['reference']:>6.1f} "
            f"{s['update']:>7.1f} {r['total_seconds']:>7.1f}"
        )
    return lines


def bf16_lines(report: dict) -> list[str]:
    if "bf16_speedup" not in report:
        return []
    return [
        f"bf16 autocast step: {report['bf16_speedup']:.2f}× the fp32 step (the same sampler), "
        f"{report['bf16_vs_previous']:.2f}× the previous sampler's fp32 step"
    ]
