"""Joining the run reports of a CI matrix (one job per model, `mdeploy run --job NAME`) into one report.

Each job writes its own report.json; `mdeploy report merge R1.json R2.json ... -o DIR` reads them back, checks
that each is a run report this version can read, and joins their models, steps and input hashes. The verdict
rule is the run's: the merged report passes only when every model of every job passed. A model that appears in
two reports is an error (two jobs ran the same model; which result counts would be a guess).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, shown
from mdeploy.reports import schema
from mdeploy.reports.report import SCHEMA_VERSION, Report, Step
from mdeploy.reports.schema_check import first_problem


def load(path: Path) -> dict[str, Any]:
    """A report.json read back, or an InputError that says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"report not found: {path}" if not path.exists() else f"not a file: {path}",
                         hint="give the report.json files that `mdeploy run --report DIR` wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a JSON report: {exc}", hint="give the report.json of each run") from None
    except RecursionError:
        raise InputError(f"{path} is not a report: JSON nested deeper than Python reads",
                         hint="give the report.json of each run") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a report (a JSON object was expected)")
    return data


def _check(d: dict[str, Any], where: str) -> None:
    """A run report of a schema this mdeploy reads, every field of the type report.schema.json gives it: merging
    and rendering then use the fields as they are (a field of another type would be a traceback there)."""
    if d.get("command") != "run":
        raise InputError(f"{where} is not a run report (command: {shown(d.get('command'))})",
                         hint="merge the report.json files of `mdeploy run`; a single verb's report has no models or gates")
    version = d.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise InputError(f"{where} has schema_version {shown(version)}; this mdeploy reads up to {SCHEMA_VERSION}",
                         hint="merge with the mdeploy version that wrote the reports (or a newer one)")
    problem = first_problem(d, schema())
    if problem:
        raise InputError(f"{where} is not a report this mdeploy wrote: field {problem}",
                         hint="merge the report.json files that `mdeploy run --report DIR` wrote, unedited "
                              "(mdeploy/reports/report.schema.json describes every field)")


def merge(reports: list[dict[str, Any]], sources: list[str] | None = None) -> Report:
    """One run Report holding every model of `reports` (run reports' JSON forms, in order). `sources` names each
    report in errors and in `merged_from` (default: report 1, report 2, ...)."""
    if not reports:
        raise InputError("give at least one report to merge")
    names = sources or [f"report {k + 1}" for k in range(len(reports))]
    seen: dict[str, str] = {}
    models: list[dict[str, Any]] = []
    steps: list[Step] = []
    comparisons: list[dict[str, Any]] = []
    inputs: dict[str, str] = {}
    notes: list[str] = []
    merged_from = []
    for d, where in zip(reports, names):
        _check(d, where)
        environment = d.get("environment") or {}
        for model in d["models"]:
            if model["name"] in seen:
                raise InputError(f"model '{model['name']}' is in both {seen[model['name']]} and {where}",
                                 hint="merge the reports of different jobs (each `--job NAME` once)")
            seen[model["name"]] = where
            models.append({**model, "environment": model.get("environment") or environment})
        steps += [Step(s.get("name", "?"), s.get("status", "error"), s.get("details") or {}, s.get("seconds"))
                  for s in d.get("steps", [])]
        comparisons += [c for c in d.get("comparisons", []) if isinstance(c, dict)]
        for path, digest in (d.get("inputs_sha256") or {}).items():
            if inputs.get(path, digest) != digest:
                notes.append(f"{path} differed between the jobs (sha256 {inputs[path][:12]} and {str(digest)[:12]})")
            inputs.setdefault(path, digest)
        notes += [n for n in d.get("notes", []) if n not in notes]
        merged_from.append({"report": where, "run_dir": d.get("run_dir"), "pipeline": d.get("pipeline"),
                            "passed": d.get("passed"), "models": [m["name"] for m in d["models"]]})
    first = reports[0]
    pipelines = {(m["pipeline"] or {}).get("sha256") for m in merged_from}
    if len(pipelines) > 1:
        notes.append(f"the reports come from {len(pipelines)} different pipeline files")
    run_dirs = {m["run_dir"] for m in merged_from}
    data = {
        "pipeline": first.get("pipeline") or {"path": "", "sha256": ""},
        "run_dir": first.get("run_dir", "") if len(run_dirs) == 1 else "",
        "models": models,
        "inputs_sha256": inputs,
        "merged_from": merged_from,
    }
    return Report(command="run", steps=steps, comparisons=comparisons, data=data, notes=notes,
                  environment=first.get("environment") or None)
