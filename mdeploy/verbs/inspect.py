"""`inspect`: what a model takes, returns, and is made of, read without running it where the format allows."""

from __future__ import annotations

from dataclasses import dataclass

from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report
from mdeploy.verbs.options import option


@dataclass
class Options:
    model: str = option(help="Model file, SavedModel folder, or FILE.py:FACTORY.", argument=True)
    src_format: str | None = option(None, flag="--from", help="Format, when the name does not tell.")
    weights: str | None = option(None, help="state_dict for a FILE.py:FACTORY model (loaded with weights_only=True).")
    runtime: bool = option(False, help="ONNX: run the model (random inputs) and show what onnxruntime executes: the share "
                           "of time and MACs in integer vs float kernels per op, Q/DQ and Cast overhead, float nodes and why.")
    inputs: list[str] = option([], flag="--input", help="--runtime: NAME:SHAPE[:DTYPE] for inputs with free dimensions "
                               "(repeatable).")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Show inputs, outputs, operators, parameters and size of a model (exit 2 if it is invalid).

    A model this machine's runtime cannot run (an ONNX opset newer than onnxruntime) is still shown, with a note
    saying what would run it: inspecting is reading, and reading is what tells the user which runtime to get.
    `--runtime` runs it: what onnxruntime executes is only known from its optimized graph and its profiler."""
    from mdeploy import registry
    from mdeploy.core import ModelRef

    ref = ModelRef.parse(options.model, options.src_format, options.weights)
    info = registry.runner_for(ref.format).describe(ref)
    report = Report(command="inspect", data={"model": info})
    if options.runtime:
        from mdeploy.core import parse_specs
        from mdeploy.quantization import runtime_report

        report.data["runtime"] = runtime_report.inspect_record(ref, parse_specs(options.inputs))
    return report
