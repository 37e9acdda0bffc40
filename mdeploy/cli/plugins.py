"""`mdeploy plugins`: every converter, pass, runner and package target, and any that failed to load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import JsonOpt, Output, QuietOpt, VerboseOpt, stdout

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def command(json_: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = False) -> None:
    """List the plugins mdeploy found, with the error of any that is broken and why any is unavailable here."""
    from mdeploy import registry
    from mdeploy.reports.report import Report

    out = Output(json_, quiet, verbose)
    rows = []
    for group in registry.GROUPS:
        for plugin in registry.plugins(group):
            reason = plugin.unavailable
            status = "broken" if not plugin.ok else "unavailable" if reason else "ok"
            rows.append({"group": group.split(".")[-1], "name": plugin.name, "target": plugin.target,
                         "status": status, "error": plugin.error, "reason": reason, **_describe(plugin.obj)})
    out.finish(Report(command="plugins", data={"plugins": rows}), _show)


def _describe(obj: object) -> dict:
    if obj is None:
        return {}
    if hasattr(obj, "target") and hasattr(obj, "sources"):
        return {"edge": ",".join(s.value for s in obj.sources) + " -> " + obj.target.value}
    formats = getattr(obj, "formats", None) or getattr(obj, "FORMATS", None)  # a runner's; a package target's
    if formats:
        return {"formats": ",".join(f.value for f in formats)}
    return {}


def _show(report: Report) -> None:
    table = Table()
    for column in ("group", "name", "handles", "status"):
        table.add_column(column)
    for row in report.data["plugins"]:
        status = {"ok": "ok", "unavailable": f"[yellow]unavailable[/]: {escape(str(row.get('reason')))}"}.get(
            row["status"], f"[red]broken[/]: {escape(str(row['error']))}")
        table.add_row(row["group"], row["name"], row.get("edge") or row.get("formats") or "", status)
    stdout.print(table)
