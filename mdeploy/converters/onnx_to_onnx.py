"""ONNX -> ONNX at another ai.onnx opset, with onnx's own version converter (`onnx.version_converter`); or, with
`--precision fp16`, to float16 with the nodes that overflow it kept float32 (converters/float16.py).

Why it exists: a model written at an opset newer than the installed onnxruntime reads cannot run here, and the
error that says so tells the user to run `mdeploy convert MODEL.onnx -o OUT.onnx --opset N`. The version converter
rewrites each node through the opset adapters onnx ships (down or up), so the graph keeps computing the same thing
at the opset the runtime knows; where onnx has no adapter for an op, the conversion fails with one line that names
the op and the opsets.

The IR version is the file format's revision, and runtimes refuse versions newer than theirs. The result gets the
highest IR version that onnx releases writing the target opset used (onnx.helper.VERSION_TABLE) and that this
onnxruntime reads: what an exporter at that opset would have written, so older runtimes read it too.

Weights stay where they were: a model with external data is converted with its large tensors left on disk (the
adapters only read small constant inputs such as axes and shapes), then written with its data in one file beside
the result, so a model above protobuf's 2 GB limit converts as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import onnx_models, ort_sessions

# External tensors up to this size are read before converting: adapters may need their values (axes, shapes, pads)
_SMALL_EXTERNAL_BYTES = 1 << 20
_NO_ADAPTER_FROM = re.compile(r"No Adapter From Version \$?(\d+) for (\w+)")
_NO_ADAPTER_TO = re.compile(r"No Adapter To Version \$?(\d+) for (\w+)")
_NO_ADAPTER_FOR = re.compile(r"No Adapter For (\w+)")
_NO_SCHEMA = re.compile(r"Op '(\w+)' has no registered schema")
_ASSERTION = re.compile(r"^.*?Assertion `[^`]*` failed:\s*")  # the C++ check that failed, before what it means
_NO_PREVIOUS = re.compile(r"No Previous Version of (\w+) exists")


@dataclass
class OnnxToOnnxOptions:
    opset: int | None = field(
        default=None,
        metadata={"help": "the ai.onnx opset to move the model to, older or newer"},
    )
    precision: str | None = field(default=None, metadata={"help": "fp16: float16 weights and activations, the nodes "
                                                                   "that overflow float16 kept float32 (converters/float16.py)"})
    calib_data: str | None = field(default=None, metadata={"help": "fp16: inputs to measure activation ranges on"})
    keep_fp32: list[str] = field(default_factory=list, metadata={"help": "fp16: operator type or node name kept float32"})


class OnnxToOnnx(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.ONNX,)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = OnnxToOnnxOptions
    name: ClassVar[str] = "onnx.version_converter"

    def convert(self, src: ModelRef, out: Path, options: OnnxToOnnxOptions) -> ConversionResult:
        if options.precision not in (None, "fp32") or options.calib_data or options.keep_fp32:
            return _to_float16(src, out, options)
        onnx = require("onnx", extra="onnx")
        model = onnx_models.load_proto(src.path)  # external data paths checked, weights not read
        source_opset = default_opset(model)
        if options.opset is None:
            raise InputError(
                "converting ONNX to ONNX moves the model to another opset, and --opset was not given",
                hint=f"give --opset N: {src.name} imports ai.onnx opset {source_opset}, and onnxruntime "
                f"{ort_sessions.runtime_version()} reads opsets up to {runtime_opset()} (or --precision fp16 for a "
                "float16 model)",
            )
        target = options.opset
        newest = onnx.defs.onnx_opset_version()
        if not 1 <= target <= newest:
            raise InputError(f"--opset {target}: onnx {onnx.__version__} defines ai.onnx opsets 1 to {newest}")
        if source_opset is None:
            raise ConversionError(f"{src.name} imports no ai.onnx opset: there is nothing for --opset to convert")
        if source_opset > newest:
            raise ConversionError(
                f"{src.name} imports ai.onnx opset {source_opset}, which onnx {onnx.__version__} does not define (1 to {newest})",
                hint="an opset beyond onnx's newest was probably written by hand; re-export the model from its source",
            )
        folder = src.path.resolve().parent
        external = onnx_models.external_data_files(model)
        _read_small_external(model, folder)
        converted = _convert_version(model, source_opset, target, src.name)
        ir_before = model.ir_version
        converted.ir_version = ir_version_for(converted)
        if external:  # the tensors still on disk are read from the source's data files and written beside the result
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(converted, str(folder))
            onnx.save_model(converted, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=out.name + ".data", size_threshold=1024)
        else:
            onnx.save(converted, str(out))
        del converted
        try:
            onnx.checker.check_model(str(out))  # given the path, the checker reads external data and models over 2 GB
        except Exception as exc:
            raise ConversionError(
                f"the model converted to opset {target} fails onnx.checker: {first_line(exc)}",
                hint=f"onnx {onnx.__version__}'s version converter produced it; "
                f"re-export the model from its source at opset {target}",
            ) from None
        result = onnx_models.load_proto(out)
        examples, dynamic = example_specs(onnx_models.graph_inputs(result))
        notes = [
            f"ai.onnx opset {source_opset} -> {target} with onnx {onnx.__version__}'s version converter; "
            f"IR version {ir_before} -> {result.ir_version}"
        ]
        if target > runtime_opset():
            notes.append(f"onnxruntime {ort_sessions.runtime_version()} reads ai.onnx opsets up to {runtime_opset()}: "
                         f"the result (opset {target}) cannot run here")
        return ConversionResult(
            output=ModelRef(out, Format.ONNX),
            notes=notes,
            input_specs=examples,
            dynamic_axes=dynamic,
            details={"opset": {"from": source_opset, "to": target}, "ir_version": {"from": ir_before, "to": result.ir_version},
                     "external_data": onnx_models.external_data_files(result)},
        )


def _to_float16(src: ModelRef, out: Path, options: OnnxToOnnxOptions) -> ConversionResult:
    """`--precision fp16`: the float16 model (float32 inputs and outputs), its overflowing nodes kept float32."""
    from mdeploy.converters import float16

    if options.precision != "fp16":
        flags = "--calib-data and --keep-fp32 apply" if options.precision in (None, "fp32") else (
            f"--precision {options.precision} does not apply: ONNX -> ONNX converts to fp16 only")
        raise InputError(f"{flags}" + (" to --precision fp16 only" if options.precision in (None, "fp32") else ""),
                         hint="int8 / int4: mdeploy quantize MODEL.onnx -o OUT.onnx" if options.precision not in
                         (None, "fp32") else "add --precision fp16")
    if options.opset is not None:
        raise InputError("--opset and --precision fp16 are two conversions", hint="run them one after the other")
    examples, dynamic = example_specs(onnx_models.graph_inputs(onnx_models.load_proto(src.path)))
    if options.calib_data:  # the data's own batches, checked against the model's declared inputs
        feeds, measured_on = float16.measuring_feeds(onnx_models.graph_inputs(onnx_models.load_proto(src.path)),
                                                     options.calib_data)
    else:  # random inputs at the shapes validation feeds
        feeds, measured_on = float16.measuring_feeds(examples, None)
    made = float16.convert_to_float16(src.path, out, feeds, measured_on, options.keep_fp32)
    return ConversionResult(output=ModelRef(out, Format.ONNX), notes=made.notes, input_specs=examples,
                            dynamic_axes=dynamic, details=made.details())


def default_opset(model: Any) -> int | None:
    """The model's ai.onnx opset (the only domain the version converter moves), or None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def runtime_opset() -> int:
    """The newest ai.onnx opset this onnxruntime reads, at most onnx's newest (a few one-node probes, cached)."""
    onnx = require("onnx", extra="onnx")
    return next((v for v in range(onnx.defs.onnx_opset_version(), 0, -1) if ort_sessions.reads_opset("ai.onnx", v)), 0)


