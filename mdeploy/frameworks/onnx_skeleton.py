"""An ONNX model's structure without its weights' bytes, read in milliseconds from a file of any size.

onnx.load has no way to leave weights stored inside the .onnx file unread: for a BERT-base export (0.44 GB in one
file) it takes half a second and 0.8 GB at its peak (the file's bytes and the parsed copy), every time. What
convert's validation needs from the file before and around running it (the IR version and opsets, the inputs and
outputs, which initializer an input indexes) is a few hundred KB. Here the protobuf is walked field by field over a
memory map: every field is kept as it is, except the bytes of large initializers' data (raw_data and packed
numbers), which are skipped. Their TensorProtos keep name, dims and type, so `onnx_models.graph_inputs` and
`ort_sessions.fit` read the result like the whole model. Models with external data, and anything this walk does not
understand, are read by `onnx_models.load_proto` (its checks and its one-line errors apply).
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.frameworks import onnx_models

_GRAPH = 7  # ModelProto.graph
_INITIALIZER = 5  # GraphProto.initializer
# TensorProto fields that hold a tensor's values: float_data, int32_data, int64_data, raw_data, double_data, uint64_data
_DATA_FIELDS = frozenset({4, 5, 7, 9, 10, 11})
SKIP_BYTES = 1024  # data fields at least this long are left unread


class _Unreadable(Exception):
    """The bytes are not a protobuf this walk follows: onnx.load reads the file instead (and says what is wrong)."""


def load_without_weights(path: Path) -> Any:
    """onnx.ModelProto of the file at `path`, large initializers without their values (see the module docstring)."""
    onnx = require("onnx", extra="onnx")
    path = Path(path)
    try:
        if path.suffix != ".onnx" or path.stat().st_size == 0:
            raise _Unreadable
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            skeleton = _model(data)
        model = onnx.ModelProto()
        model.ParseFromString(skeleton)
    except Exception:  # noqa: BLE001 - any doubt (_Unreadable, a protobuf DecodeError, OSError): onnx.load decides
        return onnx_models.load_proto(path)
    if (not model.graph.node and not model.graph.output) or onnx_models.external_data_files(model):
        return onnx_models.load_proto(path)  # its checks (external data paths) and errors; external weights stay unread
    return model


def _model(data: mmap.mmap) -> bytes:
    out = bytearray()
    for field, wire, head, tag_end, start, end in _fields(data, 0, len(data)):
        if field == _GRAPH and wire == 2:
            _record(out, data[head:tag_end], _graph(data, start, end))
        else:
            out += data[head:end]
    return bytes(out)


def _graph(data: mmap.mmap, begin: int, stop: int) -> bytes:
    out = bytearray()
    for field, wire, head, tag_end, start, end in _fields(data, begin, stop):
        if field == _INITIALIZER and wire == 2:
            _record(out, data[head:tag_end], _tensor(data, start, end))
        else:
            out += data[head:end]
    return bytes(out)


def _tensor(data: mmap.mmap, begin: int, stop: int) -> bytes:
    out = bytearray()
    for field, wire, head, _, start, end in _fields(data, begin, stop):
        if not (field in _DATA_FIELDS and wire == 2 and end - start >= SKIP_BYTES):
            out += data[head:end]
    return bytes(out)


def _record(out: bytearray, tag: bytes, body: bytes) -> None:
    out += tag
    out += varint(len(body))
    out += body


def _fields(data: mmap.mmap, pos: int, stop: int):  # noqa: ANN202 - a generator of spans
    """Every field of the message in data[pos:stop]: (field number, wire type, where its tag starts, where its tag
    ends, where its value starts (after a length prefix), where it ends)."""
    while pos < stop:
        head = pos
        key, pos = _read_varint(data, pos, stop)
        tag_end = pos
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Unreadable
        if wire == 0:
            _, pos = _read_varint(data, pos, stop)
            start = end = pos
        elif wire == 1:
            start, end = pos, pos + 8
        elif wire == 5:
            start, end = pos, pos + 4
        elif wire == 2:
            size, start = _read_varint(data, pos, stop)
            end = start + size
        else:
            raise _Unreadable  # groups (never written by onnx)
        if end > stop:
            raise _Unreadable
        pos = end
        yield field, wire, head, tag_end, start, end


def _read_varint(data: mmap.mmap, pos: int, stop: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= stop or shift > 63:
            raise _Unreadable
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def varint(n: int) -> bytes:
    """`n` as a protobuf varint (the length and tag encoding of every field)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)
