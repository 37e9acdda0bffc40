"""The fp16 step: the ONNX model converted to float16 (I/O kept float32) and validated against the float32 one on
onnxruntime (CPU) before any TensorRT build."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mdeploy.errors import ConversionError
from mdeploy.converters.tensorrt_fp16 import float16_model
from mdeploy.converters.tensorrt_profiles import Profile


def test_the_float16_model_keeps_float32_io_and_matches_on_cpu(models, tmp_path):
    import onnx
    import onnxruntime as ort

    profile = Profile("x", (1, 16), (8, 16), (32, 16), "--shapes")
    path, comparison = float16_model(models["mlp"], tmp_path / "mlp.fp16.onnx", [profile])
    model = onnx.load(str(path))
    assert {i.data_type for i in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert comparison.passed and comparison.tolerance.source == "fp16 default"
    out = comparison.outputs[0]
    assert out.shape == [8, 10]  # run at the profile's OPT shape
    assert 0 < out.max_abs_error < 1e-2  # float16 changed the numbers, within the tolerance
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(models["mlp"]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    half = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert half.dtype == np.float32 and np.abs(ref - half).max() < 1e-2


def test_a_model_that_overflows_in_float16_is_refused(models, tmp_path):
    profile = Profile("x", (2, 8), (2, 8), (2, 8), "model")
    with pytest.raises(ConversionError, match="float16 ONNX model of overflow.onnx does not compute what the float32 one"):
        float16_model(models["overflow"], tmp_path / "over.fp16.onnx", [profile])


def test_the_cli_reports_the_fp16_problem_before_the_environment(cli, models, tmp_path):
    result = cli("convert", models["overflow"], "-o", tmp_path / "over.engine", "--precision", "fp16")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: the float16 ONNX model of overflow.onnx does not compute"), result.stderr
    assert "Traceback" not in result.stderr
    assert [p for p in os.listdir(tmp_path) if "over" in p] == []  # the float16 model lived in the staging folder only
