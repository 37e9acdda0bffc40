"""Every mistake a user can make with `mdeploy quantize`: one error line, exit 2, and no file left behind."""

from __future__ import annotations

import numpy as np
import pytest

from tests.checks import assert_clean_error


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_already_quantized_model_is_refused(static_digits, out_dir, cli):
    quantized, _ = static_digits
    result = cli("quantize", quantized, "-o", out_dir / "q.onnx")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "already quantized" in result.stderr


def test_calibration_data_of_the_wrong_shape_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "bad.npz", image=np.zeros((4, 1, 7, 7), np.float32))
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "bad.npz")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "does not fit" in result.stderr


def test_calibration_data_with_the_wrong_names_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "names.npz", pixels=np.zeros((4, 1, 7, 7), np.float32))  # of a fitting shape it would feed `image`
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "names.npz")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "missing image" in result.stderr


def test_empty_calibration_set_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 1, 8, 8), np.float32))
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "empty.npz")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "empty" in result.stderr


def test_exclude_naming_no_node_is_refused(digits, out_dir, cli):
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--exclude", "/9/NoSuchNode")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "/9/NoSuchNode" in result.stderr


@pytest.mark.parametrize(("spec", "says"), [
    ("cos>0.9", "cannot parse --max-error 'cos>0.9'"),
    ("cosine>=abc", "cannot parse --max-error 'cosine>=abc'"),
    ("speed>=2", "unknown metric 'speed' in --max-error 'speed>=2'"),
    ("accuracy-drop>=0.01", "--max-error accuracy-drop takes <=, not >="),
    ("", "cannot parse --max-error ''"),
])
def test_unparseable_max_error_is_refused(graphs, out_dir, cli, spec, says):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--max-error", spec)
    assert assert_clean_error(result, hint=True, no_stdout=True, folder=out_dir) == f"error: {says}"


def test_accuracy_bar_without_labels_is_refused(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--max-error", "accuracy-drop<=0.01")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "labels" in result.stderr


def test_tflite_only_flag_does_not_apply_to_onnx(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--int8-io")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "--int8-io does not apply" in result.stderr


def test_output_with_the_wrong_extension_is_refused(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.tflite")
    assert_clean_error(result, no_stdout=True, folder=out_dir)
    assert "name the output *.onnx, not 'q.tflite'" in result.stderr
