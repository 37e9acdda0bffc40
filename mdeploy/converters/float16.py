"""A float16 ONNX model whose nodes that cannot live in float16 stay float32: the one conversion that both
`convert model.onnx -o model.fp16.onnx --precision fp16` and the TensorRT fp16 engine (onnx_to_tensorrt) use.

Why a fallback: float16 holds values up to 65504. A node whose weights or activations go beyond that computes
infinities in float16, and the whole model with it. So, as NVIDIA ModelOpt's AutoCast does, every node that reads
an initializer beyond the float16 range, or whose input or output activations reach beyond it on the data (the
user's calibration data, else random inputs; measured with onnxruntime's min/max calibrator, which keeps only the
per-batch minima and maxima), is kept in float32, with Cast nodes around it; so are the nodes the user names with
--keep-fp32 (by operator type or node name) and the operators onnxconverter-common knows have no float16 form.
The report says which node stayed float32 and why.

onnxconverter-common's `float16.convert_float_to_float16` writes the mixed model (inputs and outputs float32, so
callers feed the same arrays). Two of its gaps are closed here: an initializer shared by a float32 and a float16
node is given to the float32 node as its own copy (it would otherwise stay float32 for both, and the float16 node
would get mismatched types), and a graph output produced by a float32 node is returned in float32 directly (it
would otherwise pass through a float16 Cast, and a value beyond 65504 would become infinity there).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ConversionError, InputError, first_line
from mdeploy.frameworks import onnx_models
from mdeploy.lazy import numpy as np
from mdeploy.logs import framework_output

FP16_MAX = 65504.0  # the largest finite float16
_PROTOBUF_LIMIT = 2_000_000_000
_FLOAT, _FLOAT16 = 1, 10  # TensorProto element types
RANDOM_FEEDS = 8  # without --calib-data: random inputs the ranges are measured on

Feed = dict[str, "np.ndarray"]


@dataclass
class Float16Model:
    """The float16 model written, the nodes kept in float32 (node, op_type, reason) and the data the ranges came from."""

    path: Path
    kept_fp32: list[dict[str, str]] = field(default_factory=list)
    measured_on: str = ""
    notes: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {"converter": "onnxconverter-common float16", "precision": "fp16", "kept_fp32": self.kept_fp32, "ranges_measured_on": self.measured_on,
                "fp16_max": FP16_MAX}


def convert_to_float16(src: Path, dst: Path, feeds: Iterable[Feed] | None, measured_on: str,
                       keep_fp32: Sequence[str] = ()) -> Float16Model:
    """Write `src` as float16 to `dst`, keeping float32 the nodes that overflow float16 on `feeds` (and the ones named
    in `keep_fp32`: operator types or node names). `feeds=None` skips measuring activations (initializers are still
    checked)."""
    onnx = require("onnx", extra="onnx")
    float16 = require("onnxconverter_common.float16", extra="onnx", purpose="convert the ONNX model to float16")
    model = onnx_models.load_proto(src, with_data=True)
    if any(i.data_type == _FLOAT16 for i in model.graph.initializer) or _io_types(model) & {_FLOAT16}:
        raise InputError(f"{src.name} already holds float16 tensors", hint="convert the float32 model it came from")
    onnx_models.name_nodes(model)
    nodes = {n.name: n for n in model.graph.node}
    asked = _check_keep(keep_fp32, model)
    ranges = activation_ranges(model, feeds) if feeds is not None else {}
    kept = _kept(model, ranges, asked, measured_on, set(float16.DEFAULT_OP_BLOCK_LIST))
    _private_initializers(model, {k["node"] for k in kept})
    float_outputs = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == _FLOAT]
    try:
        with framework_output():
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, max_finite_val=FP16_MAX, node_block_list=sorted(k["node"] for k in kept),
                op_block_list=float16.DEFAULT_OP_BLOCK_LIST)
    except Exception as exc:
        raise ConversionError(f"onnxconverter-common cannot convert {src.name} to float16: {first_line(exc)}",
                              hint="keep the node it names in float32 with --keep-fp32 NODE") from None
    del model
    _float32_outputs(converted, float_outputs)
    _float16_casts(converted)
    _drop_stale_value_info(converted)
    if converted.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save(converted, str(dst))
    try:
        onnx.checker.check_model(str(dst))
    except Exception as exc:
        raise ConversionError(f"the float16 model of {src.name} fails onnx.checker: {first_line(exc)}",
                              hint="keep the node it names in float32 with --keep-fp32 NODE") from None
    notes = [f"float16 (onnxconverter-common, float32 inputs and outputs); {len(kept)} of {len(nodes)} nodes kept in "
             f"float32" + (f": {_summary(kept)}" if kept else "")]
    return Float16Model(dst, kept, measured_on, notes)


def activation_ranges(model: Any, feeds: Iterable[Feed]) -> dict[str, float]:
    """The largest absolute value of every float activation on `feeds` (onnxruntime's min/max calibrator)."""
    onnx = require("onnx", extra="onnx")
    from mdeploy.quantization import calibration

    q = require("onnxruntime.quantization", extra="onnx")
    with tempfile.TemporaryDirectory(prefix="mdeploy-fp16-") as work:
        path = Path(work) / "model.onnx"
        large = model.ByteSize() > _PROTOBUF_LIMIT
        onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                        location="model.onnx.data")
        try:
            with calibration.quiet_calibration():
                calibrator = q.create_calibrator(str(path), None, augmented_model_path=str(Path(work) / "augmented.onnx"),
                                                 calibrate_method=q.CalibrationMethod.MinMax,
                                                 use_external_data_format=large,
                                                 providers=["CPUExecutionProvider"])
                calibrator.collect_data(calibration.reader_class()(feeds, lambda: None))
                data = calibrator.compute_data()
        except InputError:
            raise
        except Exception as exc:
            raise ConversionError(f"cannot measure the activations of the model for float16: {first_line(exc)}",
                                  hint="give --calib-data with inputs the model takes") from None
    ranges = {}
    for name, value in data.items():
        low, high = (float(np.max(np.abs(np.asarray(v, dtype=np.float64)))) for v in value.range_value)
        ranges[name] = max(low, high)
    return ranges


