"""Keras 3 `.keras` -> SavedModel with Keras' own `model.export()`.

This is the first hop of `.keras` -> TFLite (the TFLite converter reads SavedModels); the SavedModel gets a
`serving_default` signature whose inputs keep the Keras input names and whose batch stays dynamic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from mdeploy.converters.base import ConversionResult, Converter
from mdeploy.core import Format, ModelRef
from mdeploy.errors import ConversionError, first_line
from mdeploy.frameworks import tf_models
from mdeploy.logs import framework_output


@dataclass
class KerasToSavedModelOptions:
    unsafe_deserialization: bool = field(default=False, metadata={"help": "allow .keras files with Lambda layers (runs code from the file)"})


class KerasToSavedModel(Converter):
    sources: ClassVar[tuple[Format, ...]] = (Format.KERAS,)
    target: ClassVar[Format] = Format.SAVEDMODEL
    Options: ClassVar[type] = KerasToSavedModelOptions
    name: ClassVar[str] = "keras.Model.export"

    def convert(self, src: ModelRef, out: Path, options: KerasToSavedModelOptions) -> ConversionResult:
        model = tf_models.load_keras(src.path, options.unsafe_deserialization)
        io = tf_models.keras_io(model)
        try:
            with framework_output():
                model.export(str(out), format="tf_saved_model", verbose=False)
        except Exception as exc:
            raise ConversionError(f"Keras could not export {src.name} as a SavedModel: {first_line(exc)}") from None
        examples, dynamic = tf_models.example_specs(io.specs)
        return ConversionResult(
            output=ModelRef(out, Format.SAVEDMODEL),
            notes=[],
            input_specs=examples,
            dynamic_axes=dynamic,
            details={"signature": tf_models.DEFAULT_SIGNATURE, "inputs": [s.name for s in io.specs], "outputs": io.outputs},
        )
