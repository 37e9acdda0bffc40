"""One model's steps, in order, through the verbs' own `run` functions: each step's options from the artifact chain
(chain.py), a cache hit restored instead of a run (cache.py, step_key.py), its report written beside its artifact,
and what it adds to the model's entry of the run report (artifacts, comparisons, accuracy, benchmark rows), then the
model's gates.

A verb's MdeployError inside a step is that step's `error`: the steps that need the model it did not write are
`skipped`. Ctrl-C leaves the entry so far on the KeyboardInterrupt (`partial`) for the run's report.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, MdeployError
from mdeploy.pipeline import gates as gating
from mdeploy.pipeline.cache import StepCache, cache_dir, write_atomic
from mdeploy.pipeline.chain import ARTIFACT, ROLES, links
from mdeploy.pipeline.plan import Plan, PlannedModel, PlannedStep
from mdeploy.pipeline.step_key import step_key as key_of
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.view import generation_summary

Echo = Callable[[str], None]


@dataclass
class _Chain:
    """What the steps of one model have produced so far."""

    artifacts: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    benchmark: list[dict[str, Any]] = field(default_factory=list)
    generation: list[dict[str, Any]] = field(default_factory=list)  # proofs by generation of language models
    broken: str | None = None  # the artifact step that errored: what follows it has no model to work on


def run_model(plan: Plan, model: PlannedModel, *, force: bool = False, progress: ProgressFactory = no_progress,
              echo: Echo | None = None, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every step of one model, then its gates: the model's entry of the run report (plain JSON)."""
    say = echo or (lambda line: None)
    cache = StepCache(cache_dir(plan.run_dir))
    chain = _Chain()
    records: list[dict[str, Any]] = []
    try:
        for step in model.steps:
            record = _run_step(plan, model, step, chain, cache, force, progress, say)
            records.append(record)
            if on_step is not None:
                on_step(record)
    except KeyboardInterrupt as exc:
        exc.partial = _model_entry(plan, model, chain, records, lambda line: None)  # type: ignore[attr-defined]
        raise
    finally:
        cache.save()
    return _model_entry(plan, model, chain, records, say)


def _run_step(plan: Plan, model: PlannedModel, step: PlannedStep, chain: _Chain, cache: StepCache, force: bool,
              progress: ProgressFactory, say: Echo) -> dict[str, Any]:
    tag = f"[{model.name}] {step.name}"
    record: dict[str, Any] = {"name": step.name, "verb": step.verb, "status": "skipped", "seconds": 0.0,
                              "report": None, "error": None, "cached": False}
    if chain.broken is not None:
        record["error"] = f"{chain.broken} wrote no model for this step"
        say(f"{tag}: skipped ({record['error']})")
        return record
    values = _chain_options(plan, model, step, chain)
    module = importlib.import_module(f"mdeploy.verbs.{step.verb}")
    output = Path(values["output"]) if ROLES[step.verb].writes == ARTIFACT and values.get("output") else None
    report_path = Path(step.report) if str(step.report) not in ("", ".") else plan.folder_of(model) / f"{step.name}.json"
    start = time.perf_counter()
    try:
        options = module.Options(**values)
        step_key = key_of(step.verb, values, cache, model.name)
        entry = cache.get(step_key) if step_key is not None and not force else None
        if entry is not None:
            if output is not None:
                cache.restore(entry, output)
            report = entry.report(plan.run_dir)
            status = "cached" if entry.status == "passed" else entry.status
            record["cached"] = True
            record["first_seconds"] = entry.meta.get("seconds")
            size = entry.size_bytes
        else:
            say(f"{tag}: running")
            result = module.run(options, progress=progress)
            report = result.to_dict()
            status = "passed" if result.passed else "failed"
            size = _size(output) if output is not None else None
            if step_key is not None:
                cache.put(step_key, output=output, files=_files(output), report=report, status=status,
                          seconds=time.perf_counter() - start, run_dir=plan.run_dir, size_bytes=size)
    except MdeployError as exc:
        record.update(status="error", error=exc.message + (f" ({exc.hint})" if exc.hint else ""),
                      seconds=time.perf_counter() - start)
        if ROLES[step.verb].writes == ARTIFACT:
            chain.broken = step.name
        _write_report(report_path, {"command": step.verb, "passed": False, "error": exc.message, "hint": exc.hint})
        record["report"] = str(report_path)
        say(f"{tag}: error: {record['error']}")
        return record
    except TypeError as exc:  # a hand-made plan without an option the verb requires
        raise InputError(f"model '{model.name}' {step.name}: {exc}", hint="plans made by spec.load set every option") from None
    _write_report(report_path, report)
    record.update(status=status, seconds=time.perf_counter() - start, report=str(report_path))
    _collect(step, values, output, report, size, chain, model)
    say(f"{tag}: {status} ({_took(record)})")
    return record


