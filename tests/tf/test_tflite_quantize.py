"""The TFLite INT8 quantize pass, run directly (the `mdeploy quantize` verb finds it through the registry)."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy import api, registry
from mdeploy.core import Format, ModelRef
from mdeploy.errors import ConversionError, InputError
from mdeploy.frameworks import tflite_models
from mdeploy.quantization.base import build_pass_options
from mdeploy.quantization.tflite_quantize import TFLiteQuantize
from mdeploy.runners.tflite_runner import TFLiteRunner


def _run(src, out, **given):
    options = build_pass_options(TFLiteQuantize, given)
    fmt = Format.KERAS if str(src).endswith(".keras") else Format.SAVEDMODEL
    return TFLiteQuantize().run(ModelRef(src, fmt), out, options)


def test_the_quantize_verb_finds_this_pass_for_savedmodel_and_keras():
    assert registry.pass_for("quantize", Format.SAVEDMODEL) is TFLiteQuantize
    assert registry.pass_for("quantize", Format.KERAS) is TFLiteQuantize


def test_dynamic_range_keeps_float_io_and_passes_int8_validation(tf_files, tmp_path):
    out = tmp_path / "dyn.tflite"
    result = _run(tf_files["image_classifier_savedmodel"], out, mode="dynamic")
    assert result.details["mode"] == "dynamic"
    info = tflite_models.describe(out)
    assert info["precision"] in ("dynamic-int8", "fp32")  # tiny convs may stay float; weights of Dense are int8
    report = api.validate(str(tf_files["image_classifier_savedmodel"]), str(out), precision="int8", samples=8)
    assert report.passed, report.comparisons[0].outputs


def test_static_int8_io_is_full_integer_and_close_to_the_source_in_real_units(tf_files, tmp_path):
    out = tmp_path / "int8.tflite"
    result = _run(tf_files["image_classifier.keras"], out, mode="static", calib_data=str(tf_files["calib.npz"]), int8_io=True)
    assert result.details["float_ops"] == []
    info = tflite_models.describe(out)
    assert info["precision"] == "int8"
    assert info["inputs"][0]["dtype"] == "int8" and "quantization" in info["inputs"][0]
    runner = TFLiteRunner(ModelRef(out, Format.TFLITE))
    assert runner.input_specs()[0].dtype == "float32"  # the runner speaks real values
    report = api.validate(str(tf_files["image_classifier.keras"]), str(out), precision="int8", data=str(tf_files["calib.npz"]))
    (output,) = report.comparisons[0].outputs
    assert report.passed, output.reasons
    assert output.cosine > 0.99 and output.top1_agreement >= 0.9
    assert report.comparisons[0].tolerance.source == "int8 default"


def test_static_on_a_multi_input_model(tf_files, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "mio.npz"
    np.savez(data, image=rng.standard_normal((8, 8, 8, 1)).astype("float32"), features=rng.standard_normal((8, 6)).astype("float32"))
    out = tmp_path / "mio8.tflite"
    _run(tf_files["multi_io_savedmodel"], out, mode="static", calib_data=str(data))
    report = api.validate(str(tf_files["multi_io_savedmodel"]), str(out), precision="int8", data=str(data))
    assert report.passed, [o.reasons for o in report.comparisons[0].outputs]


def test_ops_without_int8_kernels_are_an_error_naming_them(tf_files, tmp_path):
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 4)).astype("float32"))
    out = tmp_path / "sin.tflite"
    with pytest.raises(ConversionError) as err:
        _run(tf_files["float_only_savedmodel"], out, mode="static", calib_data=str(data))
    assert "SIN" in err.value.message and "--allow-float-fallback" in err.value.hint
    assert not out.exists()
    result = _run(tf_files["float_only_savedmodel"], out, mode="static", calib_data=str(data), allow_float_fallback=True)
    assert "SIN" in result.details["float_ops"]
    assert any("left in float" in n for n in result.notes)


def test_calibration_data_that_does_not_fit_the_inputs_is_refused(tf_files, tmp_path):
    bad = tmp_path / "nchw.npz"
    np.savez(bad, image=np.zeros((4, 3, 16, 16), np.float32))  # NCHW for an NHWC model
    with pytest.raises(InputError) as err:
        _run(tf_files["image_classifier_savedmodel"], tmp_path / "q.tflite", mode="static", calib_data=str(bad))
    assert "calibration data" in err.value.message and "image" in err.value.message
    wrong_name = tmp_path / "named.npz"
    np.savez(wrong_name, pixels=np.zeros((4, 16, 16, 1), np.float32))  # of a fitting shape it would feed `image`
    with pytest.raises(InputError, match="missing image"):
        _run(tf_files["image_classifier_savedmodel"], tmp_path / "q.tflite", mode="static", calib_data=str(wrong_name))
    assert not (tmp_path / "q.tflite").exists()


def test_static_without_data_and_int8_io_with_dynamic_are_usage_errors(tf_files, tmp_path):
    with pytest.raises(InputError, match="needs calibration data"):
        _run(tf_files["image_classifier_savedmodel"], tmp_path / "q.tflite", mode="static")
    with pytest.raises(InputError, match="--int8-io applies to --mode static"):
        _run(tf_files["image_classifier_savedmodel"], tmp_path / "q.tflite", mode="dynamic", int8_io=True)
