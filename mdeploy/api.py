"""The public Python API: the verbs as plain functions returning Reports.

Each function fills the verb's options type (mdeploy/verbs/<verb>.py) from its keyword arguments, which are named
like the CLI flags (`calib_data` for `--calib-data`, `src_format` for `--from`), and calls the verb's `run`: the CLI
and `mdeploy run` pipelines call the same functions. A failed check (a validation mismatch) is not an exception: it
is a Report that is falsy. Anything the user can fix raises MdeployError.
"""

from __future__ import annotations

from typing import Any

from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.registry import open_runner
from mdeploy.reports.report import Report
from mdeploy.verbs import benchmark as _benchmark
from mdeploy.verbs import convert as _convert
from mdeploy.verbs import distill as _distill
from mdeploy.verbs import inspect as _inspect
from mdeploy.verbs import package as _package
from mdeploy.verbs import prune as _prune
from mdeploy.verbs import quantize as _quantize
from mdeploy.verbs import validate as _validate

__all__ = ["convert", "quantize", "prune", "distill", "validate", "benchmark", "inspect", "package", "open_runner"]


def convert(src: str, output: str, *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """Convert `src` to `output` and validate the result against it (see `mdeploy convert --help` for the options)."""
    return _convert.run(_convert.Options(src=src, output=output, **options), progress)


def quantize(src: str, output: str, *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """INT8-quantize `src` into `output` and prove on data what it kept (options as `mdeploy quantize --help`)."""
    return _quantize.run(_quantize.Options(src=src, output=output, **options), progress)


def distill(teacher: str, student: str, output: str, data: str, *, progress: ProgressFactory = no_progress,
            **options: Any) -> Report:
    """Train the torch `student` (FILE.py:FACTORY) on `teacher`'s outputs over `data`, write it to `output` and prove
    it against the teacher on held-out data (options as `mdeploy distill --help`)."""
    return _distill.run(_distill.Options(teacher=teacher, student=student, output=output, data=data, **options), progress)


def prune(src: str, output: str, *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """Prune the PyTorch model `src`, recover it, export it to `output` (.onnx or .pt2) and prove what it kept (as `mdeploy prune`)."""
    return _prune.run(_prune.Options(src=src, output=output, **options), progress)


def package(model: str, target: str, output: str, *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """Write a model-server package for `model` (mlflow, triton, tfserving, kserve) to the folder `output`, checked against
    the model (options as `mdeploy package --help`; `smoke_test=True` starts the server)."""
    return _package.run(_package.Options(model=model, target=target, output=output, **options), progress)


def validate(reference: str, candidate: str, *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """Compare `candidate` with `reference` on the same inputs (options as `mdeploy validate --help`)."""
    return _validate.run(_validate.Options(reference=reference, candidate=candidate, **options), progress)


def benchmark(models: list[str], *, progress: ProgressFactory = no_progress, **options: Any) -> Report:
    """Latency, throughput, memory and size of each model, with ratios to the first (as `mdeploy benchmark`)."""
    return _benchmark.run(_benchmark.Options(models=list(models), **options), progress)


def inspect(model: str, src_format: str | None = None, weights: str | None = None) -> Report:
    """Inputs, outputs, operators, parameters and size of a model (as `mdeploy inspect`)."""
    return _inspect.run(_inspect.Options(model=model, src_format=src_format, weights=weights))
