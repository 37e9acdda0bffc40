"""`mdeploy package MODEL --target T -o DIR`: a model-server package, checked against the model (and its server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from mdeploy.cli.common import show_comparisons, stdout, verdict
from mdeploy.cli.generate import command as _command
from mdeploy.verbs import package as verb

if TYPE_CHECKING:
    from mdeploy.reports.report import Report


def _show(report: Report) -> None:
    d = report.data
    stdout.print(f"[bold]packaged[/] {escape(d['model'])} for {d['target']} -> {escape(d['output'])} "
                 f"(name {escape(d['name'])}, version {d['version']})")
    for name in d.get("files", []):
        stdout.print(f"  {escape(name)}")
    for c in d.get("checks", []):
        mark = "[green]ok[/]" if c["passed"] else "[red]FAILED[/]"
        stdout.print(f"  {mark} {escape(c['check'])}" + (f" [dim]({escape(c['detail'])})[/]" if c.get("detail") else ""))
    for step in report.steps:
        if step.status == "skipped":
            stdout.print(f"  [dim]not run: {escape(step.name)} ({escape(str(step.details.get('why', '')))})[/]")
        elif step.status == "failed" and not step.name.startswith("check: "):  # checks are listed above
            stdout.print(f"  [red]FAILED[/] {escape(step.name)}: {escape(str(step.details.get('why', '')))}")
            for line in step.details.get("log", []):  # e.g. the server's last log lines
                stdout.print(f"    [dim]{escape(line)}[/]")
    for note in report.notes:
        stdout.print(f"  [dim]{escape(note)}[/]")
    show_comparisons(report)
    smoke = d.get("smoke_test")
    if smoke and smoke.get("levels"):
        stdout.print(f"smoke test ({escape(smoke.get('server', ''))}):")
        for level in smoke["levels"]:
            stdout.print(f"  concurrency {level['concurrency']:>3}: p50 {level['p50_ms']:.2f} ms, p99 {level['p99_ms']:.2f} ms, "
                         f"{level['throughput_rps']:.1f} requests/s ({level['requests']} requests)")
        if smoke.get("in_process_ms") is not None:
            stdout.print(f"  in process (no server): {smoke['in_process_ms']:.2f} ms median")
    verdict(report, f"wrote {d['output']}")


command = _command(verb, _show)
