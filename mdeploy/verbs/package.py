"""`package MODEL --target mlflow|triton|tfserving|kserve -o DIR`: hand a model to a model server, checked.

The steps, the same for every target (what differs lives in mdeploy/packaging/<target>.py):
1. every input problem first (the output folder, the target's formats, a server that cannot run here for
   `--smoke-test` (asked before the model loads), the target's own checks such as a fixed batch with
   `--max-batch-size > 0`): exit 2, nothing written;
2. the package is written into a staging folder beside `-o DIR`, and checked statically by the target;
3. where the package can be loaded here the way its server loads it, it is compared with the original model on the
   validation inputs (`--data`, or seeded random inputs);
4. `--smoke-test`: the real server is started on the staged package, the same inputs are posted over HTTP and the
   answers compared with the original; latency and throughput are measured over a short burst; the server is stopped
   in every case;
5. README.md is written with how to start the server, a request that works, and these figures; then the staging
   folder becomes `-o DIR` (an existing folder is replaced only with `--force`).

A failed comparison or smoke test is exit 1; the package is still written (like quantize's `--max-error`), and its
README says what failed, so the user can look at what the server was given.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError, OutputExistsError
from mdeploy.outputs import check_output, share
from mdeploy.packaging import GROUP as TARGETS_GROUP
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.registry import Names
from mdeploy.reports.report import Report, Step
from mdeploy.verbs.options import check, option

VALIDATION_SAMPLES = 4
VALIDATION_BATCH = 2


@dataclass
class Options:
    model: str = option(help="Model file or SavedModel folder to package (ONNX, SavedModel, TFLite, TensorRT engine).",
                        argument=True)
    target: str = option(help="The model server: mlflow | triton | tfserving | kserve.", choices=Names(TARGETS_GROUP))
    output: str = option(help="The package folder to write.", short="-o")
    name: str | None = option(None, help="The model's name on the server (default: from the file name).")
    version: int = option(1, help="The model version (the version folder for Triton and TF Serving).", min=1)
    max_batch_size: int | None = option(None, help="Largest batch the server may form (default: from the model's "
                                         "batch axis: 0 when it is fixed).", min=0)
    instances: int = option(1, help="Model instances (Triton instance_group count; replicas for KServe).", min=1)
    storage_uri: str | None = option(None, help="KServe: where the cluster will find the package (e.g. "
                                     "s3://bucket/models, pvc://claim/models; default: a pvc:// placeholder).")
    smoke_test: bool = option(False, help="Start the real server on the package, post the validation inputs over HTTP, "
                              "compare the answers and measure latency and throughput.")
    data: str | None = option(None, help=".npz of validation inputs keyed by input name (default: seeded random inputs).")
    concurrency: str = option("1,4,16", help="Smoke test: concurrent clients of each burst, comma-separated.")
    requests: int = option(64, help="Smoke test: requests per concurrency level.", min=1)
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE] for inputs the model leaves dynamic (repeatable).")
    src_format: str | None = option(None, flag="--from", help="Format, when the name does not tell.")
    atol: float | None = option(None, help="Absolute tolerance of the comparisons (default: fp32's).", min=0.0)
    rtol: float | None = option(None, help="Relative tolerance of the comparisons (default: fp32's).", min=0.0)
    seed: int = option(0, help="Seed for random validation inputs (recorded in the report).")
    force: bool = option(False, help="Replace an existing package folder.")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Package a model for a model server (MLflow, Triton, TF Serving, KServe), checked against the model."""
    from mdeploy import registry
    from mdeploy.core import parse_specs, tolerance_for
    from mdeploy.packaging import target as target_module
    from mdeploy.packaging.base import Request, convert_hint

    check(options)
    o = options
    out = Path(o.output)
    levels = _levels(o.concurrency)
    _check_output_folder(out, o.force)
    ref = ModelRef.parse(o.model, o.src_format)
    target = target_module(o.target)
    if ref.format not in target.FORMATS:
        raise InputError(f"{o.target} cannot serve a {ref.format.value} model ({ref.name})",
                         hint=convert_hint(ref.format, target.FORMATS, o.target))
    if o.smoke_test:  # before the model loads: a server that cannot run here is refused at once, nothing loaded
        target.server_check(ref)
    # a target may read the model's I/O without loading it (triton: a TensorRT engine's sidecar; TensorRT needs a GPU)
    described = target.model_io(ref) if hasattr(target, "model_io") else None
    runner = registry.open_runner(ref, "cpu", parse_specs(o.inputs)) if described is None else None
    inputs, outputs = described if described is not None else (runner.input_specs(), _output_specs(runner))
    request = Request(
        model=ref, inputs=inputs, outputs=outputs, name=o.name or _default_name(ref),
        version=o.version, max_batch_size=o.max_batch_size, instances=o.instances,
        feeds=_feeds(inputs, o), extra={"storage_uri": o.storage_uri},
    )
    _check_name(request.name)
    target.check(request)
    tolerance = tolerance_for("fp32", o.atol, o.rtol)
    report = Report(command="package", data={
        "model": ref.name, "format": ref.format.value, "target": o.target, "output": str(out), "name": request.name,
        "version": request.version, "seed": o.seed, **({"data": o.data} if o.data else {"samples": len(request.feeds)}),
    })
    report.notes.extend(runner.notes if runner is not None else [])
    report.notes.extend(getattr(request.feeds, "notes", []))  # how --data was read (vinputs.Feeds)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        started = time.perf_counter()
        written = target.write(request, staging)
        report.steps.append(Step("write", "done", {"files": written.files}, time.perf_counter() - started))
        report.data.update(written.details)
        report.data["checks"] = written.checks
        report.notes.extend(written.notes)
        for failed in (c for c in written.checks if not c["passed"]):
            report.steps.append(Step(f"check: {failed['check']}", "failed", {"detail": failed.get("detail", "")}))
        _compare_package(runner, written, request, tolerance, report, progress)
        if o.smoke_test:
            from mdeploy.packaging import smoke

            smoke.run(target, request, staging, runner, tolerance, report, levels, o.requests, progress)
        (staging / "README.md").write_text(_readme(request, o, written, report))
        _move_into_place(staging, out, o.force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.data["files"] = ["README.md", *written.files]
    return report


def _check_output_folder(out: Path, force: bool) -> None:
    """outputs.check_output's rules (parent exists and is writable, --force to replace), and a package is a folder."""
    check_output(out, force)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; a package is a folder", hint="give another -o")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(n < 1 for n in levels):
        raise InputError(f"cannot read --concurrency '{text}'", hint="positive integers, comma-separated, e.g. 1,4,16")
    return levels


def _default_name(ref: ModelRef) -> str:
    """The file or folder name without its extension, made safe for every server (letters, digits, _ - .)."""
    stem = ref.path.name if ref.format is Format.SAVEDMODEL else ref.path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-") or "model"


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"--name '{name}' cannot be a model name on a server",
                         hint="use letters, digits, '_', '-' and '.', starting with a letter or digit")


