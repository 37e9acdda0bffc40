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
from rich.table import Table

from mdeploy.progress import Advance, ProgressFactory, no_progress

if TYPE_CHECKING:
    from mdeploy.reports.report import Report

JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object on stdout, nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Let the frameworks' own logs through (to stderr).")]

# Whether this process printed its one JSON object on stdout (app.main prints an error object only when it did not).
json_printed = False


def print_json(obj: Any) -> None:
    """The one JSON object of --json, on stdout."""
    global json_printed
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    json_printed = True


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
        from mdeploy.logs import set_verbose  # logging, tempfile: when a verb runs, not for its --help

        set_verbose(self.verbose)

    @property
    def progress(self) -> ProgressFactory:
        if self.json or self.quiet or not sys.stderr.isatty():
            return no_progress
        return rich_progress

    def finish(self, report: Report, show: Any, after: Any = None) -> None:
        """Render the report, then exit 1 when a check failed (`after` may raise an MdeployError first)."""
        if self.json:
            print_json(report.to_dict())
        elif not self.quiet:
            show(report)
        if after is not None:
            after(report)
        if not report.passed:
            raise typer.Exit(1)


@contextmanager
def rich_progress(description: str, total: int | None) -> Iterator[Advance]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


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
