"""Carrying out a Plan: every step of every model through the verbs' own `run` functions, into one run folder.

The artifact chain is the plan's (spec.py fills each step's options): convert writes the baseline (the first
artifact), quantize reads the previous artifact, validate compares the current artifact with the baseline, benchmark
measures both side by side. Each step's report (the verb's Report as JSON) is written beside its artifact in
RUN_DIR/<model>/, and RUN_DIR/manifest.json records the input files' hashes, the tool and framework versions and
the resolved plan, updated as steps finish.

A verb's MdeployError inside a step is that step's `error`: the steps of the model that need the model it did not
write are `skipped`, and the other models go on (the run then fails, exit 1). Only what is found before any step
runs (an unknown job, a missing input file) is an MdeployError of the run itself (exit 2).

Re-running skips a step whose inputs, options and versions are unchanged (cache.py); `force` runs every step again.
Ctrl-C or SIGTERM stops the run: each verb writes through outputs.atomic_output, so the step in progress leaves no
partial file, the finished steps stay (in the run folder and the cache), and `Interrupted` carries the report so far.
`jobs > 1` runs models in parallel processes (one model per process, never one model split), merged into one report.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mdeploy.errors import InputError, MdeployError
from mdeploy.interrupts import raise_interrupt, sigterm_as_interrupt
from mdeploy.pipeline import gates as gating
from mdeploy.pipeline.cache import StepCache, tool_fingerprint, versions, write_atomic
from mdeploy.pipeline.cache import key as cache_key
from mdeploy.pipeline.plan import Plan, PlannedModel, PlannedStep
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step

Echo = Callable[[str], None]

ARTIFACT_VERBS = ("convert", "quantize")
# options whose values name files: in a step's cache key they stand for the files' content, not their paths
PATH_FIELDS = frozenset({"src", "reference", "candidate", "models", "calib_data", "eval_data", "labels", "data", "weights"})
# options that change where a result goes, not what it is
NOT_IN_KEY = frozenset({"report", "force"})
CACHE_ENV = "MDEPLOY_CACHE_DIR"
_FACTORY = re.compile(r"^(?P<target>.+\.py):(?P<attr>[A-Za-z_]\w*)$")
_MODULE_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class RunReport(Report):
    """The report of `mdeploy run`: passed when every model passed (every gate held, no step failed or errored)."""

    @property
    def passed(self) -> bool:
        models = self.data.get("models") or []
        return bool(models) and all(m["passed"] for m in models) and all(s.status not in ("failed", "error") for s in self.steps)


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
            folder_of(plan, m).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run folder {plan.run_dir}: {exc.strerror}") from None
    cache = StepCache(cache_dir(plan))
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
                _run_parallel(plan, models, force, jobs, say, results, manifest)
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
        report = _report(plan, models, results, inputs, job, interrupted=True)
        manifest.finish(report, "interrupted")
        raise Interrupted(report) from None
    report = _report(plan, models, results, inputs, job)
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
            for fld in ("calib_data", "eval_data", "labels", "data", "weights"):
                value = step.options.get(fld)
                if isinstance(value, str) and value and not Path(value).exists():
                    raise InputError(f"model '{m.name}' {step.name}: {fld.replace('_', '-')} not found: {value}")


def source_file(source: str) -> Path | None:
    """The file behind a model source: FILE.py of FILE.py:FACTORY, the model file or folder; None for pkg.mod:FACTORY."""
    match = _FACTORY.match(source)
    if match and not Path(source).exists():
        return Path(match["target"])
    if _MODULE_FACTORY.match(source) and not Path(source).exists():
        return None
    return Path(source)


def cache_dir(plan: Plan) -> Path:
    """`$MDEPLOY_CACHE_DIR`, or `.cache/` beside the run folder (default run folders are new every time)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else plan.run_dir.parent / ".cache"


