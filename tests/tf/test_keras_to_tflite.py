"""SavedModel/Keras -> TFLite at fp32 and fp16, over the registry's multi-hop plan, validated after conversion."""

from __future__ import annotations

import numpy as np
import pytest

from mdeploy import api, registry
from mdeploy.core import Format, TensorSpec
from mdeploy.errors import InputError
from mdeploy.frameworks import tflite_models
from tests.conftest import run_cli


def _outputs(report: dict) -> list[dict]:
    return [o for c in report["comparisons"] for o in c["outputs"]]


def test_registry_plans_keras_to_tflite_through_savedmodel():
    chain = registry.plan_conversion(Format.KERAS, Format.TFLITE)
    assert [(c.sources[0], c.target) for c in chain] == [(Format.KERAS, Format.SAVEDMODEL), (Format.SAVEDMODEL, Format.TFLITE)]


def test_cli_keras_to_tflite_reports_both_hops_and_validates_at_two_batch_sizes(tf_files, tmp_path):
    out = tmp_path / "cls.tflite"
    result = run_cli("convert", tf_files["image_classifier.keras"], "-o", out, "--json")
    assert result.code == 0, result.stderr
    report = result.json
    hops = [s["name"] for s in report["steps"] if s["name"].startswith("convert")]
    assert hops == ["convert keras -> savedmodel", "convert savedmodel -> tflite"]
    assert [c["label"] for c in report["comparisons"]] == ["example inputs", "batch=3"]
    for output in _outputs(report):
        assert output["passed"] and output["max_abs_error"] < 1e-4 and output["cosine"] > 0.99999
    assert report["comparisons"][0]["tolerance"]["source"] == "fp32 default"
    assert "tensorflow" in report["environment"]["versions"]
    assert result.stderr.strip() == ""
    assert out.is_file() and not list(tmp_path.glob(".*tmp"))


def test_savedmodel_to_tflite_fp16_stores_float16_weights_and_passes_the_fp16_tolerance(tf_files, tmp_path):
    out = tmp_path / "cls16.tflite"
    report = api.convert(str(tf_files["image_classifier_savedmodel"]), str(out), precision="fp16")
    assert report.passed
    assert report.comparisons[0].tolerance.source == "fp16 default"
    assert all(o.cosine > 0.999 for c in report.comparisons for o in c.outputs)
    info = tflite_models.describe(out)  # (the model is too tiny for fp16 to shrink the file)
    assert info["precision"] == "fp16"
    assert info["tensor_dtypes"].get("float16", 0) > 0 and "DEQUANTIZE" in info["operators"]


def test_multi_io_keras_to_tflite_matches_every_output(tf_files, tmp_path):
    report = api.convert(str(tf_files["multi_io.keras"]), str(tmp_path / "mio.tflite"))
    assert report.passed
    assert len(report.comparisons[0].outputs) == 2
    assert max(o.max_abs_error for c in report.comparisons for o in c.outputs) < 1e-4


def test_signature_option_picks_a_non_default_signature(tf_files, tmp_path):
    report = api.convert(str(tf_files["predict_only_savedmodel"]), str(tmp_path / "p.tflite"), signature="predict")
    assert report.passed
    assert report.steps[0].details["signature"] == "predict"


def test_missing_signature_lists_the_ones_that_exist(tf_files, tmp_path):
    with pytest.raises(InputError) as err:
        api.convert(str(tf_files["image_classifier_savedmodel"]), str(tmp_path / "x.tflite"), signature="nope")
    assert "no signature 'nope'" in err.value.message
    assert "serving_default" in err.value.hint and "serve" in err.value.hint
    assert not (tmp_path / "x.tflite").exists()


def test_input_option_fixes_the_batch_dimension(tf_files, tmp_path):
    out = tmp_path / "fixed.tflite"
    report = api.convert(str(tf_files["image_classifier_savedmodel"]), str(out), inputs=[TensorSpec("image", (2, 16, 16, 3))])
    assert report.passed
    assert [c.label for c in report.comparisons] == ["example inputs"]  # nothing dynamic left
    spec = tflite_models.io(tflite_models.interpreter(out))[0][0]
    assert spec.shape_signature == (2, 16, 16, 3)


def test_precision_int8_on_convert_points_to_quantize(tf_files, tmp_path):
    with pytest.raises(InputError) as err:
        api.convert(str(tf_files["image_classifier_savedmodel"]), str(tmp_path / "q.tflite"), precision="int8")
    assert "mdeploy quantize" in err.value.hint


def test_tflite_result_runs_the_same_as_keras_on_a_batch_of_five(tf_files, tmp_path):
    """A direct check beside mdeploy's own validation: the frameworks' own outputs, side by side."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    model = keras.saving.load_model(tf_files["image_classifier.keras"])
    x = np.random.default_rng(5).standard_normal((5, 16, 16, 3)).astype("float32")
    runner = Interpreter(model_path=str(tf_files["image_classifier.tflite"])).get_signature_runner("serving_default")
    np.testing.assert_allclose(runner(image=x)["output_0"], model(x).numpy(), atol=1e-4)
