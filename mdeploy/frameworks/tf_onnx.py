"""What the TensorFlow/TFLite -> ONNX converters share: calling tf2onnx's Python API quietly, and tidying the
graph's interface so the ONNX model is called like its source.

tf2onnx names outputs after TF tensors (`Identity:0`, `StatefulPartitionedCall_1:1`) and unknown dims
`unk__26`; here inputs and outputs take the source's names (in the source's order) and axis 0 is `batch`,
so validation pairs outputs by name and a user sees the same interface in every format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mdeploy.deps import require
from mdeploy.errors import ConversionError, first_line
from mdeploy.logs import framework_output, quiet_loggers


def tf2onnx() -> Any:
    module = require("tf2onnx", extra="tensorflow", purpose="convert TensorFlow models to ONNX")
    quiet_loggers()
    return module


def run(what: str, call: Any) -> Any:
    """Run a tf2onnx conversion with its output captured; its failures become one ConversionError line."""
    try:
        with framework_output():
            model, _ = call()
    except Exception as exc:
        raise ConversionError(f"tf2onnx could not convert {what}: {first_line(exc)}",
                              hint="run with --debug for tf2onnx's traceback, or try another --opset") from None
    return model


def rename_io(model: Any, inputs: dict[str, str], outputs: list[tuple[str, str]]) -> None:
    """Rename graph inputs (old -> new) and outputs (in the given order) everywhere they are referenced."""
    mapping = {**inputs, **dict(outputs)}
    mapping = {k: v for k, v in mapping.items() if k != v}
    graph = model.graph
    if mapping:
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in mapping:
                    node.input[i] = mapping[name]
            for i, name in enumerate(node.output):
                if name in mapping:
                    node.output[i] = mapping[name]
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.name in mapping:
                value.name = mapping[value.name]
    order = [new for _, new in outputs]
    if order and sorted(order) == sorted(o.name for o in graph.output):
        by_name = {o.name: o for o in graph.output}
        reordered = [by_name[n] for n in order]
        copies = [type(o)() for o in reordered]
        for copy, original in zip(copies, reordered):
            copy.CopyFrom(original)
        del graph.output[:]
        graph.output.extend(copies)


def name_batch_dims(model: Any) -> None:
    """tf2onnx calls every unknown dim `unk__N`; axis 0 of the interface is the batch."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


def save(model: Any, out: Path) -> None:
    onnx = require("onnx", extra="onnx")
    onnx.save(model, str(out))
    try:
        onnx.checker.check_model(str(out))
    except Exception as exc:
        raise ConversionError(f"the converted model fails onnx.checker: {first_line(exc)}") from None
