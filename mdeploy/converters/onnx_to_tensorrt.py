"""ONNX -> TensorRT engine (`.engine` / `.plan`), for TensorRT 10.x and 11.x.

Why it is built this way: TensorRT 11 networks are always strongly typed (the FP16/INT8 builder flags and the INT8
calibrators are gone), so precision is a property of the ONNX model, not of the build: fp16 builds from a float16
ONNX model (converters/float16.py, the nodes that overflow float16 kept float32; validated on CPU first), int8 from a model that already carries symmetric Q/DQ
(`mdeploy quantize --target tensorrt`, checked by quantization.tensorrt_rules). On 10.x the network is created with the
STRONGLY_TYPED flag, so the same model gives the same engine types on both.

Order: every check that needs no GPU runs first (the model loads, `--shapes` fits its inputs, every dynamic axis has a
range, an int8 model's Q/DQ passes TensorRT's rules, the fp16 model matches the fp32 one), so a CPU machine reports
input problems as such; only then the environment (tensorrt importable, a CUDA device), then the build. The engine
and its JSON sidecar are written into convert's staging folder and moved into place together (outputs.companions).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import onnx_models, tensorrt_env
from mdeploy.converters.tensorrt_profiles import Profile, derive_profiles, validation_specs

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass
class OnnxToTensorRTOptions:
    inputs: list[TensorSpec] = field(default_factory=list, metadata={"help": "--input NAME:SHAPE: one fixed shape for an input"})
    dynamic: list[tuple[str, int, str]] = field(default_factory=list,
                                                metadata={"help": "--dynamic NAME:AXIS: an axis that needs a --shapes range"})
    shapes: list[str] = field(default_factory=list, metadata={"help": "NAME:MIN:OPT:MAX optimization profile range"})
    precision: str = field(default="fp32", metadata={"help": "fp32 | fp16 (float16 ONNX first) | int8 (the model's Q/DQ)"})
    keep_fp32: list[str] = field(default_factory=list, metadata={"help": "fp16: operator type or node name kept float32"})
    calib_data: str | None = field(default=None, metadata={"help": "fp16: inputs to measure activation ranges on"})
    workspace: str | None = field(default=None, metadata={"help": "builder workspace limit, e.g. 2G or 512M"})
    timing_cache: str | None = field(default=None, metadata={"help": "timing cache file: read when it exists, saved after"})
    version_compatible: bool = field(default=False, metadata={"help": "engine also runs on later TensorRT versions"})
    hardware_compatibility: str | None = field(default=None, metadata={"help": "none | ampere+ | same-cc"})
    builder_optimization_level: int | None = field(default=None, metadata={"help": "0-5 (TensorRT's default 3)"})
    refittable: bool = field(default=False, metadata={"help": "weights can be refitted without a rebuild"})


class OnnxToTensorRT(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.ONNX,)
    target: ClassVar[Format] = Format.TENSORRT
    Options: ClassVar[type] = OnnxToTensorRTOptions
    name: ClassVar[str] = "tensorrt"

    @classmethod
    def available(cls) -> str | None:
        """None when tensorrt can be imported; else why this converter cannot build here (for `mdeploy plugins`)."""
        return tensorrt_env.unavailable_reason()

    def convert(self, src: ModelRef, out: Path, options: OnnxToTensorRTOptions) -> ConversionResult:
        o = options
        plan = check_inputs(src.path, o)
        notes = [f"profile: {p.text()}" for p in plan["profiles"]]
        if plan["qdq"] and o.precision != "int8":
            notes.append("the model carries Q/DQ nodes: its quantized parts are int8 in the engine whatever --precision says")
        model_path = src.path
        details: dict[str, Any] = {"profiles": [p.as_dict() for p in plan["profiles"]], "precision": o.precision}
        if o.precision == "fp16":
            made, comparison = float16_model(src.path, out.with_name(out.stem + ".fp16.onnx"), plan["profiles"],
                                             keep_fp32=o.keep_fp32, calib_data=o.calib_data)
            model_path = made.path
            notes.extend(made.notes)
            notes.append(f"float16 ONNX validated on CPU: {comparison.tolerance.describe()}")
            details["fp16_validation"] = comparison.to_dict()
            details["kept_fp32"] = made.kept_fp32
        trt, torch = tensorrt_env.require_gpu()
        start = time.perf_counter()
        engine_bytes, io, cache_note = build_engine(trt, model_path, plan, o)
        notes.extend(cache_note)
        device = tensorrt_env.gpu(torch)
        out.write_bytes(engine_bytes)
        record = {
            "tensorrt_version": trt.__version__,
            "gpu": device,
            "source": src.name,
            "flags": {"precision": o.precision, "strongly_typed": True, "version_compatible": o.version_compatible,
                      "hardware_compatibility": o.hardware_compatibility or "none", "refittable": o.refittable,
                      "builder_optimization_level": o.builder_optimization_level, "workspace_bytes": plan["workspace"]},
            "profiles": details["profiles"],
            **io,
        }
        tensorrt_env.write_sidecar(out, record)
        notes.append(f"TensorRT {trt.__version__} on {device['name']} (compute capability {device['compute_capability']}) "
                     f"in {time.perf_counter() - start:.1f}s")
        specs, dynamic = validation_specs(plan["specs"], plan["profiles"])  # convert validates inside the profile
        return ConversionResult(ModelRef(out, Format.TENSORRT), notes=notes, input_specs=specs, dynamic_axes=dynamic,
                                details={**details, "sidecar": record})


def float16_model(src: Path, dst: Path, profiles: list[Profile], seed: int = 0, keep_fp32: list[str] | None = None,
                  calib_data: str | None = None) -> tuple[Any, Any]:
    """The float16 ONNX model the engine is built from (converters/float16.py: nodes that overflow float16 at the
    profiles' OPT shapes stay float32), proven on onnxruntime (CPU) there against the float32 model before any GPU is
    involved: (Float16Model, Comparison); a ConversionError when it does not compute what the float32 one does."""
    import numpy as np

    from mdeploy.converters import float16
    from mdeploy.validation import inputs as vinputs

    opt = {p.name: p.opt for p in profiles}
    specs = [TensorSpec(s.name, opt.get(s.name, s.shape), s.dtype, s.value_range)
             for s in onnx_models.graph_inputs(onnx_models.load_proto(src))]
    feeds = [vinputs.random_feed(specs, np.random.default_rng(seed))]
    measure, measured_on = (float16.measuring_feeds(onnx_models.graph_inputs(onnx_models.load_proto(src)), calib_data)
                            if calib_data else (feeds, "random inputs at the profiles' OPT shapes"))
    made = float16.convert_to_float16(src, dst, measure, measured_on, keep_fp32 or ())
    comparison = float16.compare_float16(src, dst, feeds, "float16 ONNX vs float32 ONNX (onnxruntime, CPU)")
    if not comparison:
        worst = "; ".join(f"{o.name}: max abs error {o.max_abs_error:.3g}, cosine {o.cosine:.4f}"
                          for o in comparison.failures()[:3]) or "; ".join(comparison.notes[:2])
        raise ConversionError(f"the float16 ONNX model of {src.name} does not compute what the float32 one does "
                              f"(fp16 tolerance, onnxruntime on CPU): {worst}",
                              hint="keep the nodes that lose it in float32 (convert to .onnx with --precision fp16 "
                              "--keep-fp32 NODE first), build with --precision fp32, or quantize with mdeploy quantize "
                              "--target tensorrt")
    return made, comparison


def parse_size(text: str | None) -> int | None:
    """`2G`, `512M`, `1.5GiB`, `1048576` -> bytes (binary units)."""
    if text is None:
        return None
    match = _SIZE.match(str(text))
    if not match:
        raise InputError(f"cannot read --workspace '{text}'", hint="a size such as 2G, 512M or a number of bytes")
    size = float(match[1]) * 1024 ** " kmgt".index((match[2] or " ").lower())
    if size < 1:
        raise InputError(f"--workspace '{text}' is not a size above 0")
    return int(size)


def check_inputs(path: Path, o: OnnxToTensorRTOptions) -> dict[str, Any]:
    """Every check that needs no GPU: the model loads, the profiles derive, the options hold, an int8 model's Q/DQ
    follows TensorRT's rules. Returns what the build needs (specs, profiles, workspace)."""
    model = onnx_models.load_proto(path)  # ModelLoadError for a corrupt file; weights are not read
    specs = onnx_models.graph_inputs(model)
    profiles = derive_profiles(specs, o.shapes, o.inputs, o.dynamic)
    if o.precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"--precision {o.precision}: a TensorRT engine is built as fp32, fp16 or int8")
    if o.hardware_compatibility not in (None, *tensorrt_env.HARDWARE_LEVELS):
        raise InputError(f"--hardware-compatibility {o.hardware_compatibility}: choose none, ampere+ or same-cc")
    if o.builder_optimization_level is not None and not 0 <= o.builder_optimization_level <= 5:
        raise InputError(f"--builder-optimization-level {o.builder_optimization_level}: TensorRT's levels are 0 to 5")
    if o.timing_cache:
        cache = Path(o.timing_cache)
        if cache.is_dir() or not (cache.parent if str(cache.parent) else Path(".")).is_dir():
            raise InputError(f"--timing-cache {cache}: not a file path in an existing folder")
    workspace = parse_size(o.workspace)
    ops = {n.op_type for n in onnx_models._all_nodes(model.graph)}
    del model
    if o.precision == "int8":
        integer_ops = sorted(op for op in ops if op in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")
                             or op.startswith("QLinear"))
        if not ops & _QDQ_OPS:
            what = (f"is quantized for onnxruntime ({', '.join(integer_ops)}), not with Q/DQ nodes," if integer_ops
                    else "is a float model")
            raise InputError(
                f"{path.name} {what} and --precision int8 builds from the model's Q/DQ nodes (TensorRT 11 has no "
                "INT8 calibrator; mdeploy builds strongly typed networks on 10.x too)",
                hint=(f"quantize the float model it came from: mdeploy quantize FLOAT.onnx -o {path.stem}.qdq.onnx "
                      "--target tensorrt, then convert that") if integer_ops else
                f"quantize it first: mdeploy quantize {path} -o {path.stem}.qdq.onnx --target tensorrt, then convert that",
            )
    if ops & _QDQ_OPS:  # a Q/DQ model is int8 whatever --precision says: it must follow TensorRT's rules
        if o.precision == "fp16":
            raise InputError(f"{path.name} carries Q/DQ nodes and --precision fp16 would convert it to float16 first",
                             hint="build a Q/DQ model with --precision int8 (its Q/DQ nodes set the int8 parts)")
        from mdeploy.quantization.tensorrt_rules import require_trt_qdq

        require_trt_qdq(path)
    return {"specs": specs, "profiles": profiles, "workspace": workspace, "qdq": bool(ops & _QDQ_OPS)}


