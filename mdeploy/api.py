"""The verbs as plain Python functions returning Reports; the CLI is a thin skin over these.

Each function checks its inputs before doing any work, writes outputs atomically, and raises MdeployError
for anything the user can fix. A failed check (a validation mismatch) is not an exception: it is a Report
that is falsy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from mdeploy import registry
from mdeploy.benchmarking import benchmark  # noqa: F401  the verb: latency, throughput, memory, size, side by side
from mdeploy.converters.base import build_options
from mdeploy.core import Format, ModelRef, TensorSpec, format_for_output, tolerance_for
from mdeploy.errors import InputError
from mdeploy.outputs import atomic_output, check_output
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step
from mdeploy.runners.base import Runner
from mdeploy.validation import inputs as vinputs
from mdeploy.validation.run import compare, merged_specs, resized_feed

PRECISIONS = ("fp32", "fp16", "int8")


def open_runner(ref: ModelRef, device: str = "cpu", input_specs: list[TensorSpec] | None = None, threads: int | None = None) -> Runner:
    """A runner for any model format that has one."""
    return registry.runner_for(ref.format)(ref, device=device, input_specs=input_specs, threads=threads)


def inspect(model: str, fmt: str | None = None, weights: str | None = None) -> Report:
    """Facts about a model: inputs, outputs, operators, parameters, size."""
    ref = ModelRef.parse(model, fmt, weights)
    info = registry.runner_for(ref.format).describe(ref)
    return Report(command="inspect", data={"model": info})


def convert(
    src: str,
    output: str,
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    weights: str | None = None,
    validate: bool = True,
    force: bool = False,
    atol: float | None = None,
    rtol: float | None = None,
    classifier_outputs: tuple[str, ...] | None = None,
    seed: int = 0,
    progress: ProgressFactory = no_progress,
    **options: Any,
) -> Report:
    """Convert `src` to `output` over the planned chain of converters, then validate the result.

    `options` are the converter options the user set (inputs, dynamic, opset, exporter, precision, ...);
    each hop takes the ones its Options dataclass declares. `classifier_outputs`: the outputs that are class
    scores (top-1 is judged on those only); None decides from the graph and names, () says none.
    """
    ref = ModelRef.parse(src, src_format, weights).with_load_options(options)
    out = Path(output)
    dst = Format.parse(dst_format) if dst_format else format_for_output(out)
    check_output(out, force)
    if out.resolve() == ref.path.resolve():
        raise InputError("the output would overwrite the input", hint="choose another output path")
    chain = registry.plan_conversion(ref.format, dst)
    hop_options = build_options(chain, options)
    report = Report(command="convert", data={"source": ref.name, "output": str(out), "seed": seed})
    precision = options.get("precision") or "fp32"
    with atomic_output(out, force) as tmp:
        current, result = ref, None
        for i, (conv, opts) in enumerate(zip(chain, hop_options)):
            last = i == len(chain) - 1
            hop_out = tmp if last else tmp.parent / f"hop{i}{_suffix(conv.target)}"
            start = time.perf_counter()
            result = conv().convert(current, hop_out, opts)
            report.steps.append(
                Step(f"convert {current.format.value} -> {conv.target.value}", "done",
                     {"converter": conv.name, "notes": result.notes, **result.details}, time.perf_counter() - start)
            )
            report.notes.extend(result.notes)
            current = result.output
        unrunnable = _not_runnable_here(ref, ModelRef(tmp, dst)) if validate and result is not None else None
        if unrunnable:
            report.notes.append(f"not validated: {unrunnable}")
            report.steps.append(Step("validate", "skipped", {"reason": unrunnable}))
        elif validate and result is not None:
            final = ModelRef(out, dst)
            report.comparisons.extend(
                _validate_conversion(ref, ModelRef(tmp, dst), result.input_specs, result.dynamic_axes,
                                     tolerance_for(precision, atol, rtol, classifier_outputs), seed, report, progress)
            )
            for c in report.comparisons:
                c.notes = [n.replace(str(tmp), str(final)) for n in c.notes]
    if ref.format == Format.PYTORCH_MODULE:
        from mdeploy.frameworks import torch_models

        torch_models.release()  # the module the converter kept for validation, if validation did not take it
    report.data["format"] = dst.value
    return report


def _suffix(fmt: Format) -> str:
    return {Format.ONNX: ".onnx", Format.TFLITE: ".tflite", Format.KERAS: ".keras", Format.PYTORCH_EXPORTED: ".pt2"}.get(fmt, "")


def _not_runnable_here(src: ModelRef, result: ModelRef) -> str | None:
    """Why the source and the result cannot both run here: an ONNX model importing an opset newer than this
    onnxruntime reads (converting such a model to an older opset is what `convert --opset` is for)."""
    from mdeploy.frameworks import onnx_models, ort_sessions

    for role, ref in (("the source", src), ("the result", result)):
        if ref.format == Format.ONNX and ref.path.is_file():
            proto = onnx_models.load_proto(ref.path)
            fitted = ort_sessions.fit(proto)
            if fitted.too_new:
                return f"{role} {ref.path.name} cannot run here: it is {ort_sessions.too_new(proto, fitted)[0]}"
    return None


def _validate_conversion(src, result, specs, dynamic, tolerance, seed, report, progress):  # noqa: ANN001, ANN202
    """Run source and result on the example inputs, then at a second size of every dynamic axis."""
    start = time.perf_counter()
    symbolic = {(name, axis): dim for dim, axes in dynamic.items() for name, axis in axes}
    runner_specs = [
        TensorSpec(s.name, tuple(symbolic.get((s.name, a), d) for a, d in enumerate(s.shape)), s.dtype, s.value_range)
        for s in specs
    ]
    ref_runner = open_runner(src, input_specs=runner_specs or None)  # a torch source reuses the module convert built
    timings = {"open the source": time.perf_counter() - start}
    cand_runner = open_runner(result)
    timings["open the result"] = time.perf_counter() - start - sum(timings.values())
    rng = np.random.default_rng(seed)
    examples = {s.name: s for s in specs}
    specs = [TensorSpec(s.name, examples[s.name].shape, s.dtype, s.value_range) for s in merged_specs(ref_runner, cand_runner)]
    base = vinputs.random_feed(specs, rng)
    batches = [("example inputs", base)]
    if dynamic:
        resized, label = resized_feed(specs, dynamic, base, rng)
        batches.append((label, resized))
    comparisons = []
    with progress("validating", len(batches)) as advance:
        for label, feed in batches:
            lap = time.perf_counter()
            comparisons.append(compare(ref_runner, cand_runner, [feed], tolerance, label=label))
            timings[f"run both at {label}"] = time.perf_counter() - lap
            advance()
    report.steps.append(Step("validate", "passed" if all(comparisons) else "failed",
                             {"inputs_sha256": vinputs.feeds_hash([f for _, f in batches]),
                              "timings": {k: round(v, 3) for k, v in timings.items()}}, time.perf_counter() - start))
    return comparisons


def validate(
    reference: str,
    candidate: str,
    *,
    data: str | None = None,
    samples: int | None = None,
    inputs: list[TensorSpec] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    precision: str = "fp32",
    device: str = "cpu",
    seed: int = 0,
    ref_format: str | None = None,
    cand_format: str | None = None,
    ref_weights: str | None = None,
    report_path: str | None = None,
    progress: ProgressFactory = no_progress,
    layerwise: bool = False,
    classifier_outputs: tuple[str, ...] | None = None,
) -> Report:
    """Compare two models on the same inputs: every output, every metric, one verdict.

    Top-1 agreement is judged only on outputs that are class scores: `classifier_outputs` names them (() for
    none); by default they are decided from the graph and the output names (validation/scores.py).

    With `layerwise` (two ONNX models), every intermediate tensor they share is compared instead, in graph
    order, and the report names the first layer beyond tolerance.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'", hint="choose fp32, fp16 or int8")
    if data and samples:
        raise InputError("give --data or --samples, not both")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}'", hint="choose cpu or cuda")
    if report_path:
        check_output(Path(report_path), force=True)
    tolerance = tolerance_for(precision, atol, rtol, classifier_outputs)
    ref = ModelRef.parse(reference, ref_format, ref_weights)
    cand = ModelRef.parse(candidate, cand_format)
    if layerwise:
        return _validate_layerwise(ref, cand, data, samples, inputs, tolerance, device, seed, report_path, progress)
    ref_runner = open_runner(ref, device, inputs)
    cand_runner = open_runner(cand, device)
    specs = merged_specs(ref_runner, cand_runner)
    if data:
        feeds = vinputs.feeds_from_data(vinputs.load_arrays(Path(data)), specs)
        source = {"data": data}
    else:
        rng = np.random.default_rng(seed)
        feeds = [vinputs.random_feed(specs, rng) for _ in range(samples or 1)]
        source = {"samples": samples or 1}
    with progress("validating", len(feeds)) as advance:
        comparison = compare(ref_runner, cand_runner, feeds, tolerance, progress=advance)
    report = Report(
        command="validate",
        data={"reference": ref.name, "candidate": cand.name, "device": device, "seed": seed,
              "inputs_sha256": vinputs.feeds_hash(feeds), **source},
        comparisons=[comparison],
    )
    if report_path:
        from mdeploy.reports.render import write

        write(report, Path(report_path))
    return report