def folder_of(plan: Plan, model: PlannedModel) -> Path:
    return model.folder if str(model.folder) not in ("", ".") else plan.run_dir / model.name


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
            for fld in ("calib_data", "eval_data", "labels", "data", "weights"):
                value = step.options.get(fld)
                if isinstance(value, str) and value:
                    paths.append(Path(value))
    found: dict[str, str] = {}
    for p in paths:
        if str(p) not in found and p.exists():
            found[str(p)] = cache.hasher.path(p)
    return found


# --- one model ----------------------------------------------------------------------------------------------------


@dataclass
class _Chain:
    """What the steps of one model have produced so far."""

    artifacts: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, Any] | None = None
    benchmark: list[dict[str, Any]] = field(default_factory=list)
    broken: str | None = None  # the artifact step that errored: what follows it has no model to work on


def run_model(plan: Plan, model: PlannedModel, *, force: bool = False, progress: ProgressFactory = no_progress,
              echo: Echo | None = None, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every step of one model, then its gates: the model's entry of the run report (plain JSON)."""
    say = echo or (lambda line: None)
    cache = StepCache(cache_dir(plan))
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
    output = Path(values["output"]) if step.verb in ARTIFACT_VERBS and values.get("output") else None
    report_path = Path(step.report) if str(step.report) not in ("", ".") else folder_of(plan, model) / f"{step.name}.json"
    start = time.perf_counter()
    try:
        options = module.Options(**values)
        step_key = _step_key(step.verb, values, cache, model.name)
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
        if step.verb in ARTIFACT_VERBS:
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
    """The step's options; the artifact chain fills what a hand-made plan left out (spec.load sets all of them)."""
    values = dict(step.options)
    current = chain.artifacts[-1]["path"] if chain.artifacts else model.source
    baseline = chain.artifacts[0]["path"] if chain.artifacts else model.source
    if step.verb in ARTIFACT_VERBS:
        if not values.get("src"):
            values["src"] = current
        if not values.get("output"):
            values["output"] = str(step.output or folder_of(plan, model) / f"{step.name}{_suffix(step, current)}")
        values.setdefault("force", True)
    elif step.verb == "validate":
        if not values.get("reference"):
            values["reference"] = baseline
        if not values.get("candidate"):
            values["candidate"] = current
    elif step.verb == "package":
        values.setdefault("model", current)
        values.setdefault("output", str(step.output or folder_of(plan, model) / step.name))
        values.setdefault("force", True)
    elif step.verb == "benchmark" and not values.get("models"):
        values["models"] = [baseline] if baseline == current else [baseline, current]
    return values


def _suffix(step: PlannedStep, current: str) -> str:
    if step.verb == "quantize":
        return ".onnx" if current.endswith(".onnx") else ".tflite"
    fmt = step.options.get("dst_format") or "onnx"
    return {"onnx": ".onnx", "tflite": ".tflite", "keras": ".keras", "pytorch-exported": ".pt2", "torchscript": ".pt",
            "savedmodel": ""}.get(fmt, ".onnx")


class _Uncacheable(Exception):
    pass


def _step_key(verb: str, values: dict[str, Any], cache: StepCache, model: str) -> str | None:
    """The step's cache key, or None when an input cannot be hashed (a pkg.module:FACTORY source: its code is not a
    file the run can name; a FILE.py:FACTORY whose build fails: what it reads is unknown; so the step always runs).
    The model's name is part of it: a cached report names the model's own files, so two models with the same source
    and options must not share an entry."""
    if verb == "package":  # its output is a folder the cache does not keep; and a smoke test is a fact of now
        return None
    material: dict[str, Any] = {}
    try:
        for name, value in sorted(values.items()):
            if name in NOT_IN_KEY:
                continue
            if name == "output":
                material[name] = Path(value).name if value else None
            elif name in PATH_FIELDS:
                material[name] = _content(value, cache)
            else:
                material[name] = value
    except _Uncacheable:
        return None
    return cache_key({"verb": verb, "model": model, "options": material})


def _content(value: Any, cache: StepCache) -> Any:
    """A path option as what it names: the content hash of the file (with its suffix, which decides the format); a
    FILE.py:FACTORY as what its build reads and builds (sources.fingerprint), not only its own file."""
    if isinstance(value, list):
        return [_content(v, cache) for v in value]
    if not isinstance(value, str) or not value:
        return value
    match = _FACTORY.match(value)
    if match and not Path(value).exists():
        if not Path(match["target"]).is_file():
            return value
        if value not in cache.sources:  # built and watched once per model and source (sources.py)
            from mdeploy.pipeline.sources import fingerprint

            cache.sources[value] = fingerprint(value, cache.hasher.path)
        if cache.sources[value] is None:
            raise _Uncacheable(value)
        return cache.sources[value]
    if _MODULE_FACTORY.match(value) and not Path(value).exists():
        raise _Uncacheable(value)
    path = Path(value)
    if path.exists():
        return {"suffix": path.suffix, "sha256": cache.hasher.path(path)}
    return value


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
    if step.verb in ARTIFACT_VERBS and output is not None:
        if not chain.artifacts and step.verb == "quantize":  # no convert first: the source is the baseline
            src = Path(values["src"])
            chain.artifacts.append({"step": "source", "path": str(src), "format": _format_of(src), "size_bytes": _size(src)})
        chain.artifacts.append({"step": step.name, "path": str(output), "format": report.get("format"), "size_bytes": size})
    pair = {"convert": ("src", "output"), "quantize": ("src", "output"), "validate": ("reference", "candidate"),
            "package": ("model", "output")}.get(step.verb)
    for comparison in report.get("comparisons") or []:
        ref, cand = (values.get(pair[0]), values.get(pair[1])) if pair else (None, None)
        chain.comparisons.append({"step": step.name, "reference": ref, "candidate": cand, **comparison})
    if report.get("accuracy"):
        chain.accuracy = {"step": step.name, **report["accuracy"]}
    if step.verb == "benchmark":
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


# --- many models --------------------------------------------------------------------------------------------------

_QUEUE: Any = None


def _worker_init(queue: Any) -> None:
    """In a worker process: echo lines go to the parent; the parent stops workers with SIGTERM (Ctrl-C reaches the
    whole process group, so workers ignore SIGINT and leave the stopping to the parent)."""
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_interrupt)


