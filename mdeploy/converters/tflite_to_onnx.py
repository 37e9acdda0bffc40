"""TFLite -> ONNX through tf2onnx's Python API (`tf2onnx.convert.from_tflite`).

The ONNX model is called like the TFLite model's signature: inputs and outputs take the signature's names
and order (tf2onnx would use internal tensor names such as `StatefulPartitionedCall_1:0`). A full-integer
model with int8 inputs/outputs gets QuantizeLinear/DequantizeLinear at its boundary with the TFLite model's
own scale and zero point, so that it takes and returns real values, as the TFLite runner does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef
from mdeploy.deps import require
from mdeploy.frameworks import tf_models, tf_onnx, tflite_models

DEFAULT_OPSET = 17


@dataclass
class TFLiteToOnnxOptions:
    opset: int | None = field(default=None, metadata={"help": f"ONNX opset (default {DEFAULT_OPSET})"})


class TFLiteToOnnx(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.TFLITE,)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = TFLiteToOnnxOptions
    name: ClassVar[str] = "tf2onnx.convert.from_tflite"

    def convert(self, src: ModelRef, out: Path, options: TFLiteToOnnxOptions) -> ConversionResult:
        it = tflite_models.interpreter(src.path)
        inputs, outputs, _ = tflite_models.io(it)
        tensor_names = {d["index"]: d["name"] for d in it.get_tensor_details()}
        convert = tf_onnx.tf2onnx().convert
        opset = options.opset or DEFAULT_OPSET
        proto = tf_onnx.run(src.name, lambda: convert.from_tflite(str(src.path), opset=opset))
        tf_onnx.rename_io(
            proto,
            {tensor_names[t.index]: t.name for t in inputs},
            [(tensor_names[t.index], t.name) for t in outputs],
        )
        notes = []
        if any(t.quantized for t in inputs + outputs):
            _real_valued_boundary(proto, [t for t in inputs if t.quantized], [t for t in outputs if t.quantized])
            notes.append("int8 inputs/outputs wrapped in QuantizeLinear/DequantizeLinear (the model's scale and zero point): the ONNX model takes and returns float32")
        tf_onnx.name_batch_dims(proto)
        tf_onnx.save(proto, out)
        examples, dynamic = tf_models.example_specs([t.spec() for t in inputs])
        return ConversionResult(
            output=ModelRef(out, Format.ONNX),
            notes=notes,
            input_specs=examples,
            dynamic_axes=dynamic,
            details={"opset": opset, "inputs": [t.name for t in inputs], "outputs": [t.name for t in outputs]},
        )


def _real_valued_boundary(model: Any, q_inputs: list[tflite_models.TensorIO], q_outputs: list[tflite_models.TensorIO]) -> None:
    onnx = require("onnx", extra="onnx")
    helper, TP = onnx.helper, onnx.TensorProto
    graph = model.graph
    nodes = []
    for t in q_inputs:
        value = next(v for v in graph.input if v.name == t.name)
        inner = f"{t.name}__quantized"
        _rename_uses(graph, t.name, inner)
        value.type.tensor_type.elem_type = TP.FLOAT
        nodes.append(helper.make_node("QuantizeLinear", [t.name, f"{t.name}__scale", f"{t.name}__zero"], [inner]))
        _add_qparams(graph, helper, TP, t)
    for t in q_outputs:
        value = next(v for v in graph.output if v.name == t.name)
        inner = f"{t.name}__quantized"
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name == t.name:
                    node.output[i] = inner
            for i, name in enumerate(node.input):
                if name == t.name:
                    node.input[i] = inner
        value.type.tensor_type.elem_type = TP.FLOAT
        graph.node.append(helper.make_node("DequantizeLinear", [inner, f"{t.name}__scale", f"{t.name}__zero"], [t.name]))
        _add_qparams(graph, helper, TP, t)
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)


def _rename_uses(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _add_qparams(graph: Any, helper: Any, TP: Any, t: tflite_models.TensorIO) -> None:
    zero_type = {"int8": TP.INT8, "uint8": TP.UINT8, "int16": TP.INT16}[t.dtype]
    graph.initializer.append(helper.make_tensor(f"{t.name}__scale", TP.FLOAT, [], [t.scale]))
    graph.initializer.append(helper.make_tensor(f"{t.name}__zero", zero_type, [], [t.zero_point]))