def _output_specs(runner: Any) -> list[TensorSpec]:
    """The model's outputs as TensorSpecs, as its runner describes them (shapes may hold names where dynamic)."""
    info = type(runner).describe(runner.ref)
    described = {o["name"]: o for o in info.get("outputs") or []}
    specs = []
    for name in runner.output_names():
        d = described.get(name, {})
        shape = d.get("shape")
        specs.append(TensorSpec(name, tuple(shape) if shape is not None else (), d.get("dtype") or "float32"))
    return specs


def _feeds(inputs: list[TensorSpec], o: Options) -> list[dict]:
    """The validation inputs: `--data`, or seeded random batches of VALIDATION_BATCH (1 where the batch is fixed)."""
    import numpy as np

    from mdeploy.validation import inputs as vinputs

    if o.data:
        return vinputs.feeds_from_data(vinputs.load_arrays(Path(o.data)), inputs, flag="--data")
    rng = np.random.default_rng(o.seed)
    batch = min(VALIDATION_BATCH, o.max_batch_size or VALIDATION_BATCH)  # a server refuses batches over --max-batch-size
    return [vinputs.random_feed(inputs, rng, batch=batch) for _ in range(VALIDATION_SAMPLES)]


def _compare_package(runner: Any, written: Any, request: Any, tolerance: Any, report: Report,
                     progress: ProgressFactory) -> None:
    """The package loaded the way its server loads it, against the original model, on the validation inputs."""
    from mdeploy.validation.run import compare

    if written.runner is None or runner is None:
        why = "the package cannot be loaded here" if runner is not None else "the model cannot be loaded here"
        report.steps.append(Step("package vs model", "skipped", {"why": why}))
        return
    with progress("checking the package", len(request.feeds)) as advance:
        comparison = compare(runner, written.runner, request.feeds, tolerance, label="package", progress=advance)
    report.comparisons.append(comparison)


