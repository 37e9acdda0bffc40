"""The TFLite and TensorFlow runners: real units for int8, dynamic batch, no silent layout changes, inspect."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy import api
from mdeploy.core import Format, ModelRef
from mdeploy.errors import InputError
from mdeploy.runners.tf_runner import TensorFlowRunner
from mdeploy.runners.tflite_runner import TFLiteRunner
from tests.conftest import run_cli


def test_int8_runner_quantizes_inputs_and_dequantizes_outputs(tf_files):
    runner = TFLiteRunner(ModelRef(tf_files["image_classifier_int8.tflite"], Format.TFLITE))
    (spec,) = runner.input_specs()
    assert spec.dtype == "float32" and spec.shape == ("batch", 16, 16, 3)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype("float32")
    out = runner.infer({"image": x})["output_0"]
    ref = TFLiteRunner(ModelRef(tf_files["image_classifier.tflite"], Format.TFLITE)).infer({"image": x})["output_0"]
    assert out.dtype == np.float32 and out.shape == (2, 5)
    cos = float((out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref))
    assert cos > 0.98


def test_runner_resizes_a_dynamic_batch(tf_files):
    runner = TFLiteRunner(ModelRef(tf_files["multi_io.tflite"], Format.TFLITE))
    for batch in (1, 4, 2):
        feed = {"image": np.zeros((batch, 8, 8, 1), np.float32), "features": np.ones((batch, 6), np.float32)}
        out = runner.infer(feed)
        assert list(out) == ["output_0", "output_1"] and out["output_0"].shape == (batch, 4)


def test_nchw_data_for_an_nhwc_model_is_an_error_not_a_transpose(tf_files):
    for runner in (TFLiteRunner(ModelRef(tf_files["image_classifier.tflite"], Format.TFLITE)),
                   TensorFlowRunner(ModelRef(tf_files["image_classifier_savedmodel"], Format.SAVEDMODEL))):
        with pytest.raises(InputError, match="axis 1 is 3"):
            runner.infer({"image": np.zeros((1, 3, 16, 16), np.float32)})


def test_keras_runner_and_savedmodel_runner_agree(tf_files):
    keras_runner = TensorFlowRunner(ModelRef(tf_files["multi_io.keras"], Format.KERAS))
    saved_runner = TensorFlowRunner(ModelRef(tf_files["multi_io_savedmodel"], Format.SAVEDMODEL))
    assert keras_runner.output_names() == ["classes", "score"]
    assert saved_runner.output_names() == ["output_0", "output_1"]
    rng = np.random.default_rng(1)
    feed = {"image": rng.standard_normal((3, 8, 8, 1)).astype("float32"), "features": rng.standard_normal((3, 6)).astype("float32")}
    a, b = keras_runner.infer(feed), saved_runner.infer(feed)
    np.testing.assert_allclose(a["classes"], b["output_0"], atol=1e-6)
    np.testing.assert_allclose(a["score"], b["output_1"], atol=1e-6)


def test_cli_validate_keras_against_int8_tflite_reports_cosine_and_top1(tf_files):
    result = run_cli("validate", tf_files["image_classifier.keras"], tf_files["image_classifier_int8.tflite"],
                     "--precision", "int8", "--data", tf_files["calib.npz"], "--json")
    assert result.code == 0, result.stderr
    (output,) = result.json["comparisons"][0]["outputs"]
    assert output["cosine"] > 0.99 and output["top1_agreement"] >= 0.9
    assert result.json["comparisons"][0]["tolerance"]["source"] == "int8 default"


def test_cli_inspect_int8_tflite_shows_quantization_ops_and_delegate_notes(tf_files):
    result = run_cli("inspect", tf_files["image_classifier_int8.tflite"], "--json")
    assert result.code == 0, result.stderr
    info = result.json["model"]
    assert info["precision"] == "int8"
    assert info["quantization"]["image"]["dtype"] == "int8" and info["quantization"]["image"]["scale"] > 0
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"} <= set(info["operators"])
    assert any("INT8" in n for n in info["delegate_notes"])


def test_inspect_savedmodel_and_keras(tf_files):
    saved = api.inspect(str(tf_files["image_classifier_savedmodel"])).data["model"]
    assert set(saved["signatures"]) == {"serve", "serving_default"}
    assert saved["inputs"] == [{"name": "image", "shape": ["batch", 16, 16, 3], "dtype": "float32"}]
    assert saved["variables"] > 0 and saved["parameters"] > 0
    keras_info = api.inspect(str(tf_files["image_classifier.keras"])).data["model"]
    assert keras_info["operators"]["BatchNormalization"] == 3 and keras_info["operators"]["DepthwiseConv2D"] == 1
    assert keras_info["parameters"] > 0 and keras_info["layers"] > 5