def _network(trt: Any, builder: Any) -> Any:
    """A strongly typed network: the flag on 10.x; on 11.x every network is (the flag is ignored or gone)."""
    major = int(str(trt.__version__).split(".")[0])
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major < 11 and flag is not None:
        return builder.create_network(1 << int(flag))
    return builder.create_network(0)


def _member(trt: Any, enum: str, name: str, flag: str) -> Any:
    """trt.<enum>.<name>, or an InputError when this TensorRT release does not have it (SAME_COMPUTE_CAPABILITY is
    newer than 10.0)."""
    value = getattr(getattr(trt, enum, None), name, None)
    if value is None:
        raise InputError(f"{flag}: TensorRT {trt.__version__} has no {enum}.{name}",
                         hint="leave the option out or update TensorRT")
    return value


def parser_errors(parser: Any) -> str:
    """Every parser error as `node NAME (OP): description`, joined for one error line."""
    parts = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = error.node_name() or (f"#{error.node()}" if error.node() >= 0 else "")
        op = error.node_operator()
        where = f"node {node} ({op}): " if node or op else ""
        parts.append(where + error.desc())
    return " | ".join(parts) or "the parser gave no reason"


def build_engine(trt: Any, model: Path, plan: dict[str, Any], o: OnnxToTensorRTOptions) -> tuple[bytes, dict, list[str]]:
    """Parse the ONNX file, configure the builder, build; the serialized engine, its I/O and notes."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):  # from the file: external data beside it loads too
        raise ConversionError(f"TensorRT's ONNX parser refused {model.name}: {parser_errors(parser)}",
                              hint="the ONNX operators TensorRT supports are listed in onnx-tensorrt's operators.md; "
                              "re-export the model at another opset or without the unsupported op")
    config = builder.create_builder_config()
    if plan["workspace"]:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace"])
    profile = builder.create_optimization_profile()
    for p in plan["profiles"]:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    if o.version_compatible:
        config.set_flag(_member(trt, "BuilderFlag", "VERSION_COMPATIBLE", "--version-compatible"))
    if o.refittable:
        config.set_flag(_member(trt, "BuilderFlag", "REFIT", "--refittable"))
    if o.hardware_compatibility:
        config.hardware_compatibility_level = _member(trt, "HardwareCompatibilityLevel",
                                                      tensorrt_env.HARDWARE_LEVELS[o.hardware_compatibility],
                                                      f"--hardware-compatibility {o.hardware_compatibility}")
    if o.builder_optimization_level is not None:
        config.builder_optimization_level = o.builder_optimization_level
    notes = []
    cache_path = Path(o.timing_cache) if o.timing_cache else None
    if cache_path is not None:
        existing = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(existing)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            raise InputError(f"--timing-cache {cache_path} was written by another TensorRT version or GPU",
                             hint="delete it or give another path")
        notes.append(f"timing cache {cache_path} {'reused' if existing else 'created'}")
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as exc:
        raise ConversionError(f"TensorRT failed to build {model.name}: {first_line(exc)}") from None
    if serialized is None:
        raise ConversionError(f"TensorRT failed to build an engine from {model.name} (build_serialized_network gave none)",
                              hint="run again with --verbose for TensorRT's log; a larger --workspace or another "
                              "--builder-optimization-level may help")
    if cache_path is not None:
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    io = {"inputs": [], "outputs": []}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io["inputs"].append({"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1].lower()})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io["outputs"].append({"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1].lower()})
    return bytes(memoryview(serialized)), io, notes


__all__ = ["OnnxToTensorRT", "OnnxToTensorRTOptions", "Profile", "check_inputs", "parse_size", "parser_errors"]
