"""Top-1 agreement is judged only on outputs that are class scores (issue 7.2).

Decided from the user's flags, the output's name, and the graph that produces it; unit cases on graphs built with
onnx.helper, and end-to-end cases through the CLI on real exports: a transformer encoder's hidden state (not
scores), a CNN's Gemm head (scores), an encoder with both `logits` and `last_hidden_state`.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mdeploy.errors import InputError
from mdeploy.validation import scores
from tests.conftest import factory, run_cli


def _model(path, nodes, initializers, out_name="y", out_shape=(2, 5), in_shape=(2, 4)):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _kind(path, name="y", shape=(2, 5)):
    return scores.decide([name], {name: np.zeros(shape, np.float32)}, None, [(path, {name: name})])[name]


W, B = np.ones((4, 5)), np.zeros(5)


@pytest.mark.parametrize(
    "nodes, expected, source",
    [
        ([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "B"], ["y"])], True, "MatMul head"),
        ([helper.make_node("Gemm", ["x", "W", "B"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])], True, "Gemm head"),
        ([helper.make_node("Gemm", ["x", "W", "B"], ["g"]), helper.make_node("Softmax", ["g"], ["y"])], True, "Softmax"),
        ([helper.make_node("Gemm", ["x", "W", "B"], ["g"]), helper.make_node("Tanh", ["g"], ["y"])], False, "Tanh"),
        ([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("LayerNormalization", ["m", "S", "B"], ["y"], axis=-1)],
         False, "LayerNormalization"),
        ([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Relu", ["m"], ["r"]),
          helper.make_node("Add", ["m", "r"], ["y"])], False, "residual"),
        ([helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Transpose", ["m"], ["t"]),
          helper.make_node("MatMul", ["m", "t"], ["y"])], False, "two computed tensors"),
    ],
)
def test_the_graph_decides_what_produces_an_output(tmp_path, nodes, expected, source):
    shape = (2, 2) if source == "two computed tensors" else (2, 5)
    path = _model(tmp_path / "m.onnx", nodes, {"W": W, "B": B, "S": np.ones(5)}, out_shape=shape)
    kind = _kind(path, shape=shape)
    assert kind.scores is expected and source in kind.source, kind


def test_a_head_with_quantized_weights_is_still_a_head(tmp_path):
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s"], ["Wf"]),
        helper.make_node("MatMul", ["x", "Wf"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "s"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(np.ones((4, 5), np.int8), "Wq"), numpy_helper.from_array(np.float32(0.1), "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "q.onnx")
    assert _kind(tmp_path / "q.onnx").scores


def test_names_speak_before_the_graph_and_the_user_before_names(tmp_path):
    norm = [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("LayerNormalization", ["m", "S", "B"], ["logits"])]
    path = _model(tmp_path / "n.onnx", norm, {"W": W, "B": B, "S": np.ones(5)}, out_name="logits")
    assert _kind(path, "logits") == scores.OutputKind(True, "name 'logits'")
    arrays = {"last_hidden_state": np.zeros((2, 5), np.float32), "probs": np.zeros((2, 5), np.float32)}
    decided = scores.decide(list(arrays), arrays, None, [])
    assert not decided["last_hidden_state"].scores and decided["probs"].scores
    assert scores.decide(list(arrays), arrays, ("last_hidden_state",), [])["last_hidden_state"].scores
    assert not any(k.scores for k in scores.decide(list(arrays), arrays, (), []).values())
    with pytest.raises(InputError, match="--classifier-output names nosuch"):
        scores.decide(list(arrays), arrays, ("nosuch",), [])


def test_without_graph_or_name_only_a_batch_by_classes_output_counts():
    arrays = {"a": np.zeros((2, 10), np.float32), "b": np.zeros((2, 7, 10), np.float32), "c": np.zeros((2, 10), np.int64)}
    decided = scores.decide(list(arrays), arrays, None, [])
    assert [decided[k].scores for k in "abc"] == [True, False, False]


# --- end to end, through the CLI, on real exports -------------------------------------------------------------

@pytest.fixture(scope="module")
def hidden_encoder(tmp_path_factory):
    out = tmp_path_factory.mktemp("hidden") / "hidden.onnx"
    result = run_cli("convert", factory("hidden_encoder"), "-o", out, "--quiet")
    assert result.code == 0, result.stderr
    return out


def _outputs(report: dict) -> dict[str, dict]:
    return {o["name"]: o for c in report["comparisons"] for o in c["outputs"]}


def test_int8_gate_does_not_judge_top1_on_a_hidden_state(hidden_encoder, tmp_path):
    result = run_cli("quantize", hidden_encoder, "-o", tmp_path / "h.int8.onnx", "--json")
    assert result.code == 0, result.stderr
    out = _outputs(result.json)["output"]
    assert out["class_scores"] is False and out["top1_agreement"] is None
    assert out["class_scores_source"] == "graph: produced by LayerNormalization"
    notes = result.json["comparisons"][0]["notes"]
    assert any("top-1 agreement not judged" in n and "output" in n for n in notes)
    # the same model, with the user saying its output is scores: top-1 is computed and judged again
    forced = run_cli("validate", hidden_encoder, tmp_path / "h.int8.onnx", "--precision", "int8", "--json",
                     "--classifier-output", "output")
    assert forced.code in (0, 1), forced.stderr
    out = _outputs(forced.json)["output"]
    assert out["class_scores"] is True and out["top1_agreement"] is not None


def test_a_cnn_head_is_class_scores_from_its_graph(cnn_onnx, tmp_path):
    result = run_cli("validate", cnn_onnx, cnn_onnx, "--precision", "int8", "--json")
    assert result.code == 0, result.stderr
    (out,) = _outputs(result.json).values()
    assert out["class_scores"] is True and out["top1_agreement"] == 1.0
    assert out["class_scores_source"].startswith(("graph:", "name"))


def test_encoder_logits_are_judged_and_its_hidden_state_is_not(encoder_onnx, tmp_path):
    result = run_cli("quantize", encoder_onnx, "-o", tmp_path / "e.int8.onnx", "--json")
    assert result.code == 0, result.stderr
    outs = _outputs(result.json)
    assert outs["logits"]["class_scores"] and outs["logits"]["top1_agreement"] is not None
    assert not outs["last_hidden_state"]["class_scores"] and outs["last_hidden_state"]["top1_agreement"] is None
    none = run_cli("validate", encoder_onnx, tmp_path / "e.int8.onnx", "--precision", "int8", "--no-classifier", "--json")
    assert none.code == 0, none.stderr
    assert all(o["top1_agreement"] is None for o in _outputs(none.json).values())
    both = run_cli("validate", encoder_onnx, encoder_onnx, "--no-classifier", "--classifier-output", "logits")
    assert both.code == 2 and "not both" in both.stderr
    unknown = run_cli("validate", encoder_onnx, encoder_onnx, "--classifier-output", "nosuch")
    assert unknown.code == 2 and "nosuch" in unknown.stderr
