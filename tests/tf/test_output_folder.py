"""Only the requested output reaches the user's folder: intermediate hops and scratch files stay in staging.

A multi-hop conversion (keras -> savedmodel -> tflite) used to leave its `hop0` SavedModel beside the result, and
the next multi-hop conversion into the same folder then failed on it. These tests run several writers into one
folder, twice, and assert the exact set of files there.
"""

from __future__ import annotations

from tests.conftest import run_cli


def _listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_two_multi_hop_conversions_into_one_folder_leave_only_their_outputs(tf_files, tmp_path):
    first = run_cli("convert", tf_files["image_classifier.keras"], "-o", tmp_path / "cls.tflite", "--quiet")
    assert first.code == 0, first.stderr
    assert _listing(tmp_path) == {"cls.tflite"}
    second = run_cli("convert", tf_files["multi_io.keras"], "-o", tmp_path / "mio.tflite", "--quiet")
    assert second.code == 0, second.stderr
    assert _listing(tmp_path) == {"cls.tflite", "mio.tflite"}
    again = run_cli("convert", tf_files["image_classifier.keras"], "-o", tmp_path / "cls.tflite", "--quiet", "--force")
    assert again.code == 0, again.stderr
    assert _listing(tmp_path) == {"cls.tflite", "mio.tflite"}


def test_a_failed_multi_hop_conversion_leaves_nothing_behind(tf_files, tmp_path):
    result = run_cli("convert", tf_files["image_classifier.keras"], "-o", tmp_path / "cls.tflite", "--input", "nosuch:1x2")
    assert result.code == 2
    assert _listing(tmp_path) == set()


def test_quantize_from_keras_and_a_report_leave_only_what_was_asked_for(tf_files, tmp_path):
    for _ in range(2):
        result = run_cli("quantize", tf_files["image_classifier.keras"], "-o", tmp_path / "cls.int8.tflite",
                         "--calib-data", tf_files["calib.npz"], "--quiet", "--force")
        assert result.code in (0, 1), result.stderr
        assert _listing(tmp_path) == {"cls.int8.tflite"}
    for _ in range(2):
        result = run_cli("validate", tf_files["image_classifier.keras"], tf_files["image_classifier.tflite"],
                         "--report", tmp_path / "report.xml", "--quiet")
        assert result.code == 0, result.stderr
    assert _listing(tmp_path) == {"cls.int8.tflite", "report.xml"}