def _kept(model: Any, ranges: dict[str, float], asked: dict[str, str], measured_on: str,
          no_fp16: set[str]) -> list[dict[str, str]]:
    """Each node that stays float32, with the first reason found."""
    from onnx import numpy_helper

    big_inits = {}
    for init in model.graph.initializer:
        if init.data_type == _FLOAT:
            values = numpy_helper.to_array(init)
            finite = np.abs(values[np.isfinite(values)])  # infinities stay infinities in float16: no new overflow
            top = float(finite.max()) if finite.size else 0.0
            if top > FP16_MAX:
                big_inits[init.name] = top
    kept = []
    for node in model.graph.node:
        reason = asked.get(node.name) or asked.get(node.op_type)
        if reason is None and node.op_type in no_fp16:
            reason = f"{node.op_type} has no float16 form (onnxconverter-common's block list)"
        if reason is None:
            reason = next((f"initializer {i} holds values up to {big_inits[i]:.3g} (float16 max {FP16_MAX:g})"
                           for i in node.input if i in big_inits), None)
        if reason is None:
            reason = next((f"activation {t} reaches {ranges[t]:.3g} on {measured_on} (float16 max {FP16_MAX:g})"
                           for t in [*node.input, *node.output] if t in ranges and FP16_MAX < ranges[t] < np.inf), None)
        if reason is not None:
            kept.append({"node": node.name, "op_type": node.op_type, "reason": reason})
    return kept


def _check_keep(keep: Sequence[str], model: Any) -> dict[str, str]:
    """--keep-fp32 values: each an operator type or a node name of the model (else exit 2, naming what there is)."""
    ops = {n.op_type for n in model.graph.node}
    names = {n.name for n in model.graph.node}
    asked = {}
    for item in keep:
        if item in names or item in ops:
            asked[item] = f"--keep-fp32 {item}"
        else:
            raise InputError(f"--keep-fp32 {item}: the model has no node or operator type of that name",
                             hint="its operator types: " + ", ".join(sorted(ops)[:20]))
    return asked


