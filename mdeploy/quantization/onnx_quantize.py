"""INT8 quantization of ONNX models with onnxruntime.quantization, set up for speed on the CPU it runs on.

onnxruntime's quantizers called with their defaults often buy no speed on x86: signed 8-bit activations
(its static default) have no fast u8*s8 kernel path, and weights reaching MatMul through Transpose nodes
are never quantized. The defaults here are the ones that run fast: weights folded into initializers first,
unsigned 8-bit activations with signed weights on x86 (signed on ARM), QDQ format, per-channel weights for
static quantization, and 7-bit weights on x86 CPUs without VNNI (onnxruntime's own advice, against the
saturation of u8*s8 products there). Everything is measured by benchmarks/quantize_*.py.

`target="tensorrt"` writes the one form TensorRT 10/11 take instead (see quantization/tensorrt_rules.py): static QDQ,
symmetric int8 activations (zero point 0, per-tensor scales), per-channel symmetric int8 weights, full 8-bit range,
biases left in float (TensorRT refuses onnxruntime's int32 bias DequantizeLinear). The result is checked against
those rules before it is returned.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import onnx_models
from mdeploy.logs import framework_output
from mdeploy.quantization import calibration, onnx_prepare
from mdeploy.quantization.base import Pass, PassResult
from mdeploy.progress import ProgressFactory, no_progress
from mdeploy.validation import inputs as vinputs

MODES = ("auto", "dynamic", "static")
CALIB_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
SWITCH = ("auto", "on", "off")
TARGETS = ("cpu", "tensorrt")


@dataclass
class OnnxQuantizeOptions:
    mode: str = field(
        default="auto", metadata={"help": "auto | dynamic | static (auto: static with calibration data, else dynamic)"}
    )
    calib_data: str | None = field(
        default=None, metadata={"help": ".npz / .npy / folder of .npy keyed by input name, for static calibration"}
    )
    calib_method: str = field(default="minmax", metadata={"help": "minmax | entropy | percentile"})
    calib_samples: int | None = field(
        default=None, metadata={"help": "calibrate on N random samples (no real data: ranges will be wrong)"}
    )
    calib_batch: int = field(
        default=calibration.DEFAULT_BATCH, metadata={"help": "samples per calibration batch (a fixed model batch wins)"}
    )
    per_channel: str = field(
        default="auto", metadata={"help": "auto | on | off: per-channel weight scales (auto: on for static)"}
    )
    quant_format: str = field(default="qdq", metadata={"help": "qdq | qoperator"})
    activation_type: str = field(default="auto", metadata={"help": "auto | uint8 | int8 (auto: uint8 on x86, int8 on ARM)"})
    weight_type: str = field(default="int8", metadata={"help": "int8 | uint8"})
    reduce_range: str = field(
        default="auto", metadata={"help": "auto | on | off: 7-bit weights (auto: on for static on x86 without VNNI)"}
    )
    exclude: list[str] = field(default_factory=list, metadata={"help": "node names kept in float"})
    exclude_op: list[str] = field(default_factory=list, metadata={"help": "operator types kept in float"})
    op_types: list[str] = field(
        default_factory=list, metadata={"help": "quantize only these operator types (default: all supported)"}
    )
    skip_preprocess: bool = field(default=False, metadata={"help": "skip constant folding and shape inference before quantizing"})
    inputs: list[TensorSpec] = field(
        default_factory=list, metadata={"help": "NAME:SHAPE for random calibration of dynamic inputs"}
    )
    target: str = field(
        default="cpu",
        metadata={"help": "cpu | tensorrt (tensorrt: static QDQ, symmetric int8 activations and per-channel int8 weights)"},
    )


def _choice(value: str, allowed: Any, flag: str) -> str:
    if value not in allowed:
        raise InputError(f"unknown {flag} '{value}'", hint="choose " + " | ".join(allowed))
    return value


@dataclass
class Settings:
    """The options with every `auto` resolved, and why."""

    mode: str
    per_channel: bool
    reduce_range: bool
    activation_type: str
    notes: list[str]
    target: str = "cpu"


def resolve(options: OnnxQuantizeOptions) -> Settings:
    """Check the options and turn every `auto` into the fast choice for this CPU, saying which."""
    _choice(options.mode, MODES, "--mode")
    _choice(options.calib_method, CALIB_METHODS, "--calib-method")
    _choice(options.quant_format, FORMATS, "--quant-format")
    _choice(options.activation_type, ("auto", *TYPES), "--activation-type")
    _choice(options.weight_type, TYPES, "--weight-type")
    _choice(options.per_channel, SWITCH, "--per-channel")
    _choice(options.reduce_range, SWITCH, "--reduce-range")
    _choice(options.target, TARGETS, "--target")
    if options.target == "tensorrt":
        return _resolve_tensorrt(options)
    if options.calib_data and options.calib_samples:
        raise InputError("give --calib-data or --calib-samples, not both")
    if options.calib_samples is not None and options.calib_samples <= 0:
        raise InputError("--calib-samples must be a positive number of samples")
    if options.calib_batch <= 0:
        raise InputError("--calib-batch must be positive")
    notes = []
    mode = options.mode
    if mode == "auto":
        mode = "static" if options.calib_data or options.calib_samples else "dynamic"
        why = "calibration data given" if mode == "static" else "no calibration data given"
        notes.append(f"mode: {mode} ({why}; --mode auto)")
    if mode == "static" and not (options.calib_data or options.calib_samples):
        raise InputError(
            "static quantization needs calibration data",
            hint="give --calib-data x.npz with real inputs "
            "(or --calib-samples N to calibrate on random data, which is rarely accurate)",
        )
    if mode == "dynamic" and (options.calib_data or options.calib_samples):
        notes.append("dynamic quantization computes activation ranges at run time; the calibration data is used only to validate")
    per_channel = options.per_channel == "on" or (options.per_channel == "auto" and mode == "static")
    has_vnni, arm = onnx_prepare.cpu_has_vnni(), onnx_prepare.is_arm()
    # 7-bit weights for static quantization on x86 without VNNI (onnxruntime's advice for u8*s8 there); dynamic
    # quantization measured better without (benchmarks/quantize_transformer.py), so auto leaves it off there
    reduce_range = options.reduce_range == "on" or (
        options.reduce_range == "auto" and mode == "static" and not arm and not has_vnni
    )
    if options.reduce_range == "auto" and reduce_range:
        notes.append("weights use 7 bits (this x86 CPU has no VNNI: 8-bit products could saturate; --reduce-range off to change)")
    activation = options.activation_type
    if activation == "auto":
        activation = "int8" if arm else "uint8"
    if mode == "static" and activation == "int8" and not arm:
        notes.append("signed 8-bit activations have no fast kernels on x86: expect little or no speed-up (uint8 is faster)")
    return Settings(mode, per_channel, reduce_range, activation, notes)


def _resolve_tensorrt(options: OnnxQuantizeOptions) -> Settings:
    """TensorRT takes INT8 only from symmetric int8 Q/DQ with activation ranges from calibration: refuse the rest."""
    hint = "give --calib-data x.npz with real inputs (TensorRT's INT8 needs activation scales from calibration)"
    if options.mode == "dynamic":
        raise InputError(
            "--target tensorrt needs static quantization with calibration data: dynamic quantization has no Q/DQ form "
            "TensorRT accepts",
            hint=hint,
        )
    if not (options.calib_data or options.calib_samples):
        raise InputError("--target tensorrt needs static calibration data", hint=hint)
    refused = [
        (options.quant_format != "qdq", "--format qoperator", "TensorRT reads only QuantizeLinear/DequantizeLinear"),
        (options.activation_type == "uint8", "--activation-type uint8", "TensorRT takes int8 only"),
        (options.weight_type == "uint8", "--weight-type uint8", "TensorRT takes int8 only"),
    ]
    for bad, flag, why in refused:
        if bad:
            raise InputError(f"{flag} does not apply to --target tensorrt: {why}", hint="drop it; --target tensorrt sets it")
    notes = ["target tensorrt: static QDQ, symmetric int8 activations (zero point 0), symmetric int8 weights, float biases"]
    if options.mode == "auto":
        notes.append("mode: static (--target tensorrt)")
    per_channel = options.per_channel != "off"
    if not per_channel:
        notes.append("weights per tensor (--per-tensor): TensorRT takes them, per-channel usually keeps more accuracy")
    reduce_range = options.reduce_range == "on"
    return Settings("static", per_channel, reduce_range, "int8", notes, target="tensorrt")


class OnnxQuantize(Pass):
    verb: ClassVar[str] = "quantize"
    sources: ClassVar[tuple[Format, ...]] = (Format.ONNX,)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = OnnxQuantizeOptions
    name: ClassVar[str] = "onnxruntime.quantization"
    progress: ProgressFactory = staticmethod(no_progress)  # the API sets a bar
    producers: dict[str, tuple[str, str, list[str]]] = {}  # of the last model quantized: for the accuracy loop

    def run(self, src: ModelRef, out: Path, options: OnnxQuantizeOptions) -> PassResult:
        """Prepare, (calibrate,) quantize into `out`. Works in a private temp folder; `src` is never modified."""
        settings = resolve(options)
        with tempfile.TemporaryDirectory(prefix="mdeploy-quantize-") as work:
            start = time.perf_counter()
            prepared = onnx_prepare.prepare(src.path, Path(work), not options.skip_preprocess)
            self.producers = prepared.producers
            check_excludes(options.exclude, prepared, src.path)
            specs = _input_specs(prepared.path, options.inputs)
            notes = settings.notes + prepared.notes
            details: dict[str, Any] = {
                "mode": settings.mode,
                "target": settings.target,
                "per_channel": settings.per_channel,
                "reduce_range": settings.reduce_range,
                "weight_type": options.weight_type,
                "exclude": list(options.exclude),
                "exclude_op": list(options.exclude_op),
                "preprocess_seconds": round(time.perf_counter() - start, 3),
            }
            if settings.mode == "dynamic":
                self._dynamic(prepared, out, options, settings)
            else:
                details.update(
                    activation_type=settings.activation_type, format=options.quant_format, calib_method=options.calib_method
                )
                details.update(self._static(prepared, out, options, settings, specs, notes))
        return PassResult(ModelRef(out, Format.ONNX), notes=notes, input_specs=specs, details=details)

    def _common(self, prepared: onnx_prepare.Prepared, options: OnnxQuantizeOptions, settings: Settings) -> dict[str, Any]:
        q = require("onnxruntime.quantization", extra="onnx")
        excluded = list(options.exclude)
        if options.exclude_op:
            excluded += [name for name, op in prepared.op_types.items() if op in options.exclude_op]
        excluded_nodes = set(excluded) & prepared.node_names
        if settings.mode == "dynamic":
            # quantize_dynamic rewrites Gemm as MatMul+Add first, naming the MatMul `<gemm>_MatMul`: exclude that too
            excluded_nodes |= {f"{n}_MatMul" for n in excluded_nodes if prepared.op_types.get(n) == "Gemm"}
        return {
            "per_channel": settings.per_channel,
            "reduce_range": settings.reduce_range,
            "weight_type": getattr(q.QuantType, TYPES[options.weight_type]),
            "nodes_to_exclude": sorted(excluded_nodes) or None,
            "op_types_to_quantize": list(options.op_types) or None,
            "use_external_data_format": prepared.large,
        }

    def _dynamic(self, prepared: onnx_prepare.Prepared, out: Path, options: OnnxQuantizeOptions, settings: Settings) -> None:
        q = require("onnxruntime.quantization", extra="onnx")
        kwargs = self._common(prepared, options, settings)
        try:
            with framework_output(), shapes_in_place():
                q.quantize_dynamic(str(prepared.path), str(out), extra_options={"MatMulConstBOnly": True}, **kwargs)
        except Exception as exc:
            raise ConversionError(f"onnxruntime's quantize_dynamic failed: {first_line(exc)}") from None

    def _static(
        self,
        prepared: onnx_prepare.Prepared,
        out: Path,
        options: OnnxQuantizeOptions,
        settings: Settings,
        specs: list[TensorSpec],
        notes: list[str],
    ) -> dict[str, Any]:
        q = require("onnxruntime.quantization", extra="onnx")
        if options.calib_data:
            arrays = vinputs.load_arrays(Path(options.calib_data), mmap=True)
            feeds = calibration.batches_from_data(arrays, specs, options.calib_batch, flag="--calib-data")
            notes.extend(feeds.notes)
            total: int | None = len(feeds)
            source = options.calib_data
        else:
            assert options.calib_samples
            notes.append(
                f"WARNING: calibrated on {options.calib_samples} RANDOM samples, not real data: activation ranges "
                "may not fit real inputs and accuracy can collapse; give --calib-data with real inputs"
            )
            feeds = calibration.random_batches(specs, options.calib_samples, options.calib_batch)
            fb = calibration.fixed_batch(specs) or options.calib_batch
            total = -(-options.calib_samples // fb)
            source = f"{options.calib_samples} random samples"
        if calibration.fixed_batch(specs):
            notes.append(f"the model has a fixed batch of {calibration.fixed_batch(specs)}: calibrated in slices of that size")
        if options.calib_method != "minmax":
            notes.append(
                f"{options.calib_method} calibration keeps every batch's activations in memory (onnxruntime's histogram "
                "calibrators do); minmax streams"
            )
        kwargs = self._common(prepared, options, settings)
        # minmax keeps only per-batch ReduceMin/ReduceMax results, so memory stays small without help. Its
        # CalibMaxIntermediateOutputs option is not used: in onnxruntime 1.31 it drops the ranges it clears.
        extra: dict[str, Any] = {}
        if settings.target == "tensorrt":
            extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
        with self.progress("calibrating", total) as advance:
            reader = calibration.reader_class()(feeds, advance)
            try:
                with calibration.quiet_calibration():
                    q.quantize_static(
                        str(prepared.path),
                        str(out),
                        reader,
                        quant_format=getattr(q.QuantFormat, FORMATS[options.quant_format]),
                        activation_type=getattr(q.QuantType, TYPES[settings.activation_type]),
                        calibrate_method=getattr(q.CalibrationMethod, CALIB_METHODS[options.calib_method]),
                        extra_options=extra,
                        **kwargs,
                    )
            except InputError:
                raise
            except Exception as exc:
                if reader.batches == 0:
                    raise InputError("the calibration set is empty (0 samples)") from None
                raise ConversionError(f"onnxruntime's quantize_static failed: {first_line(exc)}") from None
        if settings.target == "tensorrt":
            _check_tensorrt_form(out)
        return {"calibration": {"source": source, "batches": reader.batches, "samples": reader.samples}}


@contextlib.contextmanager
def shapes_in_place() -> Iterator[None]:
    """onnxruntime's quantizer, for the duration, re-infers shapes in the model it holds instead of in a copy of it.

    In dynamic mode `ONNXQuantizer.__init__` rewrites Gemm as MatMul and then calls
    `quant_utils.save_and_reload_model_with_shape_infer` for the new shapes: a deep copy of the model with all its
    weights, saved and read back, while `quantize_dynamic` still holds the model it loaded. Three copies of the weights
    at the peak, two until the end (4.2x the float weight bytes on a 0.7B Llama, benchmarks/large_model.py). The
    function that name refers to in onnxruntime's quantizer module is swapped for `onnx_prepare.infer_shapes_in_place`,
    the same ONNX shape inference on the graph without its weights written into the model itself; the rest of the
    quantizer runs as it is. An onnxruntime without that name is left alone."""
    from onnxruntime.quantization import onnx_quantizer

    original = getattr(onnx_quantizer, "save_and_reload_model_with_shape_infer", None)
    if original is None:
        yield
        return
    onnx_quantizer.save_and_reload_model_with_shape_infer = onnx_prepare.infer_shapes_in_place
    try:
        yield
    finally:
        onnx_quantizer.save_and_reload_model_with_shape_infer = original


def _check_tensorrt_form(out: Path) -> None:
    """What onnxruntime wrote must pass the same pre-flight the TensorRT converter runs: never hand on a model it refuses."""
    from mdeploy.quantization import tensorrt_rules

    problems = tensorrt_rules.check_qdq(out)
    if problems:
        raise ConversionError(
            f"onnxruntime wrote Q/DQ nodes TensorRT refuses: {' | '.join(problems[:3])}"
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
            hint="report this with the model; --exclude the named nodes to keep them in float meanwhile",
        )


def check_excludes(names: list[str], prepared: onnx_prepare.Prepared, src: Path) -> None:
    """Every `--exclude` must name a node; one removed by pre-processing (fused away) is an error too."""
    unknown = [n for n in names if n not in prepared.node_names]
    if not unknown:
        return
    original = {n.name for n in onnx_models.load_proto(src).graph.node}
    fused = [n for n in unknown if n in original]
    if fused and len(fused) == len(unknown):
        raise InputError(
            f"--exclude {', '.join(fused)}: fused away by pre-processing",
            hint="exclude the node it was fused into, or give --no-preprocess",
        )
    sample = sorted(prepared.node_names)[:8]
    raise InputError(
        f"--exclude names no node of {src.name}: {', '.join(n for n in unknown if n not in fused)}",
        hint="node names include: "
        + ", ".join(sample)
        + (" ..." if len(prepared.node_names) > 8 else "")
        + " (see mdeploy inspect)",
    )


def _input_specs(path: Path, overrides: list[TensorSpec]) -> list[TensorSpec]:
    specs = onnx_models.graph_inputs(onnx_models.load_proto(path))
    given = {s.name: s for s in overrides}
    unknown = sorted(set(given) - {s.name for s in specs})
    if unknown:
        raise InputError(
            f"--input names {', '.join(unknown)}, which is not an input of the model",
            hint="inputs are: " + ", ".join(s.name for s in specs),
        )
    return [TensorSpec(s.name, given[s.name].shape, s.dtype, s.value_range) if s.name in given else s for s in specs]
