"""`mdeploy run PIPELINE.yaml`: run a pipeline's steps for every model, judge its gates, and exit with the verdict.

Exit 0 when every step ran and every gate holds, 1 when a gate or a step's check failed (every gate is still
evaluated and reported), 2 for a bad pipeline file or bad input (`file:line:col: key.path: ...`). `--dry-run`,
`--list-jobs` and `--schema` only read: they print the resolved plan, the CI matrix, or the file's JSON Schema.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from mdeploy.cli.common import JsonOpt, Output, QuietOpt, VerboseOpt, print_json, stdout
from mdeploy.errors import InputError
from mdeploy.progress import no_progress

if TYPE_CHECKING:
    from mdeploy.pipeline.plan import Plan
    from mdeploy.reports.report import Report

PipelineArg = Annotated[Path | None, typer.Argument(help="The pipeline file (.yaml); see docs/ci.md.", show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved plan (every option, where it came from, every "
                                         "output path) and write nothing.")]
ListJobsOpt = Annotated[bool, typer.Option("--list-jobs", help="Print the jobs (one per model) as one line of JSON for a CI "
                                           "matrix: GitHub `fromJSON`, GitLab parallel:matrix.")]
JobOpt = Annotated[str | None, typer.Option("--job", help="Run only this model (a job from --list-jobs).", show_default=False)]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", metavar="<int range> [x>=1]",
                                      help="Run up to N models in parallel processes.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="The run folder (default mdeploy-runs/<pipeline>-<timestamp>).",
                                             show_default=False)]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run every step (no step cache), and use an existing --out folder.")]
SchemaOpt = Annotated[bool, typer.Option("--schema", help="Print the pipeline file's JSON Schema and exit.")]
ReportOpt = Annotated[Path | None, typer.Option("--report", help="Write the report into DIR: report.json, JUnit XML, Markdown, "
                                                "HTML.", show_default=False)]


def command(
    pipeline: PipelineArg = None,
    dry_run: DryRunOpt = False,
    list_jobs: ListJobsOpt = False,
    job: JobOpt = None,
    jobs: JobsOpt = 1,
    out_dir: OutOpt = None,
    force: ForceOpt = False,
    schema: SchemaOpt = False,
    report: ReportOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run a pipeline file: steps for every model, then gates; exit 1 when a gate fails."""
    if jobs < 1:
        raise InputError(f"--jobs: expected a number >= 1, got {jobs}", hint="--jobs takes a number >= 1")
    from mdeploy.pipeline import spec

    if schema:
        from mdeploy.pipeline.schema import schema as pipeline_schema

        sys.stdout.write(json.dumps(pipeline_schema(), indent=2) + "\n")
        return
    if pipeline is None:
        raise InputError("missing the pipeline file",
                         hint="mdeploy run PIPELINE.yaml (see docs/ci.md); --schema prints its schema")
    if list_jobs and job:
        raise InputError("--list-jobs and --job do not go together", hint="--list-jobs prints the jobs; --job NAME runs one")
    if report is not None and report.exists() and not report.is_dir():
        raise InputError(f"--report {report}: exists and is not a folder", hint="--report names a folder for the report files")
    plan = spec.load(pipeline, out=out_dir, force=force)
    if job is not None:
        _check_job(plan, job)

    if list_jobs:
        sys.stdout.write(json.dumps(spec.list_jobs(plan)) + "\n")
        return
    output = Output(json_, quiet, verbose)
    if dry_run:
        if json_:
            print_json(_selected(plan, job).to_dict())
        elif not quiet:
            show_plan(_selected(plan, job))
        return

    from mdeploy.pipeline import execute
    from mdeploy.reports.render import write_all

    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    echo = None if json_ or quiet else _echo
    try:
        result = execute.run(plan, job=job, jobs=jobs, force=force, echo=echo,
                             progress=no_progress if in_ci else output.progress)
    except KeyboardInterrupt as exc:  # the finished steps are kept; so is what the report can say about them
        partial = getattr(exc, "report", None)
        if report is not None and partial is not None:
            write_all(partial, report)
        raise
    if report is not None:
        write_all(result, report)
    output.finish(result, _show)


