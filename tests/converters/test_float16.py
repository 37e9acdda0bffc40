"""converters/float16.py: `mdeploy convert model.onnx -o model.fp16.onnx --precision fp16`, float16 with the nodes that
leave float16's range kept float32 (the same function builds the TensorRT fp16 model: tests/tensorrt/test_fp16.py).

The model: x[b, 8] -> MatMul (proj, weights ~N(0, 30^2)) -> Mul by 1000 (scale_up) -> `big` -> Mul by 0.001
(scale_down) -> y. Every weight is within float16's range; `big` is not, on inputs of unit scale (it reaches ~2e5),
and is on inputs a hundred times smaller. (onnxruntime's CPU provider runs these float16 ops in float32, so the
overflow would not show here; it does on a GPU, which is why the node must stay float32.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mdeploy.converters import float16
from mdeploy.errors import InputError
from tests.checks import assert_clean_error

FLOAT, FLOAT16 = 1, 10


@pytest.fixture(scope="session")
def scaled(tmp_path_factory) -> dict[str, Path]:
    from onnx import TensorProto, helper, numpy_helper

    from fixtures import onnx_graphs

    out = tmp_path_factory.mktemp("fp16")
    weights = (np.random.default_rng(0).standard_normal((8, 8)) * 30).astype(np.float32)
    model = onnx_graphs.small_graph(
        out / "scaled.onnx",
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
         helper.make_node("Mul", ["h", "k"], ["big"], name="scale_up"),
         helper.make_node("Mul", ["big", "kd"], ["y"], name="scale_down")],
        [("x", TensorProto.FLOAT, ["batch", 8])], [("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.float32(1000), "k"),
         numpy_helper.from_array(np.float32(1e-3), "kd")],
    )
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    np.savez(out / "unit.npz", x=x)
    np.savez(out / "small.npz", x=x / 100)
    return {"model": model, "unit": out / "unit.npz", "small": out / "small.npz"}


def _types(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    return {**{v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]},
            **{i.name: i.data_type for i in g.initializer}}


def _node(path: Path, name: str):
    import onnx

    return next(n for n in onnx.load(str(path)).graph.node if n.name == name)


def test_nodes_whose_activation_leaves_float16_stay_float32_and_the_report_says_why(cli, scaled, tmp_path):
    out = tmp_path / "scaled.fp16.onnx"
    result = cli("convert", scaled["model"], "-o", out, "--precision", "fp16", "--calib-data", scaled["unit"], "--json")
    assert result.code == 0, result.stderr
    report = result.json
    assert report["passed"] and report["comparisons"][0]["tolerance"]["source"] == "fp16 default"
    kept = report["steps"][0]["details"]["kept_fp32"]
    assert [k["node"] for k in kept] == ["scale_up", "scale_down"]  # the writer and the reader of `big`
    assert all(k["reason"].startswith("activation big reaches ") and str(scaled["unit"]) in k["reason"] for k in kept)
    types = _types(out)
    assert types["x"] == types["y"] == FLOAT  # callers feed and read float32
    assert types["w"] == FLOAT16 and types["h"] == FLOAT16  # the MatMul is float16
    assert types[_node(out, "scale_down").input[0]] == FLOAT  # `big` (renamed by the converter) never is
    # twice into the same output: refused without --force, replaced with it, nothing else left in the folder
    assert_clean_error(cli("convert", scaled["model"], "-o", out, "--precision", "fp16"), "output exists")
    again = cli("convert", scaled["model"], "-o", out, "--precision", "fp16", "--calib-data", scaled["unit"], "--force")
    assert again.code == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scaled.fp16.onnx"]


def test_the_data_decides_inputs_in_range_keep_every_node_float16(scaled, tmp_path):
    from mdeploy.frameworks import onnx_models

    specs = onnx_models.graph_inputs(onnx_models.load_proto(scaled["model"]))
    feeds, on = float16.measuring_feeds(specs, str(scaled["small"]))
    made = float16.convert_to_float16(scaled["model"], tmp_path / "small.fp16.onnx", feeds, on)
    assert made.kept_fp32 == [] and _types(made.path)[_node(made.path, "scale_down").input[0]] == FLOAT16


def test_keep_fp32_by_operator_type_and_by_node_name(scaled, tmp_path):
    made = float16.convert_to_float16(scaled["model"], tmp_path / "a.onnx", None, "", keep_fp32=["MatMul", "scale_down"])
    assert made.kept_fp32 == [{"node": "proj", "op_type": "MatMul", "reason": "--keep-fp32 MatMul"},
                              {"node": "scale_down", "op_type": "Mul", "reason": "--keep-fp32 scale_down"}]
    types = _types(made.path)
    assert types["w"] == types["kd"] == FLOAT  # their weights stay float32 too
    assert types[_node(made.path, "proj").output[0]] == FLOAT and types["k"] == FLOAT16  # scale_up is float16
    with pytest.raises(InputError, match="--keep-fp32 Conv: the model has no node or operator type of that name"):
        float16.convert_to_float16(scaled["model"], tmp_path / "b.onnx", None, "", keep_fp32=["Conv"])


def test_an_unknown_keep_fp32_is_refused_cleanly(cli, scaled, tmp_path):
    out = tmp_path / "bad.onnx"
    result = cli("convert", scaled["model"], "-o", out, "--precision", "fp16", "--keep-fp32", "Conv")
    assert_clean_error(result, "--keep-fp32 Conv", hint=True, out=out, folder=tmp_path)


def test_an_initializer_beyond_float16_keeps_its_node_float32_even_without_data(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from fixtures import onnx_graphs

    model = onnx_graphs.small_graph(
        tmp_path / "k.onnx", [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                              helper.make_node("Mul", ["r", "k"], ["z"], name="scale")],
        [("x", TensorProto.FLOAT, [2, 4])], [("z", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.float32(1e5), "k")])
    made = float16.convert_to_float16(model, tmp_path / "k.fp16.onnx", None, "")
    assert made.kept_fp32 == [{"node": "scale", "op_type": "Mul",
                               "reason": "initializer k holds values up to 1e+05 (float16 max 65504)"}]
    import onnxruntime as ort

    x = np.ones((2, 4), np.float32)
    z = ort.InferenceSession(str(made.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # the graph output comes from the float32 node directly: no float16 round trip (which would make it infinite)
    assert z.dtype == np.float32 and np.allclose(z, 1e5, rtol=1e-3)
