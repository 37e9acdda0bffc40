"""Every mistake a user can make with `mdeploy quantize`: one error line, exit 2, and no file left behind."""

from __future__ import annotations

import numpy as np
import pytest


def _clean(folder) -> None:
    assert [p.name for p in folder.iterdir()] == [], "nothing may be left behind"


def _one_error(result) -> None:
    assert result.code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2 and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def test_already_quantized_model_is_refused(static_digits, out_dir, cli):
    quantized, _ = static_digits
    result = cli("quantize", quantized, "-o", out_dir / "q.onnx")
    _one_error(result)
    assert "already quantized" in result.stderr
    _clean(out_dir)


def test_calibration_data_of_the_wrong_shape_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "bad.npz", image=np.zeros((4, 1, 7, 7), np.float32))
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "bad.npz")
    _one_error(result)
    assert "does not fit" in result.stderr
    _clean(out_dir)


def test_calibration_data_with_the_wrong_names_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "names.npz", pixels=np.zeros((4, 1, 7, 7), np.float32))  # of a fitting shape it would feed `image`
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "names.npz")
    _one_error(result)
    assert "missing image" in result.stderr
    _clean(out_dir)


def test_empty_calibration_set_is_refused(digits, tmp_path, out_dir, cli):
    np.savez(tmp_path / "empty.npz", image=np.zeros((0, 1, 8, 8), np.float32))
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--calib-data", tmp_path / "empty.npz")
    _one_error(result)
    assert "empty" in result.stderr
    _clean(out_dir)


def test_exclude_naming_no_node_is_refused(digits, out_dir, cli):
    result = cli("quantize", digits["model"], "-o", out_dir / "q.onnx", "--exclude", "/9/NoSuchNode")
    _one_error(result)
    assert "/9/NoSuchNode" in result.stderr
    _clean(out_dir)


@pytest.mark.parametrize("spec", ["cos>0.9", "cosine>=abc", "speed>=2", "accuracy-drop>=0.01", ""])
def test_unparseable_max_error_is_refused(graphs, out_dir, cli, spec):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--max-error", spec)
    _one_error(result)
    assert "--max-error" in result.stderr or "metric" in result.stderr
    _clean(out_dir)


def test_accuracy_bar_without_labels_is_refused(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--max-error", "accuracy-drop<=0.01")
    _one_error(result)
    assert "labels" in result.stderr
    _clean(out_dir)


def test_tflite_only_flag_does_not_apply_to_onnx(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.onnx", "--int8-io")
    _one_error(result)
    assert "--int8-io does not apply" in result.stderr
    _clean(out_dir)


def test_output_with_the_wrong_extension_is_refused(graphs, out_dir, cli):
    result = cli("quantize", graphs["mlp"], "-o", out_dir / "q.tflite")
    _one_error(result)
    _clean(out_dir)