def quantize(
    src: str,
    output: str,
    *,
    src_format: str | None = None,
    eval_data: str | None = None,
    labels: str | None = None,
    max_error: str | None = None,
    eval_samples: int | None = None,
    classifier_outputs: tuple[str, ...] | None = None,
    validate: bool = True,
    force: bool = False,
    device: str = "cpu",
    seed: int = 0,
    progress: ProgressFactory = no_progress,
    **options: Any,
) -> Report:
    """Quantize `src` with the pass for its format, then prove on data what the result kept.

    `options` are the pass's options (mode, calib_data, calib_method, exclude, int8_io, ...); one the chosen
    pass does not take is an error. With `max_error` (e.g. `cosine>=0.995`) an ONNX result that misses the
    bar is repaired: the costliest nodes are kept in float until it holds; if it never does, the best model
    found is written and the report fails (exit 1).
    """
    from mdeploy import quantizing as quantize_flow
    from mdeploy.passes.base import build_pass_options

    ref = ModelRef.parse(src, src_format).with_load_options(options)
    out = Path(output)
    pass_cls = registry.pass_for("quantize", ref.format)
    check_output(out, force)
    if out.resolve() == ref.path.resolve():
        raise InputError("the output would overwrite the input", hint="choose another output path")
    quantize_flow.check_output_suffix(out, pass_cls)
    bar = quantize_flow.parse_bar(max_error) if max_error is not None else None
    pass_options = build_pass_options(pass_cls, options)
    plan = quantize_flow.Plan(ref, out, pass_cls, pass_options, bar, eval_data or options.get("calib_data"), labels,
                              eval_samples, validate, device, seed, progress, classifier_outputs)
    plan.check()
    with atomic_output(out, force) as tmp:
        report = plan.execute(tmp)
    return report



