"""INT8 quantization of SavedModel/Keras models into TFLite, through tf.lite.TFLiteConverter.

- `dynamic`: INT8 weights, float activations (dynamic-range quantization); needs no data.
- `static`: full-integer INT8 with a representative dataset built from the calibration data (`.npz` keyed by
  input name). TFLite's converter silently leaves operators it cannot quantize in float even when asked for
  INT8 only, so the result is inspected: any float operator is an error that names the operators, unless
  `allow_float_fallback` accepts them (they are then listed in the notes).
- `auto`: static when calibration data is given, dynamic otherwise.
`int8_io` makes the model's inputs and outputs int8 too (what INT8-only accelerators want); the TFLite
runner (de)quantizes them with the model's own scale and zero point, so validation stays in real units.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import ConversionError, InputError
from mdeploy.frameworks import tf_models, tflite_convert, tflite_models
from mdeploy.quantization.base import Pass, PassResult
from mdeploy.validation import inputs as vinputs

MODES = ("dynamic", "static", "auto")


@dataclass
class TFLiteQuantizeOptions:
    mode: str = field(default="auto", metadata={"help": "dynamic (int8 weights) | static (full-integer, needs --calib-data) | auto"})
    calib_data: str | None = field(default=None, metadata={"help": ".npz of calibration inputs keyed by input name"})
    int8_io: bool = field(default=False, metadata={"help": "int8 inputs and outputs (static only)"})
    allow_float_fallback: bool = field(default=False, metadata={"help": "accept operators that stay in float instead of failing"})
    signature: str | None = field(default=None, metadata={"help": "SavedModel signature (default serving_default)"})
    inputs: list[TensorSpec] = field(default_factory=list, metadata={"help": "NAME:SHAPE fixes unknown input dimensions"})
    calib_samples: int | None = field(default=None, metadata={"help": "use at most N samples of --calib-data; without it, calibrate on N random samples (rarely accurate)"})


class TFLiteQuantize(Pass):
    verb: ClassVar[str] = "quantize"
    sources: ClassVar[tuple[Format, ...]] = (Format.SAVEDMODEL, Format.KERAS)
    target: ClassVar[Format] = Format.TFLITE
    Options: ClassVar[type] = TFLiteQuantizeOptions
    name: ClassVar[str] = "tf.lite.TFLiteConverter (int8)"

    def run(self, src: ModelRef, out: Path, options: TFLiteQuantizeOptions) -> PassResult:
        mode = _mode(options)
        calib = _calibration(Path(options.calib_data), options.calib_samples) if mode == "static" and options.calib_data else None
        if src.format == Format.KERAS:
            from mdeploy.converters.keras_to_savedmodel import KerasToSavedModel, KerasToSavedModelOptions

            with tempfile.TemporaryDirectory(prefix=".mdeploy-savedmodel-", dir=out.parent) as tmp:
                saved = KerasToSavedModel().convert(src, Path(tmp) / "savedmodel", KerasToSavedModelOptions()).output
                return self._quantize(saved, src, out, options, mode, calib)
        return self._quantize(src, src, out, options, mode, calib)

    def _quantize(self, saved: ModelRef, src: ModelRef, out: Path, options: TFLiteQuantizeOptions, mode: str,
                  calib: dict[str, np.ndarray] | None) -> PassResult:
        t = tf_models.tf()
        prepared = tflite_convert.prepare(saved.path, options.signature, options.inputs)
        converter = prepared.converter
        converter.optimizations = [t.lite.Optimize.DEFAULT]
        notes = []
        if mode == "static":
            if calib is None:
                calib = _random_calibration(prepared.specs, options.calib_samples or 0)
                notes.append(f"calibrated on {options.calib_samples} RANDOM samples (no --calib-data): the scales may not fit real inputs")
            calib = _check_calibration(calib, prepared.specs, notes)
            n = len(next(iter(calib.values())))
            converter.representative_dataset = lambda: _samples(calib, n)
            ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if options.allow_float_fallback:
                ops.append(t.lite.OpsSet.TFLITE_BUILTINS)
            converter.target_spec.supported_ops = ops
            if options.int8_io:
                converter.inference_input_type = t.int8
                converter.inference_output_type = t.int8
            notes.append(f"full-integer INT8, calibrated on {n} samples" + (f" from {options.calib_data}" if options.calib_data else ""))
        else:
            notes.append("dynamic-range INT8: weights int8, activations float")
        data = tflite_convert.run(converter, src.name)
        out.write_bytes(data)
        float_ops: list[str] = []
        if mode == "static":
            float_ops = sorted(set(tflite_models.float_ops(tflite_models.interpreter(out, inspect=True))))
            if float_ops and not options.allow_float_fallback:
                out.unlink()
                raise ConversionError(
                    f"these operators cannot be quantized to INT8 and would stay in float: {', '.join(float_ops)}",
                    hint="give --allow-float-fallback to keep them in float (INT8-only accelerators will not run them)",
                )
            if float_ops:
                notes.append("operators left in float (--allow-float-fallback): " + ", ".join(float_ops))
        if mode == "dynamic" and tflite_models.describe(out)["precision"] == "fp32":
            notes.append("no weight tensor was large enough to quantize (TFLite's dynamic-range mode skips tensors under "
                         "1024 elements): the model stays float32")
        examples, _ = tf_models.example_specs(prepared.specs)
        return PassResult(
            output=ModelRef(out, Format.TFLITE),
            notes=notes,
            input_specs=examples,
            details={"mode": mode, "signature": prepared.signature, "int8_io": options.int8_io,
                     "float_ops": float_ops, "size_bytes": out.stat().st_size},
        )


def _mode(options: TFLiteQuantizeOptions) -> str:
    if options.mode not in MODES:
        raise InputError(f"unknown --mode '{options.mode}'", hint="choose dynamic, static or auto")
    mode = options.mode if options.mode != "auto" else ("static" if options.calib_data or options.calib_samples else "dynamic")
    if mode == "static" and not options.calib_data and not options.calib_samples:
        raise InputError("--mode static needs calibration data", hint="give --calib-data DATA.npz (arrays keyed by input name)")
    if mode == "dynamic" and (options.int8_io or options.calib_data or options.calib_samples):
        flag = "--int8-io" if options.int8_io else ("--calib-data" if options.calib_data else "--calib-samples")
        raise InputError(f"{flag} applies to --mode static only", hint="dynamic-range quantization keeps float inputs and needs no data")
    if options.calib_samples is not None and options.calib_samples <= 0:
        raise InputError("--calib-samples must be positive")
    return mode


def _calibration(path: Path, limit: int | None) -> dict[str, np.ndarray]:
    arrays = vinputs.load_arrays(path)
    arrays.pop("labels", None)
    if limit:
        arrays = {k: v[:limit] if v.ndim else v for k, v in arrays.items()}
    return arrays


def _random_calibration(specs: list[TensorSpec], n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = [vinputs.random_feed(specs, rng) for _ in range(n)]
    return {s.name: np.concatenate([f[s.name] for f in feeds]) for s in specs}


def _check_calibration(arrays: dict[str, np.ndarray], specs: list[TensorSpec], notes: list[str]) -> dict[str, np.ndarray]:
    """The same reading as validation data (vinputs.read_data: names, dtypes and shapes; the only array takes the only
    input's name when it fits, with a note), any number of samples on axis 0. The converter calibrates sample by
    sample, so the file must be a stack of samples."""
    try:
        reading = vinputs.read_data(arrays, [TensorSpec(s.name, ("n",) + tuple(s.shape[1:]), s.dtype) for s in specs])
    except InputError as exc:
        raise InputError(f"calibration {exc.message}", hint=exc.hint) from None
    if reading.samples is None:
        raise InputError(f"calibration data is not a stack of samples along axis 0 ({reading.not_samples})",
                         hint="TFLite calibrates sample by sample: give every array its samples along axis 0")
    notes.extend(f"calibration {note}" for note in reading.notes)
    return reading.arrays


def _samples(arrays: dict[str, np.ndarray], n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {name: value[i : i + 1] for name, value in arrays.items()}
