"""TFLite models on the ai-edge-litert interpreter.

Quantized (int8/uint8) inputs and outputs are converted with the model's own scale and zero point, so that
the runner takes and returns real (float32) values and comparisons with the float source are in real units.
Inputs with dynamic dimensions are resized to each feed's shape; a shape the model fixes is never
transposed or reshaped (NHWC stays NHWC): base.check_feed reports the mismatch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mdeploy.core import Format, TensorSpec
from mdeploy.errors import InputError, first_line
from mdeploy.frameworks import tflite_models
from mdeploy.logs import framework_output
from mdeploy.runners.base import Feed, Runner


class TFLiteRunner(Runner):
    formats: ClassVar[tuple[Format, ...]] = (Format.TFLITE,)
    framework: ClassVar[str] = "ai_edge_litert"

    def _load(self) -> None:
        self.interpreter = tflite_models.interpreter(self.ref.path, self.threads)  # a bad model is reported first
        if self.device != "cpu":
            raise InputError(
                f"--device {self.device}: TFLite models run on the CPU only here (LiteRT's GPU delegate is for phones, "
                "not CUDA)",
                hint="use --device cpu; for CUDA, run the ONNX or TensorFlow form of the model",
            )
        self._inputs, self._outputs, self.signature = tflite_models.io(self.interpreter)
        self._specs = self.apply_overrides([t.spec() for t in self._inputs])
        self._shapes = {t.index: tuple(self.interpreter.get_tensor_details()[t.index]["shape"]) for t in self._inputs}

    def input_specs(self) -> list[TensorSpec]:
        return self._specs

    def output_names(self) -> list[str]:
        return [t.name for t in self._outputs]

    def _infer(self, feed: Feed) -> dict[str, np.ndarray]:
        it = self.interpreter
        try:
            with framework_output():
                resized = False
                for t in self._inputs:
                    shape = tuple(feed[t.name].shape)
                    if self._shapes[t.index] != shape:
                        it.resize_tensor_input(t.index, list(shape), strict=True)
                        self._shapes[t.index] = shape
                        resized = True
                if resized:
                    it.allocate_tensors()
                for t in self._inputs:
                    value = feed[t.name]
                    it.set_tensor(t.index, tflite_models.quantize(value, t) if t.quantized else np.ascontiguousarray(value, dtype=t.dtype))
                it.invoke()
                result = {}
                for t in self._outputs:
                    value = np.array(it.get_tensor(t.index))
                    result[t.name] = tflite_models.dequantize(value, t) if t.quantized else value
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"the TFLite interpreter failed to run {self.ref.name}: {first_line(exc)}",
                hint="compare the inputs with what `mdeploy inspect` shows; give real shapes with --input NAME:SHAPE",
            ) from None
        return result

    @classmethod
    def describe(cls, ref: Any) -> dict[str, Any]:
        return tflite_models.describe(ref.path)