def _validate_layerwise(ref: ModelRef, cand: ModelRef, data: str | None, samples: int | None, inputs: list[TensorSpec] | None,
                        tolerance: Any, device: str, seed: int, report_path: str | None, progress: ProgressFactory) -> Report:
    """`validate --layerwise`: every shared intermediate tensor of two ONNX models, a chunk of layers at a time."""
    from mdeploy.validation.layerwise import compare_layers

    if ref.format != Format.ONNX or cand.format != Format.ONNX:
        raise InputError("--layerwise compares two ONNX models", hint=f"got {ref.format.value} and {cand.format.value}")
    if device != "cpu":
        raise InputError("--layerwise runs on the CPU", hint="drop --device")
    ref_runner = open_runner(ref, "cpu", inputs)
    specs = ref_runner.input_specs()
    del ref_runner
    if data:
        feeds = vinputs.feeds_from_data(vinputs.load_arrays(Path(data)), specs)
        source: dict[str, Any] = {"data": data}
    else:
        rng = np.random.default_rng(seed)
        feeds = [vinputs.random_feed(specs, rng) for _ in range(samples or 1)]
        source = {"samples": samples or 1}
    start = time.perf_counter()
    holder: dict[str, Any] = {}

    def chunks(n: int) -> None:
        holder["bar"] = progress("comparing layers", n)
        holder["advance"] = holder["bar"].__enter__()

    try:
        result = compare_layers(ref.path, cand.path, feeds, tolerance, progress=lambda: holder["advance"](), on_chunks=chunks)
    finally:
        if "bar" in holder:
            holder["bar"].__exit__(None, None, None)
    first = result.first_failure
    report = Report(
        command="validate",
        data={"reference": ref.name, "candidate": cand.name, "device": "cpu", "seed": seed,
              "inputs_sha256": vinputs.feeds_hash(feeds), **source, "layerwise": result.to_dict()},
        steps=[Step("layerwise", "passed" if result else "failed",
                    {"first_failure": f"{first.node} ({first.op_type}) -> {first.tensor}" if first is not None else None},
                    time.perf_counter() - start)],
        notes=result.notes,
    )
    if report_path:
        from mdeploy.reports.render import write

        write(report, Path(report_path))
    return report
