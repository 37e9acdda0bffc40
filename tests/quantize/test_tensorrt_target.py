"""`quantize --target tensorrt` and the TensorRT Q/DQ pre-flight (quantization/tensorrt_rules.py), on real models.

The models are what the CLI really writes for the tiny CNN, the ONNX MLP and the digits classifier, with both
targets; two small Q/DQ graphs are built by hand for what onnxruntime never writes (a per-channel activation
scale, a negative scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mdeploy.errors import InputError
from mdeploy.quantization.tensorrt_rules import HINT, check_qdq, require_trt_qdq
from tests.checks import assert_clean_error

QDQ = ("QuantizeLinear", "DequantizeLinear")


@pytest.fixture(scope="session")
def trt_models(cnn_onnx, graphs, digits, tmp_path_factory, cli) -> dict[str, tuple[Path, dict]]:
    """Each model quantized once with --target tensorrt (the CNN on random calibration: it has no data set)."""
    out = tmp_path_factory.mktemp("trt")
    runs = {
        "cnn": (cnn_onnx, ["--calib-samples", "32"]),
        "mlp": (graphs["mlp"], ["--calib-data", graphs["data"]]),
        "digits": (digits["model"], ["--calib-data", digits["calib"], "--eval-data", digits["eval"]]),
    }
    models = {}
    for name, (src, data) in runs.items():
        path = out / f"{name}.qdq.onnx"
        result = cli("quantize", src, "-o", path, *data, "--target", "tensorrt", "--json")
        assert result.code == 0, result.stderr
        models[name] = (path, result.json)
    return models


def _qdq_nodes(path: Path) -> tuple[list, dict[str, np.ndarray]]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in QDQ], inits


@pytest.mark.parametrize("name", ["cnn", "mlp", "digits"])
def test_tensorrt_target_is_symmetric_int8_per_channel_weights_and_validates(trt_models, name):
    path, report = trt_models[name]
    assert check_qdq(path) == []
    require_trt_qdq(path)  # no error
    assert report["passed"] is True
    assert [s["status"] for s in report["steps"]] == ["done", "passed"]
    assert report["steps"][0]["details"]["target"] == "tensorrt"
    nodes, inits = _qdq_nodes(path)
    weights = [n for n in nodes if n.input[0] in inits]
    activations = [n for n in nodes if n.input[0] not in inits]
    assert weights and activations
    for node in nodes:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        assert (inits[node.input[1]] > 0).all(), node.name
    for node in weights:  # int8 weights, one scale per output channel (no int32 bias: TensorRT refuses it)
        assert inits[node.input[0]].dtype == np.int8, node.name
        assert inits[node.input[1]].size > 1, node.name
    for node in activations:
        assert inits[node.input[1]].size == 1, node.name


def test_cpu_target_fails_the_preflight_naming_nodes(graphs, static_digits, tmp_path, cli):
    out = tmp_path / "mlp_cpu.onnx"
    result = cli("quantize", graphs["mlp"], "-o", out, "--calib-data", graphs["data"], "--target", "cpu", "--json")
    assert result.code == 0, result.stderr
    for path in (out, static_digits[0]):
        problems = check_qdq(path)
        assert problems
        nodes, _ = _qdq_nodes(path)
        names = {n.name for n in nodes}
        assert all(p.split(" ")[0] in names for p in problems)
        # x86: uint8 asymmetric activations; everywhere: onnxruntime's int32 bias DequantizeLinear
        assert any("int32 instead of int8" in p for p in problems)
    mlp_problems = check_qdq(out)
    assert any(p.startswith("x_QuantizeLinear (QuantizeLinear): uint8 instead of int8") for p in mlp_problems) or all(
        "uint8" not in p for p in mlp_problems
    )
    with pytest.raises(InputError) as caught:
        require_trt_qdq(out)
    assert "mlp_cpu.onnx breaks TensorRT's Q/DQ rules" in caught.value.message
    assert mlp_problems[0].split(" ")[0] in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.hint == HINT


def test_the_default_target_is_still_cpu(graphs, tmp_path, cli):
    out = tmp_path / "mlp_default.onnx"
    result = cli("quantize", graphs["mlp"], "-o", out, "--calib-data", graphs["data"], "--json")
    assert result.code == 0, result.stderr
    assert result.json["steps"][0]["details"]["target"] == "cpu"
    assert check_qdq(out)


def test_a_float_model_has_nothing_to_refuse(graphs):
    assert check_qdq(graphs["mlp"]) == []


def _hand_made(path: Path, act_scale: np.ndarray, axis: int | None) -> Path:
    """x[1,4] -> Q/DQ (act_scale) -> MatMul with a per-channel int8 weight -> y[1,3], all int8 zero points 0."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(act_scale.astype(np.float32), "x_scale"),
        numpy_helper.from_array(np.zeros(act_scale.shape, np.int8), "x_zero"),
        numpy_helper.from_array(rng.integers(-127, 128, (4, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.full(3, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "w_zero"),
    ]
    kw = {"axis": axis} if axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="act_q", **kw),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="act_dq", **kw),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="weight_dq", axis=1),
        helper.make_node("MatMul", ["xd", "w"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_made_qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_hand_made_model_that_follows_the_rules_passes(tmp_path):
    assert check_qdq(_hand_made(tmp_path / "ok.onnx", np.array(0.05), None)) == []


def test_a_per_channel_activation_scale_is_refused(tmp_path):
    path = _hand_made(tmp_path / "per_channel_act.onnx", np.array([0.1, 0.2, 0.3, 0.4]), axis=1)
    problems = check_qdq(path)
    assert [p.split(" ")[0] for p in problems] == ["act_q", "act_dq"]
    assert all("per-channel scale (4 values) on an activation" in p for p in problems)
    with pytest.raises(InputError, match="act_q"):
        require_trt_qdq(path)


def test_a_negative_scale_is_refused(tmp_path):
    problems = check_qdq(_hand_made(tmp_path / "negative.onnx", np.array(-0.05), None))
    assert [p.split(" ")[0] for p in problems] == ["act_q", "act_dq"]
    assert all("scale is not positive (min -0.05)" in p for p in problems)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mode", "dynamic"], "--target tensorrt needs static quantization with calibration data"),
        ([], "--target tensorrt needs static calibration data"),
        (["--activation-type", "uint8"], "--activation-type uint8 does not apply to --target tensorrt"),
    ],
)
def test_what_tensorrt_cannot_take_is_exit_2_and_no_file(graphs, tmp_path, cli, extra, message):
    out = tmp_path / "m.qdq.onnx"
    data = ["--calib-data", graphs["data"]] if extra != [] else []
    result = cli("quantize", graphs["mlp"], "-o", out, "--target", "tensorrt", *data, *extra)
    assert message in assert_clean_error(result, out=out)


def test_scales_in_external_data_are_read(tmp_path):
    """A large model keeps its tensors beside it: the check reads the scales from there (weights stay on disk)."""
    path = _hand_made(tmp_path / "negative.onnx", np.array(-0.05), None)
    external = tmp_path / "ext" / "negative.onnx"
    external.parent.mkdir()
    onnx.save_model(onnx.load(str(path)), str(external), save_as_external_data=True, location="negative.onnx.data",
                    size_threshold=0)
    assert not onnx.load(str(external), load_external_data=False).graph.initializer[0].raw_data
    assert check_qdq(external) == check_qdq(path) != []
