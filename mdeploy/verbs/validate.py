"""`validate REF CAND`: run two models on the same inputs and compare every output, every metric, one verdict.

With `layerwise` (two ONNX models), every intermediate tensor they share is compared instead, in graph order, and
the report names the first layer beyond tolerance. Top-1 agreement is judged only on outputs that are class
scores (validation/scores.py).

Devices: `--device cuda` checks what the GPU computes against what the CPU computes, so it runs the candidate on
CUDA and the reference on the CPU; `--ref-device` / `--cand-device` choose each side's device themselves (both on
CUDA, or a CUDA reference). The report records which device ran which side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdeploy.errors import InputError
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.verbs.options import check, option

if TYPE_CHECKING:
    from mdeploy.core import ModelRef, TensorSpec, Tolerance
    from mdeploy.reports.report import Report

PRECISIONS = ("fp32", "fp16", "int8", "int4")
DEVICES = ("cpu", "cuda")


@dataclass
class Options:
    reference: str = option(help="The reference model (the source of truth).", argument=True)
    candidate: str = option(help="The model to check against it.", argument=True)
    data: str | None = option(None, help=".npz of arrays keyed by input name (or .npy / a folder of .npy); a `labels` "
                              "array in it adds task accuracy of both models.")
    labels: str | None = option(None, help=".npy of class ids for --data: reports both models' top-1 accuracy.")
    samples: int | None = option(None, help="Number of random inputs built from the input specs (default 1).", min=1)
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 (repeatable).")
    atol: float | None = option(None, help="Absolute tolerance (default per precision).", min=0.0)
    rtol: float | None = option(None, help="Relative tolerance (default per precision).", min=0.0)
    precision: str | None = option(None, help="Default tolerances for fp32, fp16, int8 or int4 candidates (default fp32; "
                                   "with --generate, read from the candidate's weights).", choices=PRECISIONS)
    device: str = option("cpu", help="cpu or cuda: cuda runs the candidate on the GPU against the reference on the CPU "
                         "(unless --ref-device / --cand-device say otherwise).", choices=DEVICES)
    ref_device: str | None = option(None, help="Device of the reference (default cpu).", choices=DEVICES)
    cand_device: str | None = option(None, help="Device of the candidate (default --device).", choices=DEVICES)
    seed: int = option(0, help="Seed for random inputs (recorded in the report).")
    ref_format: str | None = option(None, flag="--ref-from", help="Format of the reference, when its name does not tell.")
    cand_format: str | None = option(None, flag="--cand-from", help="Format of the candidate, when its name does not tell.")
    weights: str | None = option(None, help="state_dict for a FILE.py:FACTORY reference.")
    report: str | None = option(None, help="Also write the report: .json, .md, .xml (JUnit) or .html.")
    layerwise: bool = option(False, help="ONNX: compare every intermediate tensor both models share; name the first "
                             "layer beyond tolerance.")
    classifier_output: list[str] = option([], help="Output that is class scores, the only kind top-1 agreement is judged "
                                          "on (repeatable; default: decided from the graph and the output names).")
    no_classifier: bool = option(False, help="No output is class scores: top-1 is never judged.")
    generate: bool = option(False, help="Language models (Hugging Face or onnxruntime-genai folders): greedy generation "
                            "from both on the same prompts; token match, first divergence, logits error per step.")
    prompts: str | None = option(None, help="--generate: a text file, one prompt per line (default: a few built-in "
                                 "prompts); or give token ids as input_ids in --data.")
    max_new_tokens: int = option(32, help="--generate: tokens to generate per prompt.", min=1)
    text: str | None = option(None, help="--generate: a text file to measure both models' perplexity on.")
    max_error: str | None = option(None, help="--generate: the bar, e.g. token-match>=0.9,cosine>=0.99,"
                                   "perplexity-ratio<=1.05 (default per precision).")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Run two models on the same inputs and compare every output. Exit 1 on a mismatch."""
    from mdeploy.core import ModelRef, classifier_choice, parse_specs, tolerance_for
    from mdeploy.outputs import check_output

    check(options)
    o = options
    if o.data and o.samples:
        raise InputError("give --data or --samples, not both")
    if o.report:
        check_output(Path(o.report), force=True)
    _generate_flags(o)
    if o.generate:
        from mdeploy.validation import generation

        report = generation.prove(ModelRef.parse(o.reference, o.ref_format), ModelRef.parse(o.candidate, o.cand_format),
                                  o.prompts, o.data, o.text, o.max_new_tokens, o.precision, o.max_error, progress)
        if o.report:
            from mdeploy.reports.render import write

            write(report, Path(o.report))
        return report
    tolerance = tolerance_for(o.precision or "fp32", o.atol, o.rtol, classifier_choice(o.classifier_output, o.no_classifier))
    ref = ModelRef.parse(o.reference, o.ref_format, o.weights)
    cand = ModelRef.parse(o.candidate, o.cand_format)
    inputs = parse_specs(o.inputs)
    if o.layerwise:
        report = _layerwise(ref, cand, o, inputs, tolerance, progress)
    else:
        report = _outputs(ref, cand, o, inputs, tolerance, progress)
    if o.report:
        from mdeploy.reports.render import write

        write(report, Path(o.report))
    return report


