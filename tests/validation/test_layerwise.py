"""Layer-by-layer comparison of two ONNX models: graph order, the first layer beyond tolerance, chunking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures import onnx_graphs
from mdeploy.core import ModelRef, tolerance_for
from mdeploy.quantization.onnx_quantize import OnnxQuantize, OnnxQuantizeOptions
from mdeploy.validation.layerwise import compare_layers


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("layerwise")
    paths = {
        "float": onnx_graphs.mlp(out / "float.onnx"),
        "broken": onnx_graphs.mlp(out / "broken.onnx", scale_layer=1),  # wrong from the second MatMul on
        "data": onnx_graphs.mlp_data(out / "data.npz"),
    }
    for fmt in ("qdq", "qoperator"):
        paths[fmt] = out / f"{fmt}.onnx"
        OnnxQuantize().run(
            ModelRef.parse(str(paths["float"])), paths[fmt], OnnxQuantizeOptions(calib_data=str(paths["data"]), quant_format=fmt)
        )
    return paths


def _feeds(models):
    with np.load(models["data"]) as data:
        return [{"x": data["x"][:32]}, {"x": data["x"][32:]}]


def test_quantized_layers_are_matched_in_graph_order(models):
    result = compare_layers(models["float"], models["qdq"], _feeds(models), tolerance_for("int8"))
    tensors = [layer.tensor for layer in result.layers]
    order = ["mm0", "add0", "relu0", "mm1", "add1", "relu1", "mm2", "logits"]
    # pre-processing fuses MatMul+Add into Gemm (so mm0/add0 are gone): the Relu outputs and logits remain
    assert tensors == [t for t in order if t in tensors] and tensors[-1] == "logits" and len(tensors) >= 3
    assert result and result.first_failure is None
    assert all(layer.cosine > 0.99 for layer in result.layers)


def test_qoperator_tensors_are_dequantized_to_compare(models):
    result = compare_layers(models["float"], models["qoperator"], _feeds(models), tolerance_for("int8"))
    assert any(layer.candidate_tensor.endswith("_quantized") for layer in result.layers)
    # QGemm absorbed each Relu: its output is compared with the float Relu output, not the pre-Relu Add
    assert [layer.tensor for layer in result.layers] == ["relu0", "relu1", "logits"]
    assert result


def test_first_layer_beyond_tolerance_is_named(models):
    result = compare_layers(models["float"], models["broken"], _feeds(models), tolerance_for("fp32"))
    assert not result
    assert result.first_failure.tensor == "mm1" and result.first_failure.node == "matmul1"
    assert all(layer.passed for layer in result.layers[: result.first_failure.index])


def test_chunks_of_one_layer_give_the_same_numbers(models):
    whole = compare_layers(models["float"], models["qdq"], _feeds(models), tolerance_for("int8"), chunk=100)
    chunked = compare_layers(models["float"], models["qdq"], _feeds(models), tolerance_for("int8"), chunk=1)
    assert [(a.tensor, round(a.cosine, 9)) for a in whole.layers] == [(b.tensor, round(b.cosine, 9)) for b in chunked.layers]


def test_validate_layerwise_cli_exits_1_and_names_the_layer(models, cli):
    result = cli("validate", "--layerwise", models["float"], models["broken"], "--data", models["data"], "--json")
    assert result.code == 1, result.stderr
    layerwise = result.json["layerwise"]
    assert layerwise["first_failure"]["tensor"] == "mm1" and layerwise["compared"] == 8
    ok = cli("validate", "--layerwise", models["float"], models["qdq"], "--data", models["data"], "--precision", "int8", "--json")
    assert ok.code == 0, ok.stderr
    assert ok.json["layerwise"]["passed"] is True


def test_validate_layerwise_refuses_models_that_share_nothing(models, tmp_path, cli):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["other"], name="id")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "other.onnx"))
    result = cli("validate", "--layerwise", models["float"], tmp_path / "other.onnx")
    assert result.code == 2 and "share no intermediate" in result.stderr