def _readme(request: Any, o: Options, written: Any, report: Report) -> str:
    """README.md of the package: the target's how-to, then what mdeploy checked and measured."""
    lines = [f"# {request.name} (version {request.version}) for {o.target}", "",
             f"Packaged by `mdeploy package {report.data['model']} --target {o.target}` ({report.data['format']} model).",
             "", written.readme.strip(), "", "## What mdeploy checked", ""]
    for c in written.checks:
        lines.append(f"- {'passed' if c['passed'] else 'FAILED'}: {c['check']}" + (f" ({c['detail']})" if c.get("detail") else ""))
    for comparison in report.comparisons:
        d = comparison.to_dict()
        what = "the server's answers" if d.get("label") == "server" else "the package as the server loads it"
        lines.append(f"- {'passed' if d['passed'] else 'FAILED'}: {what} vs the original model on {len(request.feeds)} "
                     f"validation inputs:")
        for out in d.get("outputs", []):
            top1 = f", top-1 agreement {out['top1_agreement']:.4f}" if out.get("top1_agreement") is not None else ""
            lines.append(f"  - `{out['name']}`: max abs error {out.get('max_abs_error', float('nan')):.3g}, "
                         f"cosine {out.get('cosine', float('nan')):.6f}{top1}")
    skipped = [s for s in report.steps if s.status == "skipped"]
    for s in skipped:
        lines.append(f"- not run: {s.name} ({s.details.get('why', '')})")
    for s in report.steps:
        if s.status == "failed" and not s.name.startswith("check: "):
            lines.append(f"- FAILED: {s.name} ({s.details.get('why', '')})")
    smoke = report.data.get("smoke_test")
    if smoke and smoke.get("levels"):
        lines += ["", "## Smoke test over HTTP", "", "| concurrency | requests | p50 ms | p99 ms | requests/s |", "| --- | --- | --- | --- | --- |"]
        for level in smoke["levels"]:
            lines.append(f"| {level['concurrency']} | {level['requests']} | {level['p50_ms']:.2f} | {level['p99_ms']:.2f} | "
                         f"{level['throughput_rps']:.1f} |")
        if smoke.get("in_process_ms") is not None:
            lines.append(f"\nThe same request in process (no server): {smoke['in_process_ms']:.2f} ms median.")
    for note in report.notes:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines) + "\n"


def _move_into_place(staging: Path, out: Path, force: bool) -> None:
    """The staged package becomes `out`: the old folder (only with --force) is moved aside first, then removed."""
    share(staging)  # mkdtemp made it private, onnx writes external data 0600: servers run as other users
    old = None
    if out.exists():
        if not force:
            raise OutputExistsError(f"output exists: {out}", hint="give --force to replace it")
        old = out.with_name(f".{out.name}.old.{staging.name}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
