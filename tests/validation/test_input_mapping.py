"""Models whose inputs disagree (issue 16.2).

Two models that take different inputs (a CNN's `input` vs a BERT's `input_ids`/`attention_mask`, or one float input
vs one id input) are exit 2 with or without --data: random inputs never paper over a signature mismatch. And the
same single-input model carries another input name in each format (`.keras` `input_layer`, SavedModel `keras_tensor`,
TFLite `serving_default_keras_tensor:0`): the only array of a data file feeds the only input whatever its name when
its dtype and shape fit, with a note, in every verb that reads data. Real ONNX graphs and a real Keras -> TFLite
conversion.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fixtures.onnx_graphs import small_graph
from mdeploy import api
from tests.checks import assert_clean_error
from tests.conftest import run_cli

FLOAT, INT64 = 1, 7
WEIGHTS = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def linear(path: Path, name: str) -> Path:
    """NAME[batch, 4] @ W -> logits[batch, 3]: the same model under any input name."""
    from onnx import helper, numpy_helper

    return small_graph(path, [helper.make_node("MatMul", [name, "w"], ["logits"])], [(name, FLOAT, ["batch", 4])],
                 [("logits", FLOAT, ["batch", 3])], [numpy_helper.from_array(WEIGHTS, "w")])


def cnn_like(path: Path) -> Path:
    from onnx import helper

    return small_graph(path, [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[2, 3], keepdims=0)],
                 [("input", FLOAT, ["batch", 3, 8, 8])], [("logits", FLOAT, ["batch", 3])])


def bert_like(path: Path, mask: bool = True) -> Path:
    """input_ids (and attention_mask) [batch, seq] int64 -> logits[batch, 1]."""
    from onnx import helper

    nodes = [helper.make_node("Add", ["input_ids", "attention_mask"], ["s"])] if mask else \
        [helper.make_node("Identity", ["input_ids"], ["s"])]
    nodes += [helper.make_node("Cast", ["s"], ["f"], to=FLOAT), helper.make_node("ReduceMean", ["f"], ["logits"], axes=[1])]
    inputs = [("input_ids", INT64, ["batch", "seq"])] + ([("attention_mask", INT64, ["batch", "seq"])] if mask else [])
    return small_graph(path, nodes, inputs, [("logits", FLOAT, ["batch", 1])])


@pytest.mark.parametrize("with_data", [False, True])
def test_a_cnn_and_a_bert_take_different_inputs_exit_2_with_or_without_data(tmp_path, with_data):
    """Was exit 1 without --data ('FAILED ... logits': the candidate could not run the CNN's random input)."""
    cnn, bert = cnn_like(tmp_path / "cnn.onnx"), bert_like(tmp_path / "bert.onnx")
    data = tmp_path / "images.npz"
    np.savez(data, input=np.zeros((2, 3, 8, 8), np.float32))
    result = run_cli("validate", cnn, bert, *(["--data", data] if with_data else []))
    error = assert_clean_error(result, hint=True, no_stdout=True)
    assert "the models take different inputs" in error
    assert "input[batch, 3, 8, 8]:float32" in error and "input_ids[batch, seq]:int64" in error and "attention_mask" in error


def test_one_input_each_but_another_dtype_is_a_different_signature(tmp_path):
    """Same number of inputs, matched by position, but float images vs int64 ids: exit 2, not a failed comparison."""
    result = run_cli("validate", linear(tmp_path / "a.onnx", "input"), bert_like(tmp_path / "ids.onnx", mask=False))
    error = assert_clean_error(result, hint=True, no_stdout=True)
    assert "the models take different inputs" in error and "input_ids" in error


def test_the_only_array_feeds_the_only_input_whatever_its_name(tmp_path):
    """Was exit 2 ('missing input; unknown pixels')."""
    a, b = linear(tmp_path / "a.onnx", "input"), linear(tmp_path / "b.onnx", "x")
    data = tmp_path / "d.npz"
    np.savez(data, pixels=np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32))
    result = run_cli("validate", a, b, "--data", data)
    assert result.code == 0, result.stderr
    assert "note: --data: its only array 'pixels' fed to the model's only input 'input'" in result.stdout
    assert "input names differ; matched by position (input->x)" in result.stdout


def test_the_only_array_that_fits_no_reading_is_still_refused_by_name(tmp_path):
    a = linear(tmp_path / "a.onnx", "input")
    data = tmp_path / "d.npz"
    np.savez(data, pixels=np.zeros((5, 7), np.float32))
    result = run_cli("validate", a, a, "--data", data)
    error, hint = assert_clean_error(result, hint=True, no_stdout=True), result.stderr.strip().splitlines()[1]
    assert "missing input; unknown pixels" in error
    assert "the only array 'pixels' does not fit the only input 'input' either: shape [5, 7]: axis 1 is 7" in error
    assert "input[batch, 4]:float32" in hint


def test_quantize_calibration_data_of_another_name_with_a_note(tmp_path):
    """The same rule for every verb that reads data: quantize's --calib-data (and the proof on it)."""
    model = linear(tmp_path / "a.onnx", "input")
    data = tmp_path / "calib.npz"
    np.savez(data, images=np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32))
    report = api.quantize(str(model), str(tmp_path / "q.onnx"), calib_data=str(data), mode="static")
    assert (tmp_path / "q.onnx").is_file()
    notes = report.notes + [n for c in report.comparisons for n in c.notes]
    assert "--calib-data: its only array 'images' fed to the model's only input 'input'" in notes, notes


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="the tensorflow extra is not installed")
def test_keras_and_its_tflite_conversion_share_one_array_whatever_its_name(tmp_path):
    """`.keras` calls its input `input_layer`, the SavedModel `keras_tensor`: data saved under the SavedModel's name
    validates the .keras model against the .tflite `mdeploy convert` made of it (was exit 2)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(8,))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(16, activation="relu")(inputs)))
    model.save(tmp_path / "m.keras")
    api.convert(str(tmp_path / "m.keras"), str(tmp_path / "m.tflite"))
    data = tmp_path / "x.npz"
    np.savez(data, keras_tensor=np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32))
    result = run_cli("validate", tmp_path / "m.keras", tmp_path / "m.tflite", "--data", data)
    assert result.code == 0, result.stderr
    assert "note: --data: its only array 'keras_tensor' fed to the model's only input 'input_layer'" in result.stdout


def test_package_validation_data_of_another_name_with_a_note(tmp_path):
    model = linear(tmp_path / "a.onnx", "input")
    data = tmp_path / "d.npz"
    np.savez(data, pixels=np.ones((3, 4), np.float32))
    report = api.package(str(model), "kserve", str(tmp_path / "isvc"), data=str(data))
    assert report and "--data: its only array 'pixels' fed to the model's only input 'input'" in report.notes