def _echo(line: str) -> None:
    """One plain line per step event, on stderr (stdout is the report's)."""
    print(line, file=sys.stderr, flush=True)


def _check_job(plan: Plan, job: str) -> None:
    names = [m.name for m in plan.models]
    if job not in names:
        near = difflib.get_close_matches(job, names, n=1)
        raise InputError(f"--job {job}: no such model in {plan.pipeline}" + (f"; did you mean '{near[0]}'?" if near else ""),
                         hint="jobs: " + ", ".join(names))


def _selected(plan: Plan, job: str | None) -> Plan:
    if job is None:
        return plan
    from dataclasses import replace

    return replace(plan, models=[plan.model(job)])


# --- rendering ----------------------------------------------------------------------------------------------------


def show_plan(plan: Plan) -> None:
    """The resolved plan as text: every step of every model, every option with its value and where it came from
    (defaults dimmed), every output path. Nothing is written."""
    from mdeploy.pipeline.schema import options_keys

    p = stdout.print
    p(f"[bold]plan[/] of {escape(str(plan.pipeline))} (dry run: nothing is written)")
    p(f"run folder: {escape(str(plan.run_dir))}")
    for name, path in plan.data.items():
        p(f"data {escape(name)}: {escape(str(path))}")
    for model in plan.models:
        p("")
        p(f"[bold]model {escape(model.name)}[/]: {escape(model.source)} -> {escape(str(model.folder))}/")
        for step in model.steps:
            p(f"  [bold]{escape(step.name)}[/]  ({escape(step.where)})")
            if step.output is not None:
                p(f"    writes {escape(str(step.output))}")
            p(f"    report {escape(str(step.report))}")
            keys = options_keys(step.verb)
            width = max(len(k) for k in keys.values())
            for field, value in step.options.items():
                source = step.sources.get(field, "")
                line = f"    {keys.get(field, field):<{width}} = {_value(value):<24} {source}"
                p(f"[dim]{escape(line)}[/]" if source == "default" else escape(line))
    p("")
    if plan.gates:
        p("[bold]gates[/] (each model's current artifact against its baseline, the first artifact):")
        for gate in plan.gates:
            p(f"  {escape(gate.text):<28} {escape(gate.where)}")
    else:
        p("no gates: the run passes when every step passes")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _show(report: Report) -> None:
    """Per model: the steps and the gates with their measured values and bars; then the verdict."""
    data = report.data
    for model in data.get("models", []):
        mark = "[green]PASSED[/]" if model.get("passed") else "[red]FAILED[/]"
        stdout.print(f"{mark} model [bold]{escape(str(model.get('name')))}[/]")
        for step in model.get("steps", []):
            status = str(step.get("status"))
            style = "red" if status in ("failed", "error") else "dim" if status in ("cached", "skipped") else ""
            seconds = step.get("seconds")
            line = f"  {step.get('name', '')}: {status}" + (f" ({seconds:.1f} s)" if isinstance(seconds, (int, float)) else "")
            if step.get("error"):
                line += f": {step['error']}"
            stdout.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
        for gate in model.get("gates", []):
            measured = gate.get("measured")
            shown = "not measured" if measured is None else f"{measured:.4g}"
            line = f"  gate {gate.get('gate')}: {shown}" + (f" ({gate['reason']})" if gate.get("reason") else "")
            stdout.print(("[green]pass[/]" if gate.get("passed") else "[red]FAIL[/]") + escape(line))
    if data.get("run_dir"):
        stdout.print(f"run folder: {escape(str(data['run_dir']))}")
    if report.passed:
        stdout.print("[green]PASSED[/] every step ran and every gate holds")
        return
    why = []
    for model in data.get("models", []):
        what = [f"gate {g.get('gate')}" for g in model.get("gates", []) if not g.get("passed")]
        what += [f"step {s.get('name')} {s.get('status')}" for s in model.get("steps", [])
                 if s.get("status") in ("failed", "error")]
        if what or not model.get("passed"):
            why.append(f"{model.get('name')} ({', '.join(what) or 'failed'})")
    stdout.print("[red]FAILED[/] " + escape("; ".join(why) or "a step failed"))
