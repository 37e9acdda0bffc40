"""`mdeploy benchmark MODEL...`: latency, throughput, memory and size, several models side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import InputOpt, JsonOpt, Output, QuietOpt, SeedOpt, VerboseOpt, parse_inputs, stdout

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def command(
    models: Annotated[list[str], typer.Argument(help="One or more models; ratios are given against the first.")],
    batch: Annotated[int | None, typer.Option("--batch", help="Batch size for a dynamic batch axis (default 1).")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Intra-op threads (default: the runtime's choice).")] = None,
    inputs: InputOpt = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs first.")] = 5,
    iterations: Annotated[int | None, typer.Option("--iterations", help="Timed runs (default 50).")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Time each model for this many seconds instead.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    src_format: Annotated[str | None, typer.Option("--from", help="Format of the models, when their names do not tell.")] = None,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Measure latency (mean/p50/p90/p99), throughput, peak memory and size of each model."""
    from mdeploy import api  # lazily: `mdeploy --help` stays light

    out = Output(json_, quiet, verbose)
    report = api.benchmark(
        models,
        batch=batch,
        threads=threads,
        inputs=parse_inputs(inputs),
        warmup=warmup,
        iterations=iterations,
        duration=duration,
        device=device,
        src_format=src_format,
        seed=seed,
        progress=out.progress,
    )
    out.finish(report, _show)


def _show(report: Report) -> None:
    settings = report.data["settings"]
    table = Table(title=f"device {settings['device']}, threads {settings['threads'] or 'default'}", title_justify="left")
    for column in (
        "model",
        "batch",
        "mean ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "items/s",
        "peak mem",
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
            _mib(row["peak_memory_bytes"]),
            _mib(row["size_bytes"]),
            _x(ratio["latency_p50"]),
            _x(ratio["size"]),
        )
    stdout.print(table)
    for row in report.data["models"]:
        for note in row.get("notes", []):
            stdout.print(f"[yellow]note:[/] {escape(note)}")


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"
