"""Carrying out a Plan: every step of every model through the verbs' own `run` functions, into one run folder.

The artifact chain is chain.py's (spec.py fills each step's options from it; model_run.py runs one model's steps).
Each step's report (the verb's Report as JSON) is written beside its artifact in RUN_DIR/<model>/, and
RUN_DIR/manifest.json (manifest.py) records the input files' hashes, the tool and framework versions and the
resolved plan, updated as steps finish.

A verb's MdeployError inside a step is that step's `error`: the steps of the model that need the model it did not
write are `skipped`, and the other models go on (the run then fails, exit 1). Only what is found before any step
runs (an unknown job, a missing input file) is an MdeployError of the run itself (exit 2).

Re-running skips a step whose inputs, options and versions are unchanged (cache.py, step_key.py); `force` runs every step again.
Ctrl-C or SIGTERM stops the run: each verb writes through outputs.atomic_output, so the step in progress leaves no
partial file, the finished steps stay (in the run folder and the cache), and `Interrupted` carries the report so far.
`jobs > 1` runs models in parallel processes (workers.py: one model per process), merged into one report.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mdeploy.core import ModelRef
from mdeploy.errors import InputError
from mdeploy.interrupts import sigterm_as_interrupt
from mdeploy.pipeline.cache import StepCache, cache_dir, write_atomic
from mdeploy.pipeline.chain import data_options
from mdeploy.pipeline.manifest import Manifest, RunReport, run_report
from mdeploy.pipeline.model_run import Echo, run_model
from mdeploy.pipeline.plan import Plan, PlannedModel
from mdeploy.pipeline.workers import run_parallel
from mdeploy.progress import ProgressFactory, no_progress


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run; `report` holds the steps that finished (they are kept on disk)."""

    def __init__(self, report: RunReport) -> None:
        super().__init__("interrupted")
        self.report = report


def run(
    plan: Plan,
    *,
    job: str | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: ProgressFactory = no_progress,
    echo: Echo | None = None,
) -> RunReport:
    """Run every step of every model of `plan` (or of the model `job` only) into `plan.run_dir`; evaluate the gates.

    `jobs`: models run in that many parallel processes. `force`: run every step even when the cache holds it.
    `progress`: bars for long work inside a step (sequential runs only); `echo`: one plain line per step event.
    Raises InputError before any step for an unknown job or a missing input file; Interrupted on Ctrl-C/SIGTERM."""
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    models = select(plan, job)
    check_inputs(plan, models)
    try:
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        for m in models:
            plan.folder_of(m).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run folder {plan.run_dir}: {exc.strerror}") from None
    cache = StepCache(cache_dir(plan.run_dir))
    inputs = input_hashes(plan, models, cache)
    cache.save()
    started = datetime.now(timezone.utc)
    manifest = Manifest(plan, models, inputs, job=job, jobs=jobs, force=force, started=started)
    manifest.write()
    say = echo or (lambda line: None)
    results: dict[str, dict[str, Any]] = {}
    try:
        with sigterm_as_interrupt():
            if jobs > 1 and len(models) > 1:
                run_parallel(plan, models, force, jobs, say, results, manifest)
            else:
                for m in models:
                    try:
                        results[m.name] = run_model(plan, m, force=force, progress=progress, echo=say,
                                                    on_step=lambda record, name=m.name: manifest.step(name, record))
                    except KeyboardInterrupt as exc:
                        if getattr(exc, "partial", None):
                            results[m.name] = exc.partial  # type: ignore[attr-defined]
                        raise
                    manifest.model(results[m.name])
    except KeyboardInterrupt:
        report = run_report(plan, models, results, inputs, job, interrupted=True)
        manifest.finish(report, "interrupted")
        raise Interrupted(report) from None
    report = run_report(plan, models, results, inputs, job)
    manifest.finish(report, "passed" if report.passed else "failed")
    write_atomic(plan.run_dir / ("report.json" if job is None else f"report-{job}.json"),
                 json.dumps(report.to_dict(), indent=2, default=str))
    return report


# --- before any step ----------------------------------------------------------------------------------------------


def select(plan: Plan, job: str | None) -> list[PlannedModel]:
    """The models to run: all, or the one named by `job` (an unknown name suggests the nearest)."""
    if job is None:
        return list(plan.models)
    for m in plan.models:
        if m.name == job:
            return [m]
    import difflib

    names = [m.name for m in plan.models]
    near = difflib.get_close_matches(job, names, n=1)
    raise InputError(f"no job named '{job}' in {plan.pipeline}" + (f"; did you mean '{near[0]}'?" if near else ""),
                     hint="jobs: " + ", ".join(names) + " (see --list-jobs)")


def check_inputs(plan: Plan, models: list[PlannedModel]) -> None:
    """Every file the run reads exists, before any step runs (the run's exit 2, not a step's error)."""
    for name, path in plan.data.items():
        if not Path(path).exists():
            raise InputError(f"data '{name}' not found: {path}")
    for m in models:
        source = source_file(m.source)
        if source is not None and not source.exists():
            raise InputError(f"model '{m.name}': source not found: {source}")
        for step in m.steps:
            for fld in data_options(step.verb):
                value = step.options.get(fld)
                if isinstance(value, str) and value and not Path(value).exists():
                    raise InputError(f"model '{m.name}' {step.name}: {fld.replace('_', '-')} not found: {value}")


def source_file(source: str) -> Path | None:
    """The file behind a model source: FILE.py of FILE.py:FACTORY, the model file or folder; None for pkg.mod:FACTORY."""
    code = ModelRef.code_parts(source)
    if code and not Path(source).exists():
        return Path(code[0]) if code[0].endswith(".py") else None
    return Path(source)


def input_hashes(plan: Plan, models: list[PlannedModel], cache: StepCache) -> dict[str, str]:
    """SHA-256 of every file the run reads: the pipeline file, model sources, data and weights."""
    paths: list[Path] = []
    if Path(plan.pipeline).is_file():
        paths.append(Path(plan.pipeline))
    paths += [Path(p) for p in plan.data.values()]
    for m in models:
        source = source_file(m.source)
        if source is not None:
            paths.append(source)
        for step in m.steps:
            for fld in data_options(step.verb):
                value = step.options.get(fld)
                if isinstance(value, str) and value:
                    paths.append(Path(value))
    found: dict[str, str] = {}
    for p in paths:
        if str(p) not in found and p.exists():
            found[str(p)] = cache.hasher.path(p)
    return found


__all__ = ["Interrupted", "RunReport", "check_inputs", "run", "select", "source_file"]