def ir_version_for(model: Any) -> int:
    """The highest IR version that onnx releases writing this opset used and this onnxruntime reads; never below what
    the model's opset imports require (then this runtime cannot read the result anyway)."""
    helper = require("onnx", extra="onnx").helper
    opset = default_opset(model)
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    written = [ir for _, ir, release_opset, *_ in helper.VERSION_TABLE if release_opset == opset]
    readable = [ir for ir in written if ir <= ort_sessions.max_ir_version()]
    chosen = max(readable) if readable else min(written, default=needed)
    return max(chosen, needed)


def example_specs(specs: list[TensorSpec]) -> tuple[list[TensorSpec], dict[str, list[tuple[str, int]]]]:
    """Concrete shapes to validate with (a dynamic dim: 1 on axis 0, else 16; inputs sharing a dim name share its
    size) and the dynamic axes, which validation runs again at a second size."""
    sizes: dict[str, int] = {}
    dynamic: dict[str, list[tuple[str, int]]] = {}
    examples = []
    for spec in specs:
        shape = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
                continue
            name = dim if isinstance(dim, str) and dim != "?" else f"{spec.name}:{axis}"
            shape.append(sizes.setdefault(name, 1 if axis == 0 else 16))
            dynamic.setdefault(name, []).append((spec.name, axis))
        examples.append(TensorSpec(spec.name, tuple(shape), spec.dtype, spec.value_range))
    return examples, dynamic


def _read_small_external(model: Any, folder: Path) -> None:
    """Read external tensors small enough to be constants an adapter may need; large weights stay on disk."""
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor, uses_external_data

    for tensor in onnx_models._all_initializers(model):
        if uses_external_data(tensor):
            length = ExternalDataInfo(tensor).length
            if length is None or length <= _SMALL_EXTERNAL_BYTES:
                load_external_data_for_tensor(tensor, str(folder))
                tensor.data_location = 0  # DEFAULT: the values are in the tensor now
                del tensor.external_data[:]


