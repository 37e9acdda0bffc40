"""`mdeploy quantize SRC -o OUT`: INT8 quantization, proved on data, repaired to a bar with --max-error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mdeploy.cli.common import show_comparisons, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.cli import runtime_table
from mdeploy.verbs import quantize as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    d = report.data
    step = next((s for s in report.steps if s.name == "quantize"), None)
    stdout.print(
        f"[bold]quantized[/] {d['source']} -> {d['output']} ({d.get('mode') or 'int8'}, {d['quantizer']}"
        + (f", {step.seconds:.1f}s)" if step and step.seconds else ")")
    )
    for note in report.notes:
        style = "bold red" if note.startswith("WARNING") else "dim"
        stdout.print(f"  [{style}]{note}[/]")
    size = d.get("size")
    if size:
        ratio = f" ({size['ratio']:.2f}x)" if size.get("ratio") else ""
        stdout.print(f"size: {_mib(size['before_bytes'])} -> {_mib(size['after_bytes'])}{ratio}")
    acc = d.get("accuracy")
    if acc:
        stdout.print(
            f"accuracy on {acc['samples']} labelled samples: float {acc['reference']:.4f} -> {(d.get('runtime') or {}).get('kind', 'int8')} {acc['candidate']:.4f} "
            f"(drop {acc['drop'] * 100:+.2f} points)"
        )
    bar = d.get("max_error")
    if bar:
        for s in bar.get("kept_in_float", []):
            stdout.print(f"  kept in float: {', '.join(s['nodes'])} ({s['op_type']}, added error {s['cost_rel_l2']:.4g})")
        if bar.get("exclude_args"):
            stdout.print(f"  reuse with: {bar['exclude_args']}")
    if d.get("goal"):
        _show_goal(d["goal"])
    runtime_table.show(d.get("runtime"))
    show_comparisons(report)
    verdict(report, f"wrote {d['output']}")


def _show_goal(goal: dict) -> None:
    """--goal latency: every candidate tried, its latency, speed-up over float and accuracy, kept or why not."""
    from rich.table import Table

    table = Table(title=f"--goal latency: {len(goal['candidates'])} candidates in {goal['seconds']:.0f}s "
                  f"(budget {goal['budget_s']:g}s)", title_justify="left")
    for column in ("candidate", "latency ms", "speed-up", "cosine", "top-1", "acc. drop", "kept or why not"):
        table.add_column(column, justify="left" if column in ("candidate", "kept or why not") else "right")
    for c in goal["candidates"]:
        acc = c["accuracy"]
        cells = [f"{acc[k]:.{d}f}" if acc.get(k) is not None else "-" for k, d in (("cosine", 6), ("top1", 4), ("accuracy-drop", 4))]
        ms = f"{c['latency_ms']:.3g}" if c["latency_ms"] is not None else "-"
        speed = f"{c['speedup']:.2f}x" if c["speedup"] is not None else "-"
        why = c["status"] + (f": {c['reason']}" if c["reason"] else "")
        table.add_row(c["name"], ms, speed, *cells, f"[bold]{why}[/]" if c["status"] == "kept" else why)
    stdout.print(table)
    for line in goal["pruned"]:
        stdout.print(f"  [dim]not tried on this CPU: {line}[/]")


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


command = _command(verb, _show)