def _private_initializers(model: Any, kept: set[str]) -> None:
    """Give each float32 node its own copy of an initializer it shares with a float16 node."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                readers.setdefault(name, set()).add(node.name in kept)
    shared = {name for name, sides in readers.items() if sides == {True, False} and inits[name].data_type == _FLOAT}
    for node in graph.node:
        if node.name not in kept:
            continue
        for k, name in enumerate(node.input):
            if name in shared:
                copy = graph.initializer.add()
                copy.CopyFrom(inits[name])
                copy.name = f"{name}_fp32_for_{node.name}"
                node.input[k] = copy.name


def _float32_outputs(model: Any, names: list[str]) -> None:
    """Make each graph output that was float32 float32 again, skipping a float16 round trip where its producer already
    computes float32 (onnxconverter-common casts a kept node's output to float16 and back, losing values past 65504)."""
    from onnx import helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    for output in graph.output:
        if output.name not in names:
            continue
        node = producer.get(output.name)
        if (node is not None and node.op_type == "Cast" and _cast_to(node) == _FLOAT16 and not readers.get(output.name)
                and len(readers.get(node.input[0], [])) == 1 and node.input[0] in producer
                and _float32_tensor(graph, producer[node.input[0]], node.input[0])):
            source = producer[node.input[0]]  # the kept node writes the output itself, in float32
            source.output[list(source.output).index(node.input[0])] = output.name
            graph.node.remove(node)
        elif output.type.tensor_type.elem_type != _FLOAT:
            renamed = f"{output.name}_fp16"
            if node is not None:
                node.output[list(node.output).index(output.name)] = renamed
            for reader in readers.get(output.name, []):
                reader.input[:] = [renamed if i == output.name else i for i in reader.input]
            graph.node.append(helper.make_node("Cast", [renamed], [output.name], name=f"{output.name}_to_fp32", to=_FLOAT))
        output.type.tensor_type.elem_type = _FLOAT


def _float16_casts(model: Any) -> None:
    """A Cast to float32 whose output the converter typed float16 casts to float16 (onnxconverter-common retypes the
    tensor but leaves the Cast's `to`, and onnxruntime then refuses the model)."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type == "Cast" and _cast_to(node) == _FLOAT and types.get(node.output[0]) == _FLOAT16:
            next(a for a in node.attribute if a.name == "to").i = _FLOAT16


def _drop_stale_value_info(model: Any) -> None:
    """Drop the value infos of tensors no node reads or writes any more (the converter renames tensors around the
    float32 nodes and leaves the old names' float16 types behind, which would mislead any reader of the graph)."""
    used = {t for n in model.graph.node for t in [*n.input, *n.output]}
    kept = [v for v in model.graph.value_info if v.name in used]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)


def _float32_tensor(graph: Any, node: Any, tensor: str) -> bool:
    """Whether `tensor`, written by `node`, is float32 (from the value infos the converter left)."""
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.name == tensor:
            return info.type.tensor_type.elem_type == _FLOAT
    return node.op_type == "Cast" and _cast_to(node) == _FLOAT


def _cast_to(node: Any) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _io_types(model: Any) -> set[int]:
    return {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}


def _summary(kept: list[dict[str, str]]) -> str:
    shown = "; ".join(f"{k['node']} ({k['reason']})" for k in kept[:3])
    return shown + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")


def compare_float16(fp32: Path, fp16: Path, feeds: list[Feed], label: str) -> Any:
    """Run both models on onnxruntime (CPU) on `feeds`: the Comparison, truthy when every output is within the fp16
    tolerance."""
    from mdeploy import registry
    from mdeploy.core import Format, ModelRef, tolerance_for
    from mdeploy.validation.run import compare

    ref = registry.open_runner(ModelRef(fp32, Format.ONNX))
    cand = registry.open_runner(ModelRef(fp16, Format.ONNX))
    return compare(ref, cand, feeds, tolerance_for("fp16"), label=label)


def measuring_feeds(specs: list[Any], calib_data: str | None, seed: int = 0) -> tuple[Iterable[Feed], str]:
    """The feeds activation ranges are measured on, and what they are: the --calib-data (checked against the model's
    inputs `specs`, in batches) or, without it, random inputs at the shapes of `specs` (those validation feeds)."""
    from mdeploy.quantization import calibration
    from mdeploy.validation import inputs as vinputs

    if calib_data:
        if not Path(calib_data).exists():
            raise InputError(f"data not found: {calib_data}")
        arrays = vinputs.load_arrays(Path(calib_data), mmap=True)
        return calibration.batches_from_data(arrays, specs, flag="--calib-data"), calib_data
    rng = np.random.default_rng(seed)
    feeds = [vinputs.random_feed(specs, rng) for _ in range(RANDOM_FEEDS)]
    return feeds, f"{RANDOM_FEEDS} random inputs (give --calib-data for real ranges)"