def _worker(plan: Plan, name: str, force: bool) -> dict[str, Any]:
    return run_model(plan, plan.model(name), force=force, echo=lambda line: _QUEUE.put(("line", line)),
                     on_step=lambda record: _QUEUE.put(("step", name, record)))


def _run_parallel(plan: Plan, models: list[PlannedModel], force: bool, jobs: int, say: Echo,
                  results: dict[str, dict[str, Any]], manifest: Manifest) -> None:
    """Models in `jobs` processes (spawned, so no framework state is inherited); lines are echoed as they come."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    finished: dict[str, list[dict[str, Any]]] = {m.name: [] for m in models}  # step records as the workers send them

    def on_step(name: str, record: dict[str, Any]) -> None:
        finished[name].append(record)
        manifest.step(name, record)

    drain = threading.Thread(target=_drain, args=(queue, say, on_step), daemon=True)
    drain.start()
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(models)), mp_context=ctx, initializer=_worker_init, initargs=(queue,))
    try:
        futures = {pool.submit(_worker, plan, m.name, force): m.name for m in models}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            manifest.model(results[futures[future]])
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):  # running workers: stop them cleanly (SIGTERM)
            if process.is_alive():
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        drain.join(timeout=5)
        for m in models:  # what the stopped models finished, as far as their workers said
            if m.name not in results and finished[m.name]:
                results[m.name] = {"name": m.name, "passed": False, "baseline": None, "artifacts": [], "steps": finished[m.name],
                                   "comparisons": [], "accuracy": None, "benchmark": [], "gates": []}
        raise
    pool.shutdown(wait=True)
    queue.put(None)
    drain.join(timeout=5)


def _drain(queue: Any, say: Echo, on_step: Callable[[str, dict[str, Any]], None]) -> None:
    while (message := queue.get()) is not None:
        if message[0] == "line":
            say(message[1])
        else:
            on_step(message[1], message[2])


# --- the report and the manifest ----------------------------------------------------------------------------------


def _report(plan: Plan, models: list[PlannedModel], results: dict[str, dict[str, Any]], inputs: dict[str, str],
            job: str | None, interrupted: bool = False) -> RunReport:
    entries = [results[m.name] for m in models if m.name in results]
    steps = [Step(f"{e['name']}: {r['name']}", r["status"],
                  {k: v for k, v in (("verb", r["verb"]), ("report", r["report"]), ("error", r["error"]),
                                     ("cached", r["cached"] or None)) if v is not None}, r["seconds"])
             for e in entries for r in e["steps"]]
    notes = [f"{e['name']}: {r['name']} {r['status']}: {r['error']}" for e in entries for r in e["steps"] if r["error"]]
    notes += [f"{e['name']}: gate {g['gate']} failed: {g['reason']}" for e in entries for g in e["gates"] if not g["passed"]]
    missing = [m.name for m in models if m.name not in results]
    if interrupted:
        notes.insert(0, "interrupted (Ctrl-C or SIGTERM): the finished steps are kept; run again to go on from there")
    if missing:
        notes.append("not run: " + ", ".join(missing))
    data = {
        "pipeline": {"path": str(plan.pipeline), "sha256": inputs.get(str(plan.pipeline))},
        "run_dir": str(plan.run_dir),
        "job": job,
        **({"interrupted": True} if interrupted else {}),
        "models": entries,
        "inputs_sha256": inputs,
        "versions": versions(),  # every installed framework (a parallel run's parent imports none of them)
    }
    return RunReport(command="run", steps=steps, data=data, notes=notes)


class Manifest:
    """RUN_DIR/manifest.json: input hashes, versions, the resolved plan, and each step's outcome as it finishes."""

    def __init__(self, plan: Plan, models: list[PlannedModel], inputs: dict[str, str], *, job: str | None, jobs: int,
                 force: bool, started: datetime) -> None:
        self.path = plan.run_dir / ("manifest.json" if job is None else f"manifest-{job}.json")
        self.lock = threading.RLock()  # parallel runs: a thread receives the workers' step records
        self.data: dict[str, Any] = {
            "manifest_version": 1,
            "status": "running",
            "started": started.isoformat(timespec="seconds"),
            "finished": None,
            "pipeline": {"path": str(plan.pipeline), "sha256": inputs.get(str(plan.pipeline))},
            "run_dir": str(plan.run_dir),
            "job": job,
            "jobs": jobs,
            "force": force,
            "inputs_sha256": inputs,
            "versions": versions(),
            "mdeploy_source_sha256": tool_fingerprint(),
            "plan": plan.to_dict(),
            "models": {m.name: {"passed": None, "steps": []} for m in models},
        }

    def write(self) -> None:
        with self.lock:
            write_atomic(self.path, json.dumps(self.data, indent=2, default=str))

    def step(self, model: str, record: dict[str, Any]) -> None:
        with self.lock:
            steps = self.data["models"][model]["steps"]
            if record not in steps:
                steps.append(record)
            self.write()

    def model(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.data["models"][entry["name"]] = {"passed": entry["passed"], "steps": entry["steps"], "gates": entry["gates"]}
            self.write()

    def finish(self, report: RunReport, status: str) -> None:
        with self.lock:
            finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.data.update(status=status, passed=report.passed, finished=finished)
            self.write()


__all__ = ["run", "run_model", "select", "check_inputs", "cache_dir", "RunReport", "Interrupted", "Manifest"]
