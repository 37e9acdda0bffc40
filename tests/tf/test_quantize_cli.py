"""`mdeploy quantize` on Keras/SavedModel sources, through the real entry point, reaching the TFLite pass."""

from __future__ import annotations

import numpy as np

from tests.checks import assert_clean_error
from tests.conftest import run_cli
from tests.tf.helpers import tree_hash


def test_cli_static_int8_io_quantize_of_a_keras_model_is_proven_on_the_data(tf_files, tmp_path):
    out = tmp_path / "q.tflite"
    result = run_cli("quantize", tf_files["image_classifier.keras"], "-o", out, "--mode", "static",
                     "--calib-data", tf_files["calib.npz"], "--int8-io", "--json")
    assert result.code == 0, result.stderr
    report = result.json
    (output,) = [o for c in report["comparisons"] for o in c["outputs"]]
    assert output["cosine"] > 0.99 and output["top1_agreement"] >= 0.9
    assert out.is_file()


def test_cli_calibration_data_that_does_not_fit_exits_2_and_writes_nothing(tf_files, tmp_path):
    bad = tmp_path / "nchw.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.float32))
    src = tf_files["image_classifier_savedmodel"]
    before = tree_hash(src)
    out = tmp_path / "q.tflite"
    result = run_cli("quantize", src, "-o", out, "--mode", "static", "--calib-data", bad)
    assert_clean_error(result, "image", out=out)
    assert tree_hash(src) == before