def _generate_flags(o: Options) -> None:
    """--generate's own flags only with it; the tensor-comparison flags only without it."""
    mine = {"--prompts": o.prompts, "--text": o.text, "--max-error": o.max_error, "--max-new-tokens": o.max_new_tokens != 32}
    theirs = {"--layerwise": o.layerwise, "--samples": o.samples, "--labels": o.labels, "--input": o.inputs, "--atol": o.atol,
              "--rtol": o.rtol, "--weights": o.weights, "--device": o.device != "cpu", "--ref-device": o.ref_device,
              "--cand-device": o.cand_device, "--classifier-output": o.classifier_output, "--no-classifier": o.no_classifier}
    wrong = [flag for flag, given in (theirs if o.generate else mine).items() if given not in (None, False, [], ())]
    if wrong:
        raise InputError(f"{wrong[0]} does not apply {'with' if o.generate else 'without'} --generate",
                         hint="--generate compares language models by what they generate" if o.generate
                         else "give --generate to compare language models by generation")


def _feeds(specs: list[TensorSpec], o: Options) -> tuple[Any, dict[str, Any]]:
    """The inputs to compare on (`vinputs.Feeds`, whose notes say how --data was read) and where they came from."""
    import numpy as np

    from mdeploy.validation import inputs as vinputs

    if o.data:
        return vinputs.feeds_from_data(vinputs.load_arrays(Path(o.data)), specs, flag="--data"), {"data": o.data}
    rng = np.random.default_rng(o.seed)
    return vinputs.Feeds([vinputs.random_feed(specs, rng) for _ in range(o.samples or 1)]), {"samples": o.samples or 1}


def _outputs(ref: ModelRef, cand: ModelRef, o: Options, inputs: list[TensorSpec], tolerance: Tolerance,
             progress: ProgressFactory) -> Report:
    from mdeploy.reports.report import Report
    from mdeploy.validation import inputs as vinputs
    from mdeploy.validation.run import compare, input_pairs, merged_specs

    ref_device, cand_device = devices(o)
    ref_runner = _open(ref, ref_device, "--ref-device" if o.ref_device else None, inputs)
    cand_runner = _open(cand, cand_device, "--cand-device" if o.cand_device else None, None)
    input_pairs(ref_runner.input_specs(), cand_runner.input_specs())  # different inputs: exit 2, whatever the data
    feeds, source = _feeds(merged_specs(ref_runner, cand_runner), o)
    labels = _labels(o)
    accuracy = None
    with progress("validating", len(feeds)) as advance:
        if labels is None:
            comparison = compare(ref_runner, cand_runner, feeds, tolerance, progress=advance, data=o.data)
        else:
            from mdeploy.validation.proof import prove

            proof = prove(ref_runner, cand_runner, feeds, tolerance, labels, progress=advance)
            comparison, accuracy = proof.comparison, proof.accuracy
    comparison.notes = [*feeds.notes, *comparison.notes]  # how --data was read, shown with the verdict
    report = Report(
        command="validate",
        data={"reference": ref.name, "candidate": cand.name, "device": cand_device, "reference_device": ref_device,
              "candidate_device": cand_device, "seed": o.seed, "inputs_sha256": vinputs.feeds_hash(feeds), **source},
        comparisons=[comparison],
    )
    if accuracy is not None:
        report.data["accuracy"] = accuracy.to_dict()
    return report


def devices(o: Options) -> tuple[str, str]:
    """(reference device, candidate device): the reference on the CPU and the candidate on --device, unless
    --ref-device / --cand-device say otherwise."""
    return o.ref_device or "cpu", o.cand_device or o.device


def _open(ref: ModelRef, device: str, flag: str | None, inputs: list[TensorSpec] | None) -> Any:
    """The runner for one side; a device error names the flag that chose the device (runners say `--device`)."""
    from mdeploy.errors import MdeployError
    from mdeploy.registry import open_runner

    try:
        return open_runner(ref, device, inputs)
    except MdeployError as exc:
        if flag and exc.message.startswith("--device "):
            exc.message = flag + exc.message[len("--device"):]
            exc.args = (exc.message,)
        raise


def _labels(o: Options) -> Any:
    """Class ids for the data: `--labels`, or a `labels` array in the --data .npz; None without either."""
    from mdeploy.validation.inputs import class_ids, load_arrays, read_labels

    if o.labels and not o.data:
        raise InputError("--labels needs the data they label", hint="give --data")
    if o.labels:
        return read_labels(o.labels)
    labels = load_arrays(Path(o.data)).get("labels") if o.data and Path(o.data).suffix == ".npz" else None
    return None if labels is None else class_ids(labels)


def _layerwise(ref: ModelRef, cand: ModelRef, o: Options, inputs: list[TensorSpec], tolerance: Tolerance,
               progress: ProgressFactory) -> Report:
    """Every shared intermediate tensor of two ONNX models, a chunk of layers at a time."""
    from mdeploy.core import Format
    from mdeploy.registry import open_runner
    from mdeploy.reports.report import Report, Step
    from mdeploy.validation import inputs as vinputs
    from mdeploy.validation.layerwise import compare_layers

    if ref.format != Format.ONNX or cand.format != Format.ONNX:
        raise InputError("--layerwise compares two ONNX models", hint=f"got {ref.format.value} and {cand.format.value}")
    if "cuda" in devices(o):
        raise InputError("--layerwise runs on the CPU", hint="drop --device / --ref-device / --cand-device")
    ref_runner = open_runner(ref, "cpu", inputs)
    specs = ref_runner.input_specs()
    del ref_runner
    feeds, source = _feeds(specs, o)
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
    return Report(
        command="validate",
        data={"reference": ref.name, "candidate": cand.name, "device": "cpu", "reference_device": "cpu",
              "candidate_device": "cpu", "seed": o.seed,
              "inputs_sha256": vinputs.feeds_hash(feeds), **source, "layerwise": result.to_dict()},
        steps=[Step("layerwise", "passed" if result else "failed",
                    {"first_failure": f"{first.node} ({first.op_type}) -> {first.tensor}" if first is not None else None},
                    time.perf_counter() - start)],
        notes=[*feeds.notes, *result.notes],
    )