def _convert_version(model: Any, source: int, target: int, name: str) -> Any:
    """onnx.version_converter.convert_version, its failure as one line naming the op and the opsets."""
    onnx = require("onnx", extra="onnx")
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, target)
    except Exception as exc:
        where = f"cannot convert {name} from ai.onnx opset {source} to {target}"
        op, bound = _failed_step(str(exc), source, target, onnx)
        if op is None:  # an adapter refused this model's use of an op: its message, with the op's nodes when it names one
            said = _ASSERTION.sub("", first_line(exc)).rstrip(".")
            named = sorted({n.op_type for n in onnx_models._all_nodes(model.graph)} & set(re.findall(r"\w+", said)))
            op = named[0] if named else _culprit(model, target)
            at = f" at {op}{_nodes(model, op)}" if op else ""
            raise ConversionError(f"{where}{at}: {said}", hint=f"re-export the model from its source at opset {target}") from None
        down = target < source
        what = f"{op}{_nodes(model, op)}"
        if bound is None:
            reason = f"onnx {onnx.__version__}'s version converter has no adapter for {what}"
            hint = f"re-export the model from its source at opset {target}"
        elif down:
            reason = f"onnx {onnx.__version__}'s version converter cannot take {what} below opset {bound}"
            hint = f"choose --opset {bound} or newer, or re-export the model from its source at opset {target}"
        else:
            reason = f"onnx {onnx.__version__}'s version converter cannot take {what} above opset {bound}"
            hint = f"choose --opset {bound} or older, or re-export the model from its source at opset {target}"
        raise ConversionError(f"{where}: {reason}", hint=hint) from None


def _failed_step(text: str, source: int, target: int, onnx: Any) -> tuple[str | None, int | None]:
    """The op the converter stopped at, and the last opset it can reach in that direction (None: unknown).

    The converter walks one opset at a time; at each step an op whose version changes there needs an adapter
    from its version at one opset to the next (`No Adapter From/To Version $N for Op`), and an op that did not
    exist yet has none (`No Previous Version of Op`).
    """
    down = target < source
    if match := _NO_PREVIOUS.search(text):
        return match[1], _since_version(onnx, match[1], source)
    if match := _NO_ADAPTER_FROM.search(text):  # the step leaving opset N
        return match[2], int(match[1])
    if match := _NO_ADAPTER_TO.search(text):  # the step arriving at opset N
        return match[2], int(match[1]) + (1 if down else -1)
    if match := _NO_ADAPTER_FOR.search(text) or _NO_SCHEMA.search(text):
        return match[1], None
    return None, None


def _culprit(model: Any, target: int) -> str | None:
    """The op the converter stopped at when its message does not name it: the first op type whose nodes (with the
    model's constants, initializers and known value types) fail to convert on their own."""
    require("onnx", extra="onnx")
    from onnx import helper, version_converter

    nodes = list(model.graph.node)
    constants = [n for n in nodes if n.op_type == "Constant"]
    inits = {i.name: i for i in model.graph.initializer}
    known = {v.name: v for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    for op in dict.fromkeys(n.op_type for n in nodes if n.domain in ("", "ai.onnx") and n.op_type != "Constant"):
        chosen = [n for n in nodes if n.op_type == op]
        made = {o for n in constants + chosen for o in n.output}
        needed = list(dict.fromkeys(i for n in chosen for i in n.input if i and i not in made))
        graph = helper.make_graph(
            constants + chosen, "probe",
            [known.get(i) or helper.make_empty_tensor_value_info(i) for i in needed if i not in inits],
            [known.get(o) or helper.make_empty_tensor_value_info(o) for n in chosen for o in n.output if o],
            [inits[i] for i in needed if i in inits],
        )
        probe = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        try:
            version_converter.convert_version(probe, target)
        except Exception:
            return op
    return None


def _since_version(onnx: Any, op: str, opset: int) -> int | None:
    """The opset that introduced `op` (its oldest schema up to `opset`), or None when onnx does not know it."""
    try:
        schema = onnx.defs.get_schema(op, opset)
    except Exception:
        return None
    while True:
        try:
            schema = onnx.defs.get_schema(op, schema.since_version - 1)
        except Exception:
            return schema.since_version


def _nodes(model: Any, op: str) -> str:
    """' (node conv1)' / ' (nodes a, b and 3 more)': which nodes of the model the failure is about."""
    nodes = onnx_models._all_nodes(model.graph)
    names = [n.name or n.output[0] for n in nodes if n.op_type == op and n.domain in ("", "ai.onnx")]
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" (node{'s' if len(names) > 1 else ''} {shown})"
