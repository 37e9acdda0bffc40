"""Keras 3 `.keras`, Keras-exported SavedModels and TFLite -> ONNX through tf2onnx's Python API."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from mdeploy import api
from mdeploy.core import Format, ModelRef
from mdeploy.quantization.base import build_pass_options
from mdeploy.quantization.tflite_quantize import TFLiteQuantize
from tests.conftest import run_cli


def _io(path):
    model = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    return {v.name: dims(v) for v in model.graph.input}, [o.name for o in model.graph.output], model


def test_cli_multi_io_keras_to_onnx_keeps_names_and_a_dynamic_batch(tf_files, tmp_path):
    out = tmp_path / "mio.onnx"
    result = run_cli("convert", tf_files["multi_io.keras"], "-o", out, "--opset", "13", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and [c["label"] for c in report["comparisons"]] == ["example inputs", "batch=3"]
    assert all(o["max_abs_error"] < 1e-5 for c in report["comparisons"] for o in c["outputs"])
    inputs, outputs, model = _io(out)
    assert inputs == {"features": ["batch", 6], "image": ["batch", 8, 8, 1]}
    assert outputs == ["classes", "score"]
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {13}


def test_keras3_exported_savedmodel_to_onnx_runs_at_any_batch(tf_files, tmp_path):
    out = tmp_path / "cls.onnx"
    report = api.convert(str(tf_files["image_classifier_savedmodel"]), str(out))
    assert report.passed
    assert report.steps[0].details["signature"] == "serving_default"
    session = ort.InferenceSession(str(out))
    (y,) = session.run(None, {"image": np.zeros((7, 16, 16, 3), np.float32)})
    assert y.shape == (7, 5)


def test_tflite_to_onnx_uses_the_signature_names_and_order(tf_files, tmp_path):
    out = tmp_path / "mio_tfl.onnx"
    report = api.convert(str(tf_files["multi_io.tflite"]), str(out))
    assert report.passed
    inputs, outputs, _ = _io(out)
    assert set(inputs) == {"features", "image"} and outputs == ["output_0", "output_1"]
    assert not report.comparisons[0].notes  # matched by name, not by position


def test_int8_tflite_to_onnx_takes_and_returns_real_values(tf_files, tmp_path):
    out = tmp_path / "int8.onnx"
    report = api.convert(str(tf_files["image_classifier_int8.tflite"]), str(out), precision=None)
    assert report.passed, [o.reasons for c in report.comparisons for o in c.outputs]
    inputs, _, model = _io(out)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any("QuantizeLinear" in n for n in report.notes)


def test_keras_dynamic_range_tflite_then_onnx_chain(tf_files, tmp_path):
    """A quantized TFLite (from the pass) converts on to ONNX: every path composes."""
    q = tmp_path / "dyn.tflite"
    TFLiteQuantize().run(ModelRef(tf_files["multi_io.keras"], Format.KERAS), q, build_pass_options(TFLiteQuantize, {"mode": "dynamic"}))
    report = api.convert(str(q), str(tmp_path / "dyn.onnx"))
    assert report.passed
