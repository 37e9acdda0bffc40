"""Converting a model over the planned chain of converters, then proving the result computes what the source did:
on the example inputs, and again at a second size of every dynamic axis (an export that froze an axis fails there).
Intermediate hops of a multi-hop conversion live only in the staging folder (outputs.atomic_output).

The `convert` verb parses its options into a call here; `prune` and `distill` export their torch results through
the same call, so a model they write is converted and proven exactly as `mdeploy convert` would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mdeploy import registry
from mdeploy.converters.base import build_options
from mdeploy.core import Format, ModelRef, TensorSpec, Tolerance
from mdeploy.errors import InputError, MdeployError
from mdeploy.lazy import numpy as np
from mdeploy.measuring.memory import release_freed_memory
from mdeploy.outputs import atomic_output, check_output
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report, Step
from mdeploy.validation import inputs as vinputs
from mdeploy.validation.run import compare_to_reference, merge_specs, resized_feed, run_reference


def convert_model(ref: ModelRef, out: Path, dst: Format, converter_options: dict[str, Any], tolerance: Tolerance, *,
                  seed: int = 0, validate: bool = True, force: bool = False,
                  progress: ProgressFactory = no_progress) -> Report:
    """Convert `ref` to `dst` at `out` (replacing it only with `force`) and, unless `validate` is off, prove the
    result against the source (comparisons in the report; exit 1 is the caller's verdict on them).

    `converter_options`: the options the hops share, by name (`converters.base.chosen_options`); `ref` carries its
    load options already (`ModelRef.with_load_options`)."""
    check_output(out, force)
    if out.resolve() == ref.path.resolve():
        raise InputError("the output would overwrite the input", hint="choose another output path")
    chain = registry.plan_conversion(ref.format, dst)
    hop_options = build_options(chain, converter_options)
    report = Report(command="convert", data={"source": ref.name, "output": str(out), "seed": seed})
    try:
        with atomic_output(out, force) as tmp:
            result = None
            source_run = None  # the first hop's run of the source at the example inputs, which validation reuses
            current = ref
            for i, (conv, opts) in enumerate(zip(chain, hop_options)):
                hop_out = tmp if i == len(chain) - 1 else tmp.parent / f"hop{i}{conv.target.suffix}"
                start = time.perf_counter()
                result = conv().convert(current, hop_out, opts)
                if i == 0:
                    source_run = result.source_run
                if result.pending_check is not None and (i < len(chain) - 1 or not validate):
                    lap = time.perf_counter()
                    result.pending_check()  # with validation, the last hop's check runs once the source is released
                    result.pending_check = None
                    result.details.setdefault("timings", {})["onnx.checker"] = round(time.perf_counter() - lap, 3)
                report.steps.append(
                    Step(f"convert {current.format.value} -> {conv.target.value}", "done",
                         {"converter": conv.name, "notes": result.notes, **result.details}, time.perf_counter() - start)
                )
                report.notes.extend(result.notes)
                current = result.output
            if validate and result is not None:
                _validate(ref, ModelRef(tmp, dst), ModelRef(out, dst), result, tolerance, seed, report, progress,
                          source_run)
    finally:
        if ref.format == Format.PYTORCH_MODULE:
            from mdeploy.frameworks import torch_models

            torch_models.release()  # the module the converter kept for validation, if validation did not take it
    report.data["format"] = dst.value
    return report


def _validate(src: ModelRef, staged: ModelRef, final: ModelRef, result, tolerance, seed: int, report: Report,  # noqa: ANN001
              progress: ProgressFactory, source_run=None) -> None:  # noqa: ANN001
    """Validate the staged result, unless one side cannot run on this onnxruntime (then say why)."""
    if staged.format == Format.GENAI:  # a language model is proven by what it generates
        from mdeploy.validation import generation

        try:
            generation.prove_conversion(src, staged, final, result.details.get("precision"), report)
        except MdeployError as exc:  # the user knows the output's name, not the staging folder's
            exc.message = exc.message.replace(str(staged.path), str(final.path))
            exc.args = (exc.message,)
            raise
        return
    unrunnable = _not_runnable_here(src, staged)
    if unrunnable:
        if result.pending_check is not None:
            result.pending_check()
        report.notes.append(f"not validated: {unrunnable}")
        report.steps.append(Step("validate", "skipped", {"reason": unrunnable}))
        return
    report.comparisons.extend(
        _validate_conversion(src, staged, result.input_specs, result.dynamic_axes, tolerance, seed, report, progress,
                             result.pending_check, source_run)
    )
    for c in report.comparisons:
        c.notes = [n.replace(str(staged.path), str(final.path)) for n in c.notes]


def _not_runnable_here(src: ModelRef, result: ModelRef) -> str | None:
    """Why the source and the result cannot both run here: an ONNX model importing an opset newer than this
    onnxruntime reads (converting such a model to an older opset is what `convert --opset` is for)."""
    from mdeploy.frameworks import onnx_skeleton, ort_sessions

    for role, ref in (("the source", src), ("the result", result)):
        if ref.format == Format.ONNX and ref.path.is_file():
            proto = onnx_skeleton.load_without_weights(ref.path)  # the header is what counts here
            fitted = ort_sessions.fit(proto)
            if fitted.too_new:
                return f"{role} {ref.path.name} cannot run here: it is {ort_sessions.too_new(proto, fitted)[0]}"
    return None


def _validate_conversion(src, result, specs, dynamic, tolerance, seed, report, progress,  # noqa: ANN001, ANN202
                         pending_check=None, source_run=None):
    """Run source and result on the example inputs, then at a second size of every dynamic axis.

    `source_run`: the converter's own run of the source at the example inputs (feed, outputs). Where the example
    feed drawn here is that same feed (the default seed; a source whose example_inputs() do not fit is fed the same
    seeded draw), its outputs stand for the source's run there instead of running the model twice.

    The two models never hold memory at once: the source runs on every feed first, its outputs are kept and the
    source model released (a torch source: the module convert built); then `pending_check` (the converter's onnx.checker,
    which reads the whole file), and only then is the result loaded and run against the kept outputs. An ONNX
    result's input specs (token id ranges) are read from its graph without its weights beforehand; a result in
    another format is loaded first, as validation always did.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        timings[stage] = time.perf_counter() - start - sum(timings.values())

    symbolic = {(name, axis): dim for dim, axes in dynamic.items() for name, axis in axes}
    runner_specs = [
        TensorSpec(s.name, tuple(symbolic.get((s.name, a), d) for a, d in enumerate(s.shape)), s.dtype, s.value_range)
        for s in specs
    ]
    cand_runner = None
    if result.format == Format.ONNX:
        from mdeploy.frameworks import onnx_models, onnx_skeleton

        cand_specs = onnx_models.graph_inputs(onnx_skeleton.load_without_weights(result.path))
    else:
        cand_runner = registry.open_runner(result)
        cand_specs = cand_runner.input_specs()
        lap("open the result")
    ref_runner = registry.open_runner(src, input_specs=runner_specs or None)  # a torch source reuses the module convert built
    lap("open the source")
    rng = np.random.default_rng(seed)
    examples = {s.name: s for s in specs}
    merged = merge_specs(ref_runner.input_specs(), cand_specs)
    specs = [TensorSpec(s.name, examples[s.name].shape, s.dtype, s.value_range) for s in merged]
    specs = vinputs.align_batch(specs, {name for axes in dynamic.values() for name, axis in axes if axis == 0})
    base = vinputs.random_feed(specs, rng)
    batches = [("example inputs", base)]
    if dynamic:
        resized, label = resized_feed(specs, dynamic, base, rng)
        batches.append((label, resized))
    comparisons = []
    with progress("validating", 2 * len(batches)) as advance:
        references = []
        for label, feed in batches:
            references.append((label, run_reference(ref_runner, [feed], known=source_run)))
            lap(f"run the source at {label}" if not references[-1][1].reused else
                f"the source at {label}: the converter's run, reused")
            advance()
        release = getattr(ref_runner, "release", None)  # a runner that can free its model's memory at once (torch)
        if release is not None:
            release()  # it collects the garbage itself
        del ref_runner
        release_freed_memory(collect=release is None)
        lap("release the source")
        if pending_check is not None:
            pending_check()
            lap("onnx.checker")
        if cand_runner is None:
            cand_runner = registry.open_runner(result)
            lap("open the result")
        for label, reference in references:
            comparisons.append(compare_to_reference(reference, cand_runner, tolerance, label=label))
            lap(f"run the result at {label}")
            advance()
    report.steps.append(Step("validate", "passed" if all(comparisons) else "failed",
                             {"inputs_sha256": vinputs.feeds_hash([f for _, f in batches]),
                              "timings": {k: round(v, 3) for k, v in timings.items()}}, time.perf_counter() - start))
    return comparisons
