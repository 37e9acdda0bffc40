"""Reading ONNX files safely and describing them.

External data paths are checked to stay inside the model's folder before anything opens them, and a
corrupt, truncated or empty file becomes one clear ModelLoadError instead of a protobuf traceback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mdeploy.core import TensorSpec
from mdeploy.deps import require
from mdeploy.errors import ModelLoadError, clean_framework_text, first_line

# ONNX TensorProto element types -> numpy dtype names
_ELEM = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}
_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


def load_proto(path: Path, with_data: bool = False) -> Any:
    """onnx.ModelProto without (or with) its external data, after checking the data paths are safe."""
    onnx = require("onnx", extra="onnx")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a valid ONNX model (corrupt or truncated): {first_line(exc)}",
            hint="export or download it again; an ONNX file is a protobuf written by onnx.save or an exporter",
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path} is not a valid ONNX model (no graph inside)")
    files = external_data_files(model)
    folder = path.resolve().parent
    for name in files:
        target = (folder / name).resolve()
        if not target.is_relative_to(folder):
            raise ModelLoadError(f"{path} points to external data outside its folder ({name}); refused")
        if not target.is_file():
            raise ModelLoadError(f"external data file of {path} is missing: {name}", hint="keep the data file beside the model")
    if with_data and files:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(folder))
    return model


def move_weights_to_external_data(path: Path) -> None:
    """Rewrite `path` with its weights in `<name>.data` beside it (ONNX protobufs cannot exceed 2 GB)."""
    onnx = require("onnx", extra="onnx")
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def name_nodes(model: Any) -> int:
    """Give every unnamed node a unique name, so that `--exclude`, `--keep-fp32` and the
    reports can point at it (<op>_<index>). Returns how many were named."""
    used = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            candidate = f"{node.op_type}_{i}"
            while candidate in used:
                candidate += "_"
            node.name = candidate
            used.add(candidate)
            named += 1
    return named


def external_data_files(model: Any) -> list[str]:
    found = []
    for init in _all_initializers(model):
        if init.data_location == 1:  # EXTERNAL
            for entry in init.external_data:
                if entry.key == "location" and entry.value not in found:
                    found.append(entry.value)
    return found


def _all_initializers(model: Any) -> list[Any]:
    inits = list(model.graph.initializer)
    for node in _all_nodes(model.graph):
        for attr in node.attribute:
            if attr.HasField("t"):
                inits.append(attr.t)
    return inits


def _all_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.HasField("g"):
                nodes.extend(_all_nodes(attr.g))
            for g in attr.graphs:
                nodes.extend(_all_nodes(g))
    return nodes


def value_info_spec(value: Any) -> TensorSpec:
    tt = value.type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
    return TensorSpec(value.name, shape, _ELEM.get(tt.elem_type, f"onnx-type-{tt.elem_type}"))


def type_text(type_proto: Any) -> str:
    """A value's ONNX type in words, for what is not a plain tensor (a sequence, an optional, a map).

    Inspect shows every output a graph declares, and those types have no shape of their own: the element's
    type and shape are part of the text, e.g. `sequence<float32[batch, 3]>`, `map<string, float32>`.
    """
    kind = type_proto.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        t = getattr(type_proto, kind)
        dtype = _ELEM.get(t.elem_type, f"onnx-type-{t.elem_type}")
        dims = ", ".join(str(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")) for d in t.shape.dim)
        text = f"{dtype}[{dims}]" if t.HasField("shape") else dtype
        return f"sparse {text}" if kind == "sparse_tensor_type" else text
    if kind == "sequence_type":
        return f"sequence<{type_text(type_proto.sequence_type.elem_type)}>"
    if kind == "optional_type":
        return f"optional<{type_text(type_proto.optional_type.elem_type)}>"
    if kind == "map_type":
        key_type = type_proto.map_type.key_type
        key = "string" if key_type == 8 else _ELEM.get(key_type, f"onnx-type-{key_type}")
        return f"map<{key}, {type_text(type_proto.map_type.value_type)}>"
    return "unknown type" if kind is None else kind.removesuffix("_type")


def _value_dict(value: Any, ranges: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """One input or output as inspect shows it: a tensor's shape and dtype, or another type in words."""
    if value.type.WhichOneof("value") == "tensor_type":
        spec = value_info_spec(value)
        return _spec_dict(TensorSpec(spec.name, spec.shape, spec.dtype, ranges.get(spec.name)))
    return {"name": value.name, "shape": None, "dtype": type_text(value.type)}


