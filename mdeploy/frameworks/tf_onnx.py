"""What the TensorFlow/TFLite -> ONNX converters share: calling tf2onnx's Python API quietly, and tidying the
graph's interface so the ONNX model is called like its source.

tf2onnx names outputs after TF tensors (`Identity:0`, `StatefulPartitionedCall_1:1`) and unknown dims
`unk__26`; here inputs and outputs take the source's names (in the source's order) and axis 0 is `batch`,
so validation pairs outputs by name and a user sees the same interface in every format.

A tf.function is frozen here before tf2onnx sees it (`frozen`): tf2onnx's `from_function` lists every
non-resource input of the concrete function as an ONNX graph input, and that includes tensors the function
*captures* by value, such as the mean and variance of Keras 3's Normalization layer (EfficientNet's first
layer), which would become required inputs that no caller can know.
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


def frozen(fn: Any, signature_specs: list[Any]) -> tuple[Any, list[str]]:
    """`fn` with every captured variable and captured tensor folded into a constant, and notes on what happened.

    The result is a tf.function with the same input signature and the same structured outputs (so tf2onnx
    names inputs and outputs as before) whose concrete function takes nothing but the signature's inputs.
    Captured resources that are not variables (lookup tables) cannot be folded: that is a ConversionError
    naming them, since the ONNX model would need them as inputs. If TensorFlow's freezing itself fails, `fn`
    is returned unchanged and tf2onnx freezes it its own way (`check_inputs` then catches leftover inputs).
    """
    t = require("tensorflow", extra="tensorflow", purpose="convert TensorFlow models to ONNX")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # tf2onnx uses the same

    concrete = fn.get_concrete_function(*signature_specs)
    try:
        with framework_output():
            folded = convert_variables_to_constants_v2(concrete, lower_control_flow=False, aggressive_inlining=True)
    except Exception as exc:
        return fn, [f"TensorFlow could not freeze the function ({first_line(exc)}); tf2onnx froze it instead"]
    left = [x.name for x in folded.inputs[len(signature_specs):]]
    if left:
        raise ConversionError(f"the model captures state that cannot become an ONNX constant: {', '.join(left)}",
                              hint="resources other than variables (lookup tables of StringLookup, IntegerLookup, ...) "
                                   "cannot be frozen; move that preprocessing out of the model")
    structure = concrete.structured_outputs

    @t.function(input_signature=signature_specs)
    def call(*args: Any) -> Any:
        return t.nest.pack_sequence_as(structure, t.nest.flatten(folded(*args)))

    return call, []


def check_inputs(model: Any, expected: list[str]) -> None:
    """An ONNX model whose inputs are not exactly the source's cannot be called like it: refuse to write it."""
    extra = [i.name for i in model.graph.input if i.name not in expected]
    if extra:
        raise ConversionError(f"the converted model asks for inputs the source does not have: {', '.join(extra)}",
                              hint="they are captured tensors tf2onnx did not fold into constants; please report the model")


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
