"""The MLflow pyfunc model that serves a .tflite file (MLflow has no TFLite flavor).

This file is copied INTO the package and run by MLflow ("models from code": `mlflow.models.set_model` at the end),
so the server needs mlflow, numpy and ai-edge-litert (or tensorflow), never mdeploy: it imports nothing from mdeploy
and no pickle is written. mdeploy's TFLite runner and this wrapper speak the same language: inputs and outputs are
named by the model's serving signature, and quantized (int8/uint8/int16) inputs and outputs take and return real
float32 values, converted with the model's own scale and zero point.

The interpreter is not thread-safe, so one lock serialises predictions (the scoring server may call predict from
several threads).
"""

from __future__ import annotations

import threading
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

ARTIFACT = "tflite_model"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own interpreter (deprecated, but present where tensorflow is)
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


def _quantized(d: dict[str, Any]) -> bool:
    scale = d.get("quantization", (0.0, 0))[0]
    return np.dtype(d["dtype"]).name in ("int8", "uint8", "int16") and scale > 0


class TFLiteModel(PythonModel):
    """Runs the package's .tflite on a dict of named numpy arrays; returns a dict of named float/int arrays."""

    def load_context(self, context: Any) -> None:
        self._lock = threading.Lock()
        self._interpreter = _interpreter_class()(model_path=context.artifacts[ARTIFACT])
        self._interpreter.allocate_tensors()
        signatures = self._interpreter.get_signature_list() or {}
        self._runner = None
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            self._runner = self._interpreter.get_signature_runner(key)
            self._inputs = self._runner.get_input_details()
            self._outputs = self._runner.get_output_details()
            self._input_order = list(signatures[key]["inputs"])
            self._output_order = list(signatures[key]["outputs"])
        else:
            self._inputs = {d["name"]: d for d in self._interpreter.get_input_details()}
            self._outputs = {d["name"]: d for d in self._interpreter.get_output_details()}
            self._input_order, self._output_order = list(self._inputs), list(self._outputs)

    def _to_model(self, name: str, value: Any) -> np.ndarray:
        d = self._inputs[name]
        array = np.asarray(value)
        if _quantized(d):
            scale, zero = d["quantization"]
            info = np.iinfo(np.dtype(d["dtype"]))
            q = np.round(array.astype(np.float64) / scale) + zero
            return np.clip(q, info.min, info.max).astype(d["dtype"])
        return np.ascontiguousarray(array, dtype=d["dtype"])

    def _from_model(self, name: str, value: np.ndarray) -> np.ndarray:
        d = self._outputs[name]
        if _quantized(d):
            scale, zero = d["quantization"]
            return ((value.astype(np.float32) - np.float32(zero)) * np.float32(scale)).astype(np.float32)
        return np.array(value)

    # no type hints here: MLflow reads predict's hints as a schema (and warns on these); the package's signature is it
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        if not isinstance(model_input, dict):
            if len(self._input_order) != 1:
                raise ValueError(f"this model takes {len(self._input_order)} named inputs: {self._input_order}")
            model_input = {self._input_order[0]: model_input}
        feed = {name: self._to_model(name, model_input[name]) for name in self._input_order}
        with self._lock:
            if self._runner is not None:
                raw = self._runner(**feed)
            else:
                raw = self._run_tensors(feed)
            return {name: self._from_model(name, np.array(raw[name])) for name in self._output_order}

    def _run_tensors(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self._interpreter
        resized = False
        for name, array in feed.items():
            d = self._inputs[name]
            if tuple(it.get_tensor_details()[d["index"]]["shape"]) != array.shape:
                it.resize_tensor_input(d["index"], list(array.shape), strict=True)
                resized = True
        if resized:
            it.allocate_tensors()
        for name, array in feed.items():
            it.set_tensor(self._inputs[name]["index"], array)
        it.invoke()
        return {name: it.get_tensor(d["index"]) for name, d in self._outputs.items()}


mlflow.models.set_model(TFLiteModel())