def graph_inputs(model: Any) -> list[TensorSpec]:
    """The real inputs (initializers listed as inputs by old exporters are weights, not inputs)."""
    inits = {i.name for i in model.graph.initializer}
    specs = [value_info_spec(v) for v in model.graph.input if v.name not in inits]
    ranges = index_ranges(model)
    return [TensorSpec(s.name, s.shape, s.dtype, ranges.get(s.name)) for s in specs]


def index_ranges(model: Any) -> dict[str, tuple[int, int]]:
    """For integer inputs that index an embedding table (Gather on an initializer), the valid id range.

    Follows the input through shape-preserving ops (Cast, Unsqueeze, Reshape, ...) to a Gather whose
    data is an initializer; the table's first dimension bounds the ids.
    """
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    passthrough = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand", "Transpose"}
    ranges: dict[str, tuple[int, int]] = {}
    for value in model.graph.input:
        if value.type.tensor_type.elem_type not in (6, 7):
            continue
        frontier, seen, bound = [value.name], set(), None
        while frontier:
            name = frontier.pop()
            for node in consumers.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in inits:
                    size = inits[node.input[0]][0] if inits[node.input[0]] else None
                    if size:
                        bound = size if bound is None else min(bound, size)
                elif node.op_type in passthrough and node.input[0] == name:
                    for out in node.output:
                        if out not in seen:
                            seen.add(out)
                            frontier.append(out)
        if bound:
            ranges[value.name] = (0, bound)
    return ranges


def describe(path: Path) -> dict[str, Any]:
    """What `mdeploy inspect` shows for an ONNX model."""
    model = load_proto(path)
    weights, ranges = {i.name for i in model.graph.initializer}, index_ranges(model)
    inits = _all_initializers(model)
    params = sum(_numel(i.dims) for i in inits)
    param_bytes = sum(_numel(i.dims) * _BYTES.get(i.data_type, 0) for i in inits)
    files = external_data_files(model)
    disk = path.stat().st_size + sum((path.parent / f).stat().st_size for f in files)
    ops = Counter(
        (f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type) for n in _all_nodes(model.graph)
    )
    return {
        "format": "onnx",
        "path": str(path),
        "inputs": [_value_dict(v, ranges) for v in model.graph.input if v.name not in weights],
        "outputs": [_value_dict(v, {}) for v in model.graph.output],
        "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "operators": dict(ops.most_common()),
        "nodes": sum(ops.values()),
        "parameters": params,
        "parameter_bytes": param_bytes,
        "size_bytes": disk,
        "external_data": files,
        "problems": checker_problems(path, model),
        "notes": _newer_than_onnx(model),
    }


def _newer_than_onnx(model: Any) -> list[str]:
    onnx = require("onnx", extra="onnx")
    if model.ir_version <= onnx.IR_VERSION:
        return []
    note = (f"IR version {model.ir_version} is newer than onnx {onnx.__version__} knows ({onnx.IR_VERSION}): what is shown "
            f"was read with it, and its structure checked as IR version {onnx.IR_VERSION}")
    return [note]


def checker_problems(path: Path, model: Any) -> list[dict[str, str]]:
    """What onnx's checker finds structurally wrong (a node input nothing produces, an unknown operator...).

    The structural check only: the full check adds strict shape inference, which rejects models that every
    runtime runs (exporters leave shapes it cannot follow). Given the path, the checker finds external data
    beside the model and reads a model over 2 GB. An IR version newer than this onnx (the file format's
    revision, which onnx reads all the same) is no fault of the model: `model` (read without its weights)
    is then checked at onnx's own IR version.
    """
    onnx = require("onnx", extra="onnx")
    source: Any = str(path)
    if model.ir_version > onnx.IR_VERSION:
        source = onnx.ModelProto()
        source.CopyFrom(model)
        source.ir_version = onnx.IR_VERSION
    try:
        onnx.checker.check_model(source)
    except Exception as exc:
        return [{"source": "onnx.checker", "message": _whole_message(exc), "hint": "re-export the model from its source"}]
    return []


def _whole_message(exc: BaseException) -> str:
    """The checker spreads one sentence over lines (a node printed in its text form): keep it whole."""
    return " ".join(clean_framework_text(str(exc)).split())


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    d: dict[str, Any] = {"name": spec.name, "shape": list(spec.shape), "dtype": spec.dtype}
    if spec.value_range:
        d["value_range"] = list(spec.value_range)
    return d


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n

