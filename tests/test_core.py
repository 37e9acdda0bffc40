"""The value types: parsing what users type, recognising formats."""

import pytest

from mdeploy.core import Format, ModelRef, TensorSpec, format_for_output, parse_dynamic, tolerance_for
from mdeploy.errors import InputError


@pytest.mark.parametrize(
    ("text", "name", "shape", "dtype"),
    [
        ("x:1x3x224x224", "x", (1, 3, 224, 224), "float32"),
        ("input_ids:1,128:int64", "input_ids", (1, 128), "int64"),
        ("mask:2x16:bool", "mask", (2, 16), "bool"),
    ],
)
def test_input_spec_parses_name_shape_and_dtype(text, name, shape, dtype):
    spec = TensorSpec.parse(text)
    assert (spec.name, spec.shape, spec.dtype) == (name, shape, dtype)


@pytest.mark.parametrize("text", ["x", "x:", ":1x2", "x:1xa", "x:0x3", "x:1x3:notadtype", "x:-1x3"])
def test_input_spec_rejects_malformed_text(text):
    with pytest.raises(InputError):
        TensorSpec.parse(text)


def test_dynamic_axis_zero_is_called_batch_unless_named():
    assert parse_dynamic("x:0") == ("x", 0, "batch")
    assert parse_dynamic("ids:1:sequence") == ("ids", 1, "sequence")
    with pytest.raises(InputError):
        parse_dynamic("ids:one")


def test_spec_fits_never_casts_or_reshapes():
    import numpy as np

    spec = TensorSpec("x", ("batch", 3), "float32")
    assert spec.fits(np.zeros((5, 3), np.float32)) is None
    assert "dtype" in spec.fits(np.zeros((5, 3), np.float64))
    assert "axis 1" in spec.fits(np.zeros((5, 4), np.float32))
    assert "rank" in spec.fits(np.zeros((5, 3, 1), np.float32))


def test_formats_are_recognised_from_names(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.pt2").write_bytes(b"x")
    (tmp_path / "m.pt").write_bytes(b"x")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"x")
    assert ModelRef.parse(str(tmp_path / "m.onnx")).format == Format.ONNX
    assert ModelRef.parse(str(tmp_path / "m.pt2")).format == Format.PYTORCH_EXPORTED
    assert ModelRef.parse(str(tmp_path / "m.pt")).format == Format.TORCHSCRIPT
    assert ModelRef.parse(str(saved)).format == Format.SAVEDMODEL
    assert ModelRef.parse("fixtures/models/tiny_cnn.py:build").format == Format.PYTORCH_MODULE
    assert ModelRef.parse("json:loads").format == Format.PYTORCH_MODULE
    assert format_for_output(tmp_path / "out.tflite") == Format.TFLITE


def test_unknown_extension_and_missing_file_are_input_errors(tmp_path):
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(InputError, match="extension"):
        ModelRef.parse(str(tmp_path / "m.bin"))
    with pytest.raises(InputError, match="not found"):
        ModelRef.parse(str(tmp_path / "missing.onnx"))
    with pytest.raises(InputError, match="not a SavedModel"):
        ModelRef.parse(str(tmp_path))


def test_tolerance_overrides_keep_the_other_default():
    tol = tolerance_for("fp32", atol=1e-5)
    assert tol.atol == 1e-5 and tol.rtol == 1e-3 and tol.source == "user"
    assert tolerance_for("int8").min_cosine is not None


def test_language_model_folders_are_recognised(tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not a SavedModel"):
        ModelRef.parse(str(hf))  # config.json alone: no weights
    (hf / "model.safetensors").write_bytes(b"")
    assert ModelRef.parse(str(hf)).format == Format.HF_MODEL
    genai = tmp_path / "llm"
    genai.mkdir()
    (genai / "genai_config.json").write_text("{}")
    assert ModelRef.parse(str(genai)).format == Format.GENAI
    assert format_for_output(tmp_path / "out", Format.HF_MODEL) == Format.GENAI
    assert format_for_output(tmp_path / "out") == Format.SAVEDMODEL
