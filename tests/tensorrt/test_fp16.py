"""The fp16 step: the ONNX model converted to float16 (I/O kept float32) by converters/float16.py, the function
`convert --precision fp16` to ONNX uses too, and validated against the float32 one on onnxruntime (CPU) before any
TensorRT build."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mdeploy.errors import ConversionError
from mdeploy.converters.onnx_to_tensorrt import float16_model
from mdeploy.converters.tensorrt_profiles import Profile


def test_the_float16_model_keeps_float32_io_and_matches_on_cpu(models, tmp_path):
    import onnx
    import onnxruntime as ort

    profile = Profile("x", (1, 16), (8, 16), (32, 16), "--shapes")
    made, comparison = float16_model(models["mlp"], tmp_path / "mlp.fp16.onnx", [profile])
    path = made.path
    assert made.kept_fp32 == []
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


def test_a_node_whose_weight_overflows_float16_stays_float32_and_the_model_matches(models, tmp_path):
    import onnx

    profile = Profile("x", (2, 8), (2, 8), (2, 8), "model")
    made, comparison = float16_model(models["overflow"], tmp_path / "over.fp16.onnx", [profile])
    assert [(k["node"], k["op_type"]) for k in made.kept_fp32] == [("scale", "Mul")]
    assert "initializer k holds values up to 1e+05" in made.kept_fp32[0]["reason"]
    assert comparison.passed  # x * 1e5 computed in float32: no infinity, no clipping to 65504
    model = onnx.load(str(made.path))
    assert {i.name: i.data_type for i in model.graph.initializer}["k"] == onnx.TensorProto.FLOAT


def test_a_model_that_loses_its_result_in_float16_is_refused(models, tmp_path):
    profile = Profile("x", (2, 8), (2, 8), (2, 8), "model")
    with pytest.raises(ConversionError, match="float16 ONNX model of cancel.onnx does not compute what the float32 one"):
        float16_model(models["cancel"], tmp_path / "cancel.fp16.onnx", [profile])


def test_the_cli_reports_the_fp16_problem_before_the_environment(cli, models, tmp_path):
    result = cli("convert", models["cancel"], "-o", tmp_path / "cancel.engine", "--precision", "fp16")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: the float16 ONNX model of cancel.onnx does not compute"), result.stderr
    assert "Traceback" not in result.stderr
    assert [p for p in os.listdir(tmp_path) if "cancel" in p] == []  # the float16 model lived in the staging folder only


def test_keep_fp32_reaches_the_tensorrt_fp16_step(cli, models, tmp_path):
    """The same model as above, its Mul and Sub kept float32 with --keep-fp32: the float16 step now passes, and the
    command goes on to the build (which, without TensorRT and a GPU, is the environment's refusal instead)."""
    from tests.tensorrt.conftest import cuda_reason

    out = tmp_path / "cancel.engine"
    result = cli("convert", models["cancel"], "-o", out, "--precision", "fp16", "--keep-fp32", "Mul",
                 "--keep-fp32", "sub")
    if cuda_reason() is None:
        assert result.code == 0, result.stderr
    else:
        assert result.code == 2, result.stderr
        assert "float16" not in result.stderr and "tensorrt" in result.stderr.lower(), result.stderr
        assert not out.exists()
