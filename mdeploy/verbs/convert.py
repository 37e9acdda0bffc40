"""`convert SRC -o OUT`: the verb's options, parsed into one call of `mdeploy.conversion.convert_model` (the chain
of converters and the proof of the result, which prune and distill use too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mdeploy.conversion import convert_model
from mdeploy.converters.base import chosen_options
from mdeploy.core import Format, ModelRef, classifier_choice, format_for_output, parse_dynamic, parse_specs, tolerance_for
from mdeploy.errors import InputError
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.reports.report import Report
from mdeploy.verbs.options import check, option


@dataclass
class Options:
    src: str = option(help="Model: file, SavedModel folder, or FILE.py:FACTORY / pkg.module:FACTORY.", argument=True)
    output: str = option(help="Where to write the converted model.", short="-o")
    src_format: str | None = option(None, flag="--from", help="Source format, when the name does not tell.")
    dst_format: str | None = option(None, flag="--to", help="Target format, when the extension does not tell.")
    inputs: list[str] = option([], flag="--input", help="NAME:SHAPE[:DTYPE], e.g. input_ids:1x128:int64 (repeatable).")
    dynamic: list[str] = option([], help="NAME:AXIS[:DIMNAME] axis that stays dynamic (repeatable).")
    opset: int | None = option(None, help="ONNX opset version.", min=1)
    exporter: str | None = option(None, help="PyTorch exporter: auto | dynamo | torchscript (default auto).",
                                  choices=("auto", "dynamo", "torchscript"))
    precision: str | None = option(None, help="TFLite: fp32 | fp16 (float16 weights); TensorRT: fp32 | fp16 (a float16 "
                                   "ONNX model first) | int8 (from the model's Q/DQ); a language model (Hugging Face "
                                   "folder -> onnxruntime-genai): fp32 | fp16 | int8 | int4; also picks the validation "
                                   "tolerance.", choices=("fp32", "fp16", "int8", "int4"))
    max_length: int | None = option(None, help="Language model: the longest prompt + generated tokens its generator "
                                    "allows (default: the model's context length).", min=2)
    device: str | None = option(None, help="Language model: the device the onnxruntime-genai folder is built for, cpu "
                                "(default) | cuda (where fp16 runs; it needs onnxruntime-genai's CUDA package and a GPU to "
                                "run, and is proven there).", choices=("cpu", "cuda"))
    calib_data: str | None = option(None, help="--precision fp16 to ONNX or TensorRT: inputs (.npz) the activation ranges "
                                    "are measured on; nodes beyond float16's range stay float32 (default: random inputs).")
    keep_fp32: list[str] = option([], help="--precision fp16 to ONNX or TensorRT: operator type or node name kept float32 "
                                  "(repeatable).")
    shapes: list[str] = option([], help="TensorRT profile NAME:MIN:OPT:MAX, e.g. images:1x3x224x224:8x3x224x224:32x3x224x224 "
                               "(repeatable).")
    workspace: str | None = option(None, help="TensorRT builder workspace limit, e.g. 2G or 512M.")
    timing_cache: str | None = option(None, help="TensorRT timing cache file: read when it exists, saved after the build.")
    version_compatible: bool = option(False, help="TensorRT engine that also runs on later TensorRT versions.")
    hardware_compatibility: str | None = option(None, help="TensorRT engine portability: none | ampere+ | same-cc.",
                                                choices=("none", "ampere+", "same-cc"))
    builder_optimization_level: int | None = option(None, help="TensorRT builder optimization level 0-5.", min=0)
    refittable: bool = option(False, help="TensorRT engine whose weights can be refitted.")
    signature: str | None = option(None, help="SavedModel signature to convert (default serving_default).")
    unsafe_deserialization: bool = option(False, help="Load .keras files with Lambda layers (runs Python code stored in "
                                          "the file; only for files you trust).")
    weights: str | None = option(None, help="state_dict for a FILE.py:FACTORY model (loaded with weights_only=True).")
    no_validate: bool = option(False, help="Skip validating the result against the source.")
    atol: float | None = option(None, help="Absolute tolerance for validation.", min=0.0)
    rtol: float | None = option(None, help="Relative tolerance for validation.", min=0.0)
    classifier_output: list[str] = option([], help="Output that is class scores, the only kind top-1 agreement is judged "
                                          "on (repeatable; default: decided from the graph and the output names).")
    no_classifier: bool = option(False, help="No output is class scores: top-1 is never judged.")
    seed: int = option(0, help="Seed for random inputs (recorded in the report).")
    force: bool = option(False, help="Replace an existing output.")


def run(options: Options, progress: ProgressFactory = no_progress) -> Report:
    """Convert a model to another format and prove the result computes what the source did (exit 1 if not)."""
    check(options)
    o = options
    converter_options = chosen_options({
        "inputs": parse_specs(o.inputs), "dynamic": [d if isinstance(d, tuple) else parse_dynamic(d) for d in o.dynamic],
        "opset": o.opset, "exporter": o.exporter, "precision": o.precision, "max_length": o.max_length, "device": o.device, "signature": o.signature,
        "unsafe_deserialization": o.unsafe_deserialization, "shapes": o.shapes, "workspace": o.workspace,
        "timing_cache": o.timing_cache, "version_compatible": o.version_compatible,
        "hardware_compatibility": o.hardware_compatibility, "builder_optimization_level": o.builder_optimization_level,
        "refittable": o.refittable, "calib_data": o.calib_data, "keep_fp32": o.keep_fp32,
    })
    ref = ModelRef.parse(o.src, o.src_format, o.weights).with_load_options(converter_options)
    out = Path(o.output)
    dst = Format.parse(o.dst_format) if o.dst_format else format_for_output(out, ref.format)
    if dst == Format.GENAI:  # proven by generation (validation/generation.py): tensor tolerances have nothing to judge
        given = [flag for flag, value in (("--atol", o.atol), ("--rtol", o.rtol), ("--classifier-output",
                                          o.classifier_output), ("--no-classifier", o.no_classifier)) if value]
        if given:
            raise InputError(f"{', '.join(given)} does not apply to a language model: it is proven by what it generates",
                             hint=f"set its bar afterwards: mdeploy validate {o.src} {o.output} --generate --max-error ...")
    tolerance = tolerance_for(o.precision or "fp32", o.atol, o.rtol, classifier_choice(o.classifier_output, o.no_classifier))
    return convert_model(ref, out, dst, converter_options, tolerance, seed=o.seed, validate=not o.no_validate,
                         force=o.force, progress=progress)
