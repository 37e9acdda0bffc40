"""What every verb shares: the --json/--quiet/--verbose options, rendering, progress, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mdeploy.logs import set_verbose
from mdeploy.progress import Advance, ProgressFactory, no_progress

if TYPE_CHECKING:  # the CLI imports numpy-backed modules only once a command runs, so `--help` stays fast
    from mdeploy.core import TensorSpec
    from mdeploy.reports.report import Report

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout, nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Let the frameworks' own logs through (to stderr).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random inputs (recorded in the report).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
ClassifierOutputOpt = Annotated[
    list[str] | None,
    typer.Option("--classifier-output", help="Output that is class scores, the only kind top-1 agreement is judged on "
                 "(repeatable; default: decided from the graph and the output names).", show_default=False),
]
NoClassifierOpt = Annotated[bool, typer.Option("--no-classifier", help="No output is class scores: top-1 is never judged.")]
InputOpt = Annotated[
    list[str] | None,
    typer.Option("--input", help="NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 (repeatable).", show_default=False),
]

# Tables of numbers need more than 80 columns; on a pipe rich cannot ask the terminal, so it gets 140.
stdout = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
stderr = Console(stderr=True, highlight=False)


@dataclass
class Output:
    """How a verb shows its result: rich on a terminal, one JSON object with --json, nothing with --quiet."""

    json: bool
    quiet: bool
    verbose: bool

    def __post_init__(self) -> None:
        set_verbose(self.verbose)

    @property
    def progress(self) -> ProgressFactory:
        if self.json or self.quiet or not sys.stderr.isatty():
            return no_progress
        return rich_progress

    def finish(self, report: Report, show: Any) -> None:
        """Render the report, then exit 1 when a check failed."""
        if self.json:
            sys.stdout.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        elif not self.quiet:
            show(report)
        if not report.passed:
            raise typer.Exit(1)


@contextmanager
def rich_progress(description: str, total: int | None) -> Iterator[Advance]:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def parse_inputs(values: list[str] | None) -> list[TensorSpec]:
    from mdeploy.core import TensorSpec

    return [TensorSpec.parse(v) for v in values or []]


def parse_dynamics(values: list[str] | None) -> list[tuple[str, int, str]]:
    from mdeploy.core import parse_dynamic

    return [parse_dynamic(v) for v in values or []]


def show_comparisons(report: Report) -> None:
    from mdeploy.reports.render import COLUMNS, comparison_rows

    for comparison in report.comparisons:
        title = f"{comparison.label or 'outputs'} — {comparison.tolerance.describe()}"
        table = Table(title=title, title_justify="left")
        for column, _ in COLUMNS:
            table.add_column(column, justify="left" if column in ("output", "result") else "right")
        for row in comparison_rows(comparison):
            style = None if row[-1].startswith("pass") else "red"
            table.add_row(*map(escape, row), style=style)
        stdout.print(table)
        for note in comparison.notes:
            stdout.print(f"[yellow]note:[/] {escape(note)}")


def verdict(report: Report, what: str) -> None:
    if report.passed:
        stdout.print(f"[green]PASSED[/] {escape(what)}")
    else:
        failed = [f"{o.name} ({c.label})" if c.label else o.name for c in report.comparisons for o in c.failures()]
        stdout.print(f"[red]FAILED[/] {escape(what)}: " + escape(", ".join(failed) or "a step failed"))
