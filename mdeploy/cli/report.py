"""`mdeploy report merge R1.json R2.json ... -o DIR`: one report from the jobs of a CI matrix.

Each job of a matrix (`mdeploy run pipeline.yaml --job NAME --report DIR`) writes its own report.json; merge joins
them and writes every rendering into DIR (report.json, report.xml, report.md, report.html). The exit code is the
run's rule: 0 when every model of every job passed, 1 when any failed, 2 for a missing or unreadable report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import JsonOpt, Output, QuietOpt, VerboseOpt, stdout
from mdeploy.cli.group import Group

if TYPE_CHECKING:
    from mdeploy.reports.report import Report

app = typer.Typer(name="report", cls=Group, help="Work with the reports of `mdeploy run`.", no_args_is_help=True)

ReportsArg = Annotated[list[Path], typer.Argument(help="The report.json of each job (`mdeploy run --job NAME --report DIR`).",
                                                  metavar="REPORT", show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged report.json, report.xml, report.md and "
                                      "report.html (created when missing).", show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace report files already in the folder.")]


def _show(report: Report, written: dict[str, Path]) -> None:
    table = Table(title=f"{len(report.data['models'])} model(s) from {len(report.data['merged_from'])} report(s)",
                  title_justify="left")
    for column in ("", "model", "gates passed", "steps", "from"):
        table.add_column(column)
    for model in report.data["models"]:
        gates = model.get("gates", [])
        where = next((m["report"] for m in report.data["merged_from"] if model["name"] in m.get("models", [])), "")
        table.add_row("[green]pass[/]" if model.get("passed") else "[red]FAIL[/]", escape(model["name"]),
                      f"{sum(1 for g in gates if g.get('passed'))} / {len(gates)}",
                      ", ".join(f"{s.get('name')} {s.get('status')}" for s in model.get("steps", [])), escape(where))
    stdout.print(table)
    for note in report.notes:
        stdout.print(f"[yellow]note:[/] {escape(note)}")
    for kind, path in written.items():
        stdout.print(f"wrote {kind}: {escape(str(path))}")
    failed = [m["name"] for m in report.data["models"] if not m.get("passed")]
    if report.passed:
        stdout.print("[green]PASSED[/] every model of every report passed")
    else:
        stdout.print("[red]FAILED[/] " + escape(", ".join(failed) or "a step failed"))


@app.command("merge")
def merge(
    reports: ReportsArg,
    out: OutOpt,
    force: ForceOpt = False,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Join the reports of several `mdeploy run --job` runs into one; exit 1 when any model failed."""
    from mdeploy.reports.merge import load
    from mdeploy.reports.merge import merge as join
    from mdeploy.reports.render import write_all

    output = Output(json_, quiet, verbose)
    report = join([load(p) for p in reports], [str(p) for p in reports])
    written = write_all(report, out, force=force)
    output.finish(report, lambda r: _show(r, written))
