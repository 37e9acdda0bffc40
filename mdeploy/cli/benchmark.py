"""`mdeploy benchmark MODEL...`: latency, throughput, memory and size, several models side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import stdout
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import benchmark as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    settings = report.data["settings"]
    if "new_tokens" in settings:
        _show_lm(report)
        return
    gpu = settings["device"] == "cuda"  # host memory is then labelled as such beside the GPU's
    table = Table(title=f"device {settings['device']}, threads {settings['threads'] or 'default'}", title_justify="left")
    for column in (
        "model",
        "batch",
        "mean ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "items/s",
        *(("gpu mem", "host mem") if gpu else ("peak mem",)),
        "size",
        "p50 vs first",
        "size vs first",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report.data["models"]:
        lat, ratio = row["latency_ms"], row["ratio_to_first"]
        table.add_row(
            row["model"],
            str(row["batch"]),
            f"{lat['mean']:.2f}",
            f"{lat['p50']:.2f}",
            f"{lat['p90']:.2f}",
            f"{lat['p99']:.2f}",
            f"{row['throughput_items_per_s']:.1f}",
            *((_mib(row.get("gpu_memory_bytes")),) if gpu else ()),
            _mib(row["peak_memory_bytes"]),
            _mib(row["size_bytes"]),
            _x(ratio["latency_p50"]),
            _x(ratio["size"]),
        )
    stdout.print(table)
    for row in report.data["models"]:
        for note in row.get("notes", []):
            stdout.print(f"[yellow]note:[/] {escape(note)}")


def _show_lm(report: Report) -> None:
    """Language models: prompt time and decode speed (generation_speed.measure's rows)."""
    settings = report.data["settings"]
    table = Table(title=f"{settings['prompt_tokens']}-token prompt, {settings['new_tokens']} new tokens, threads "
                  f"{settings['threads'] or 'default'}", title_justify="left")
    for column in ("model", "prompt ms", "decode tok/s", "ms/token p50", "peak mem", "size", "tok/s vs first", "size vs first"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in report.data["models"]:
        ratio = row["ratio_to_first"]
        table.add_row(row["model"], f"{row['prompt_ms']:.1f}", f"{row['decode_tokens_per_s']:.1f}",
                      f"{row['latency_ms']['p50']:.2f}", _mib(row["peak_memory_bytes"]), _mib(row["size_bytes"]),
                      _x(ratio["throughput"]), _x(ratio["size"]))
    stdout.print(table)


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


command = _command(verb, _show)
