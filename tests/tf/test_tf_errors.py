"""Every TF-side error a user can cause: exit 2, one `error:` line (and a hint), no traceback, no output file,
the input untouched. And the rule that ONNX-only commands never import TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.checks import assert_clean_error, without_module
from tests.conftest import run_cli
from tests.tf.helpers import tree_hash


def _convert_fails(src: Path, out: Path, *args: str, fragments: tuple[str, ...] = ()) -> None:
    before = tree_hash(src)
    result = run_cli("convert", src, "-o", out, *args)
    assert_clean_error(result, *fragments, out=out, no_stdout=True)
    assert tree_hash(src) == before


def test_a_folder_that_is_not_a_savedmodel(tmp_path):
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    _convert_fails(folder, tmp_path / "x.tflite", fragments=("not a SavedModel",))


def test_a_savedmodel_with_no_signatures(tf_files, tmp_path):
    _convert_fails(tf_files["no_signature_savedmodel"], tmp_path / "x.tflite", fragments=("has no signatures",))


def test_a_missing_signature_lists_those_that_exist(tf_files, tmp_path):
    _convert_fails(tf_files["image_classifier_savedmodel"], tmp_path / "x.onnx", "--signature", "predict",
                   fragments=("no signature 'predict'", "serving_default", "--signature"))


def test_a_corrupt_tflite(tf_files, tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(tf_files["image_classifier.tflite"].read_bytes()[:200])
    _convert_fails(bad, tmp_path / "x.onnx", fragments=("broken.tflite",))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all")
    result = run_cli("inspect", garbage)
    assert_clean_error(result, "not a TFLite model")


def test_a_corrupt_keras_file(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    _convert_fails(bad, tmp_path / "x.tflite", fragments=("not a Keras archive",))


def test_a_keras_file_with_a_lambda_layer_is_refused_with_the_flag_that_allows_it(tf_files, tmp_path):
    _convert_fails(tf_files["lambda_model.keras"], tmp_path / "x.onnx",
                   fragments=("Lambda", "safe mode", "--unsafe-deserialization"))


def test_unsafe_deserialization_flag_allows_a_trusted_lambda_model(tf_files, tmp_path):
    from mdeploy import api

    report = api.convert(str(tf_files["lambda_model.keras"]), str(tmp_path / "lam.onnx"), unsafe_deserialization=True)
    assert report.passed


def test_a_flag_that_applies_to_no_hop_is_an_error(tf_files, tmp_path):
    _convert_fails(tf_files["multi_io.keras"], tmp_path / "x.onnx", "--precision", "fp16",
                   fragments=("--precision does not apply",))


@pytest.mark.parametrize("module", ["tensorflow", "ai_edge_litert"])
def test_a_missing_tensorflow_extra_names_the_pip_extra(tf_files, tmp_path, module):
    """Hide the framework behind an import hook that refuses it, as if it were not installed."""
    src = tf_files["image_classifier_savedmodel"] if module == "tensorflow" else tf_files["image_classifier.tflite"]
    out = tmp_path / ("x.tflite" if module == "tensorflow" else "x.json")
    args = ("convert", src, "-o", out) if module == "tensorflow" else ("inspect", src)
    result = run_cli(*args, env=without_module(tmp_path, module))
    assert_clean_error(result, "pip install 'mdeploy[tensorflow]'", out=out)


def test_help_and_onnx_only_commands_import_no_tensorflow(tf_files, tmp_path):
    onnx_model = tmp_path / "cls.onnx"
    from mdeploy import api

    api.convert(str(tf_files["image_classifier_savedmodel"]), str(onnx_model), no_validate=True)
    probe = (
        "import sys\n"
        "from mdeploy.cli.app import main\n"
        "for argv in (['mdeploy', '--help'], ['mdeploy', 'inspect', sys.argv[1], '--json'], ['mdeploy', 'plugins', '--json']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (argv, exc.code)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'ai_edge_litert') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(onnx_model)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stderr