def _took(record: dict[str, Any]) -> str:
    """How long a step took, said once: `0.02 s; 6.7 s when it ran` for a cache hit (whose status already says
    `cached`), `from the cache, 0.02 s` for a failure served from it."""
    if not record["cached"]:
        return f"{record['seconds']:.1f} s"
    first = record.get("first_seconds")
    ran = f"; {first:.1f} s when it ran" if isinstance(first, (int, float)) else ""
    return f"{record['seconds']:.2f} s{ran}" if record["status"] == "cached" else f"from the cache, {record['seconds']:.2f} s"


def _chain_options(plan: Plan, model: PlannedModel, step: PlannedStep, chain: _Chain) -> dict[str, Any]:
    """The step's options; the artifact chain (chain.py's row for its verb) fills what a hand-made plan left out
    (spec.load sets all of them)."""
    values = dict(step.options)
    role = ROLES[step.verb]
    artifacts = [(a["path"], a["step"]) for a in chain.artifacts]
    current = artifacts[-1][0] if artifacts else model.source
    for option, link in links(role, model.source, artifacts).items():
        if not values.get(option):
            values[option] = link.value
    if role.writes:
        if not values.get("output"):
            values["output"] = str(step.output or plan.folder_of(model) / f"{step.name}{role.suffix(values, current) or ''}")
        values.setdefault("force", True)
    return values


def _files(output: Path | None) -> list[str]:
    """The artifact and its companions (ONNX external data), as names relative to its folder."""
    if output is None or not output.exists():
        return []
    from mdeploy.outputs import companions

    try:
        return [output.name, *companions(output)]
    except MdeployError:
        return [output.name]


def _size(output: Path) -> int | None:
    from mdeploy.outputs import size_of

    try:
        return size_of(output) if output.exists() else None
    except OSError:
        return None


def _collect(step: PlannedStep, values: dict[str, Any], output: Path | None, report: dict[str, Any], size: int | None,
             chain: _Chain, model: PlannedModel) -> None:
    """What a finished step adds to the model's entry: its artifact, comparisons, accuracy, benchmark rows."""
    role = ROLES[step.verb]
    if role.writes == ARTIFACT and output is not None:
        if not chain.artifacts and role.baseline_is_input:  # no convert first: the source is the baseline
            src = Path(values[next(iter(role.reads))])
            chain.artifacts.append({"step": "source", "path": str(src), "format": _format_of(src), "size_bytes": _size(src)})
        chain.artifacts.append({"step": step.name, "path": str(output), "format": report.get("format"), "size_bytes": size})
    for comparison in report.get("comparisons") or []:
        ref, cand = (values.get(role.compares[0]), values.get(role.compares[1])) if role.compares else (None, None)
        chain.comparisons.append({"step": step.name, "reference": ref, "candidate": cand, **comparison})
    if report.get("generation"):
        ref, cand = (values.get(role.compares[0]), values.get(role.compares[1])) if role.compares else (None, None)
        chain.generation.append({"step": step.name, "reference": ref, "candidate": cand,
                                 **generation_summary(report["generation"])})
    if report.get("accuracy"):
        chain.accuracy = {"step": step.name, **report["accuracy"]}
    if role.measures:
        chain.benchmark += [{"step": step.name, **row} for row in report.get("models") or []]


def _format_of(path: Path) -> str | None:
    from mdeploy.core import ModelRef

    try:
        return ModelRef.parse(str(path)).format.value
    except MdeployError:
        return None


def _model_entry(plan: Plan, model: PlannedModel, chain: _Chain, records: list[dict[str, Any]], say: Echo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": model.name,
        "passed": False,
        "baseline": chain.artifacts[0]["path"] if chain.artifacts else None,
        "artifacts": chain.artifacts,
        "steps": records,
        "comparisons": chain.comparisons,
        "accuracy": chain.accuracy,
        "benchmark": chain.benchmark,
        "generation": chain.generation,
    }
    entry["gates"] = gating.evaluate(plan.gates, entry)
    for g in entry["gates"]:
        shown = "-" if g["measured"] is None else f"{g['measured']:.6g}"
        say(f"[{model.name}] gate {g['gate']}: {'passed' if g['passed'] else 'FAILED'} (measured {shown})"
            + ("" if g["passed"] else f": {g['reason']}"))
    entry["passed"] = (len(records) == len(model.steps) and all(r["status"] in ("passed", "cached") for r in records)
                       and all(g["passed"] for g in entry["gates"]))
    return entry


def _write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(report, indent=2, default=str))


__all__ = ["Echo", "run_model"]
