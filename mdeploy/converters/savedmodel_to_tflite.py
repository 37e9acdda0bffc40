"""SavedModel -> TFLite (float32, or float16 weights) through tf.lite.TFLiteConverter.

INT8 is the `quantize` verb's job (quantization/tflite_quantize.py): it needs calibration data and reports the
operators that could not be quantized. A `.keras` source reaches this edge through keras_to_savedmodel
(the registry plans the two hops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef, TensorSpec
from mdeploy.errors import InputError
from mdeploy.frameworks import tf_models, tflite_convert

PRECISIONS = ("fp32", "fp16")


@dataclass
class SavedModelToTFLiteOptions:
    precision: str = field(default="fp32", metadata={"help": "fp32 | fp16 (float16 weights); INT8 is `mdeploy quantize`"})
    signature: str | None = field(default=None, metadata={"help": "SavedModel signature to convert (default serving_default)"})
    inputs: list[TensorSpec] = field(default_factory=list, metadata={"help": "NAME:SHAPE fixes unknown input dimensions"})


class SavedModelToTFLite(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.SAVEDMODEL,)
    target: ClassVar[Format] = Format.TFLITE
    Options: ClassVar[type] = SavedModelToTFLiteOptions
    name: ClassVar[str] = "tf.lite.TFLiteConverter"

    def convert(self, src: ModelRef, out: Path, options: SavedModelToTFLiteOptions) -> ConversionResult:
        if options.precision not in PRECISIONS:
            hint = "INT8 needs calibration: use `mdeploy quantize SRC -o OUT.tflite --mode static --calib-data DATA.npz`" \
                if options.precision == "int8" else "choose fp32 or fp16"
            raise InputError(f"--precision {options.precision} is not a TFLite conversion precision", hint=hint)
        t = tf_models.tf()
        prepared = tflite_convert.prepare(src.path, options.signature, options.inputs)
        if options.precision == "fp16":
            prepared.converter.optimizations = [t.lite.Optimize.DEFAULT]
            prepared.converter.target_spec.supported_types = [t.float16]
        out.write_bytes(tflite_convert.run(prepared.converter, src.name))
        examples, dynamic = tf_models.example_specs(prepared.specs)
        return ConversionResult(
            output=ModelRef(out, Format.TFLITE),
            notes=[f"converted signature '{prepared.signature}' at {options.precision}"],
            input_specs=examples,
            dynamic_axes=dynamic,
            details={"signature": prepared.signature, "precision": options.precision, "size_bytes": out.stat().st_size},
        )
