"""`mdeploy inspect MODEL`: what a model takes, returns, and is made of."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from mdeploy.cli.common import stdout
from mdeploy.cli.generate import command as _command
from mdeploy.cli import runtime_table
from mdeploy.verbs import inspect as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _refuse_invalid(report: Report) -> None:
    """What could be read is shown; a model with problems (checker, runtime limits) cannot be trusted to run: exit 2."""
    from mdeploy.errors import ModelLoadError

    problems = report.data["model"].get("problems") or []
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)}, listed above)" if len(problems) > 1 else ""
        name = report.data["model"].get("path")
        raise ModelLoadError(f"{name} is not a valid model: {first['message']}{more}", hint=first.get("hint"))


def _show(report: Report) -> None:
    info: dict[str, Any] = report.data["model"]
    stdout.print(f"[bold]{escape(str(info.get('path')))}[/] ({info.get('format')})")
    for key in ("inputs", "outputs"):
        if info.get(key):
            table = Table(title=key, title_justify="left")
            for column in ("name", "shape", "dtype"):
                table.add_column(column)
            for spec in info[key]:
                shape = "?" if spec.get("shape") is None else "[" + ", ".join(str(d) for d in spec["shape"]) + "]"
                table.add_row(escape(spec["name"]), escape(shape), escape(str(spec.get("dtype"))))
            stdout.print(table)
    skip = {"inputs", "outputs", "operators", "path", "format", "notes", "problems"}
    for key, value in info.items():
        if key in skip or value in (None, [], {}):
            continue
        if key.endswith("bytes"):
            value = _size(value)
        elif isinstance(value, int):
            value = f"{value:,}"
        stdout.print(f"{key.replace('_', ' ')}: {escape(str(value))}")
    if info.get("operators"):
        ops = info["operators"]
        stdout.print("operators: " + escape(", ".join(f"{k}×{v}" for k, v in ops.items())))
    for note in info.get("notes") or []:
        stdout.print(f"[yellow]note:[/] {escape(note)}")
    for problem in info.get("problems") or []:
        stdout.print(f"[red]invalid ({escape(problem['source'])}):[/] {escape(problem['message'])}")
    runtime_table.show(report.data.get("runtime"))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


command = _command(verb, _show, after=_refuse_invalid)
