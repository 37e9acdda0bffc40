"""Writing an exported ONNX model to one file without copying its weights, and checking what was written.

save_streamed writes each large weight straight from the exporter's tensors (one `.onnx` file below 2 GB);
check_written runs onnx.checker on the file, reading the weights save_streamed wrote as their headers only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mdeploy.deps import require
from mdeploy.errors import ConversionError, first_line
from mdeploy.frameworks.onnx_skeleton import varint


def save_streamed(model: Any, out: Path, min_bytes: int = 1024) -> set[str]:
    """Write an onnx_ir model as one .onnx file, its weights streamed from memory into the file.

    ir.save builds the whole ModelProto (a copy of every weight) and then its serialized bytes (another copy):
    for BERT-base 0.9 GB over the weights themselves, the largest share of convert's peak memory. Here the graph
    is serialized without its large initializers, and each one follows as its own `graph { initializer {...} }`
    record, written straight from the tensor's memory (protobuf merges repeated records of a message field, so
    readers see one graph holding every initializer). Extra memory: one tensor's header. Below 2 GB only.
    Returns the names of the weights written that way.
    """
    from onnx_ir import serde

    onnx = require("onnx", extra="onnx")
    graph = model.graph
    moved = {name: v for name, v in graph.initializers.items()
             if v.const_value is not None and v.const_value.dtype.name != "STRING" and v.const_value.nbytes >= min_bytes}
    for name in moved:
        graph.initializers.pop(name)
    try:
        proto = serde.serialize_model(model)
    finally:
        graph.initializers.update(moved)
    inputs = {v.name for v in graph.inputs}
    for value in moved.values():  # the value_info ir.save gives initializers that have a type or shape
        described = value.type is not None or value.shape is not None or value.metadata_props or value.doc_string
        if described and value.name not in inputs:
            serde.serialize_value_into(proto.graph.value_info.add(), value)
    with open(out, "wb") as f:
        f.write(proto.SerializeToString())
        for value in moved.values():
            tensor = value.const_value
            header = onnx.TensorProto(name=value.name, data_type=tensor.dtype.value, dims=list(tensor.shape.numpy()))
            if tensor.doc_string:
                header.doc_string = tensor.doc_string
            for key, text in tensor.metadata_props.items():
                header.metadata_props.add(key=key, value=text)
            head = header.SerializeToString()
            size = tensor.nbytes
            body = len(head) + 1 + _varint_len(size) + size  # TensorProto: header fields, then raw_data (field 9)
            record = 1 + _varint_len(body) + body  # GraphProto.initializer (field 5)
            f.write(b"\x3a" + varint(record) + b"\x2a" + varint(body) + head + b"\x4a" + varint(size))  # ModelProto.graph (7)
            start = f.tell()
            tensor.tofile(f)
            if f.tell() - start != size:
                raise ConversionError(f"writing the weight {value.name} wrote {f.tell() - start} bytes, not {size}")
            needed = (int(np.prod(header.dims, dtype=np.int64)) * tensor.dtype.bitwidth + 7) // 8
            if size != needed:  # what onnx.checker checks of raw_data (check_written reads these tensors' headers only)
                raise ConversionError(f"the weight {value.name} holds {size} bytes; its shape and type need {needed}")
    return set(moved)


def _varint_len(n: int) -> int:
    return len(varint(n))


def check_written(out: Path, streamed: set[str] | None = None) -> None:
    """onnx.checker on the written model.

    A file save_streamed wrote is checked without reading the large weights it streamed, `streamed` (onnx_skeleton:
    0.1 s and a few MB where reading the whole file took 1.7 s and 0.8 GB for BERT-base): each such weight stands as a
    graph input of its type and shape, so every check of the graph (nodes against their schemas, topological order, every input
    defined, opsets, types) still applies to the file as written. What the checker checks of those tensors
    themselves (a valid type, one value field of exactly the size their shape needs) save_streamed checked as it
    wrote them. A file the exporter wrote itself gets the whole check.
    """
    onnx = require("onnx", extra="onnx")
    try:
        onnx.checker.check_model(weightless(out, streamed) if streamed else str(out))
    except Exception as exc:
        raise ConversionError(f"the exported model fails onnx.checker: {first_line(exc)}") from None


def weightless(out: Path, streamed: set[str]) -> Any:
    """The model at `out` as onnx.checker sees it, the weights save_streamed wrote (their bytes left unread) turned
    into typed graph inputs."""
    onnx = require("onnx", extra="onnx")
    from mdeploy.frameworks import onnx_skeleton

    model = onnx_skeleton.load_without_weights(out)
    graph = model.graph
    values = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
    unread = [t for t in graph.initializer if t.name in streamed and not any(len(getattr(t, f)) for f in values)]
    if not unread:
        return model
    names = {t.name for t in unread}
    kept = [t for t in graph.initializer if t.name not in names]
    inputs = {i.name for i in graph.input}
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in unread
                       if t.name not in inputs)
    return model
