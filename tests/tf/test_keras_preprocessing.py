"""Keras models with preprocessing layers inside (Rescaling, Normalization, as in EfficientNet and ConvNeXt).

Keras 3 keeps a Normalization layer's mean and variance as plain tensors that a traced function captures;
tf2onnx used to list them as extra required ONNX inputs, so the converted model could not be called. These
tests hold that the ONNX model takes exactly the Keras model's inputs, from `.keras` and from a SavedModel,
and computes what Keras computes on real pixel values.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from tests.checks import assert_clean_error
from tests.conftest import run_cli

INPUTS = {"features": ["batch", 4], "image": ["batch", 16, 16, 3]}


def _onnx_inputs(path) -> dict[str, list]:
    model = onnx.load(str(path))
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}


def _convert(src, out) -> dict:
    result = run_cli("convert", src, "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and [c["label"] for c in report["comparisons"]] == ["example inputs", "batch=3"]
    assert all(o["max_abs_error"] < 1e-5 for c in report["comparisons"] for o in c["outputs"])
    return report


def test_cli_keras_with_normalization_converts_to_onnx_that_takes_only_the_models_inputs(tf_files, tmp_path):
    out = tmp_path / "pre.onnx"
    _convert(tf_files["preprocessing.keras"], out)
    assert _onnx_inputs(out) == INPUTS
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits"]


def test_cli_savedmodel_with_normalization_converts_to_onnx_that_takes_only_the_signatures_inputs(tf_files, tmp_path):
    out = tmp_path / "pre_sm.onnx"
    report = _convert(tf_files["preprocessing_savedmodel"], out)
    assert _onnx_inputs(out) == INPUTS
    assert report["steps"][0]["details"]["signature"] == "serving_default"


def test_onnx_model_normalizes_real_pixels_like_keras(tf_files, tmp_path):
    """Validation feeds standard-normal values; here the image is pixels in 0..255, the range the statistics
    were adapted on, so a mean or variance folded wrongly (or dropped) changes the logits far beyond 1e-4."""
    import keras

    out = tmp_path / "pre_pixels.onnx"
    assert run_cli("convert", tf_files["preprocessing.keras"], "-o", out, "--no-validate").code == 0
    rng = np.random.default_rng(11)
    feed = {"image": rng.uniform(0, 255, (5, 16, 16, 3)).astype("float32"),
            "features": (rng.standard_normal((5, 4)) * 3 + 2).astype("float32")}
    model = keras.saving.load_model(str(tf_files["preprocessing.keras"]), compile=False)
    expected = model(feed, training=False).numpy()
    (got,) = ort.InferenceSession(str(out)).run(None, feed)
    assert np.abs(expected).max() > 0.1  # the logits depend on the inputs: the comparison means something
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_cli_keras_with_normalization_still_converts_to_tflite(tf_files, tmp_path):
    out = tmp_path / "pre.tflite"
    result = run_cli("convert", tf_files["preprocessing.keras"], "-o", out, "--json")
    assert result.code == 0, result.stderr
    assert all(o["passed"] and o["max_abs_error"] < 1e-4 for c in result.json["comparisons"] for o in c["outputs"])


def test_cli_lookup_table_is_one_error_line_and_no_output(tf_files, tmp_path):
    """A hash table (IntegerLookup) cannot be frozen into a constant: refused clearly, never an ONNX model with
    the table handle as an input or an unknown TensorFlow op inside."""
    out = tmp_path / "lookup.onnx"
    result = run_cli("convert", tf_files["lookup.keras"], "-o", out)
    error = assert_clean_error(result, hint=True, folder=tmp_path)
    assert error.startswith("error: the model captures state that cannot become an ONNX constant: ") and "Lookup" in error


def test_fixing_the_batch_of_one_input_gives_every_input_that_batch_in_validation(tf_files, tmp_path):
    """`--input image:2x...` alone: the other input (features, dynamic batch) must come in at batch 2 as well, or the
    Keras reference fails at its Concatenate."""
    out = tmp_path / "pre2.onnx"
    result = run_cli("convert", tf_files["preprocessing.keras"], "-o", out, "--input", "image:2x16x16x3", "--json")
    assert result.code == 0, result.stderr
    assert all(o["passed"] for c in result.json["comparisons"] for o in c["outputs"])
