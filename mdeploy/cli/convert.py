"""`mdeploy convert SRC -o OUT`: convert, then validate the result against the source."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mdeploy.cli.common import show_comparisons, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import convert as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    for step in report.steps:
        if step.name.startswith("convert"):
            stdout.print(f"[bold]{step.name}[/] with {escape(str(step.details.get('converter')))} ({step.seconds:.1f}s)")
    for note in report.notes:
        stdout.print(f"  [dim]{escape(note)}[/]")
    show_comparisons(report)
    if "generation" in report.data:
        from mdeploy.cli.generation import show_generation

        show_generation(report)
        verdict(report, f"wrote {report.data['output']}")
    elif not report.comparisons:
        stdout.print(f"[green]wrote[/] {escape(report.data['output'])} (not validated)")
    else:
        verdict(report, f"wrote {report.data['output']}")


command = _command(verb, _show)
