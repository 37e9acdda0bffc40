"""SavedModel (through a signature) and Keras 3 `.keras` -> ONNX through tf2onnx's Python API.

tf2onnx's own command line handles neither Keras 3 archives nor SavedModels written by Keras 3's
`model.export()` well, so both are wrapped in a tf.function with named inputs and a dict of named outputs,
which is frozen (captured variables and tensors, such as a Normalization layer's mean and variance, become
constants) and handed to `tf2onnx.convert.from_function`; the ONNX model takes exactly the source's inputs,
keeps its input and output names, and unknown dimensions (the batch) stay dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.frameworks import tf_models, tf_onnx

DEFAULT_OPSET = 17


@dataclass
class TfToOnnxOptions:
    opset: int | None = field(default=None, metadata={"help": f"ONNX opset (default {DEFAULT_OPSET})"})
    signature: str | None = field(default=None, metadata={"help": "SavedModel signature to convert (default serving_default)"})
    inputs: list[TensorSpec] = field(default_factory=list, metadata={"help": "NAME:SHAPE fixes unknown input dimensions"})
    unsafe_deserialization: bool = field(default=False, metadata={"help": "allow .keras files with Lambda layers (runs code from the file)"})


class TfToOnnx(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.SAVEDMODEL, Format.KERAS)
    target: ClassVar[Format] = Format.ONNX
    Options: ClassVar[type] = TfToOnnxOptions
    name: ClassVar[str] = "tf2onnx.convert.from_function"

    def convert(self, src: ModelRef, out: Path, options: TfToOnnxOptions) -> ConversionResult:
        convert = tf_onnx.tf2onnx().convert
        t = tf_models.tf()
        opset = options.opset or DEFAULT_OPSET
        notes: list[str] = []
        if src.format == Format.KERAS:
            model = tf_models.load_keras(src.path, options.unsafe_deserialization)
            io = tf_models.keras_io(model)
            specs = tf_models.fix_dims(io.specs, options.inputs)
            fn, signature_specs = tf_models.keras_function(model, io, specs)
            outputs = io.outputs
            details: dict[str, Any] = {}
        else:
            loaded = tf_models.load_savedmodel(src.path)
            sig_name, sig = tf_models.signature(loaded, src.path, options.signature)
            sig_specs, outputs = tf_models.signature_io(sig)
            specs = tf_models.fix_dims(sig_specs, options.inputs)
            signature_specs = tf_models.tf_specs(specs)
            names = [s.name for s in specs]

            @t.function(input_signature=signature_specs)
            def fn(*args: Any) -> Any:
                return sig(**dict(zip(names, args)))

            details = {"signature": sig_name}
            notes.append(f"converted signature '{sig_name}'")
        fn, freeze_notes = tf_onnx.frozen(fn, signature_specs)
        notes.extend(freeze_notes)
        proto = tf_onnx.run(src.name, lambda: convert.from_function(fn, input_signature=signature_specs, opset=opset))
        tf_onnx.check_inputs(proto, [s.name for s in specs])
        current_out = [o.name for o in proto.graph.output]
        by_base = {n.split(":")[0]: n for n in current_out}
        pairs = [(by_base.get(n, n), n) for n in outputs] if all(n in by_base or n in current_out for n in outputs) else \
            list(zip(current_out, outputs))
        tf_onnx.rename_io(proto, {}, pairs)
        tf_onnx.name_batch_dims(proto)
        tf_onnx.save(proto, out)
        examples, dynamic = tf_models.example_specs(specs)
        return ConversionResult(
            output=ModelRef(out, Format.ONNX),
            notes=notes,
            input_specs=examples,
            dynamic_axes=dynamic,
            details={**details, "opset": opset, "inputs": [s.name for s in specs], "outputs": outputs},
        )
